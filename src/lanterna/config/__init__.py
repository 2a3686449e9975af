"""Configuration: one pydantic tree (model.py), YAML < env < CLI loading (loader.py), llm-d schema (epp.py)."""

from lanterna.config.loader import load_config
from lanterna.config.model import LanternaConfig

__all__ = ["LanternaConfig", "load_config"]
