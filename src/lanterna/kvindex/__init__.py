"""kvindex."""
