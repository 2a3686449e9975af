"""Local test models: the default tokenizer, a tiny random-weight Llama and PEFT LoRA adapters."""

from lanterna.models.detokenizer import IncrementalDetokenizer
from lanterna.models.tokenizer import DEFAULT_DIR, Tokenizer, load_tokenizer

__all__ = ["DEFAULT_DIR", "IncrementalDetokenizer", "Tokenizer", "load_tokenizer"]
