"""Lanterna: a control plane for distributed LLM inference on vLLM."""

__version__ = "0.1.0"
