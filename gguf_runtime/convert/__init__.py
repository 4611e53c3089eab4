"""gguf-convert: Hugging Face checkpoints (safetensors + tokenizer) to GGUF, as
llama.cpp's convert_hf_to_gguf.py writes them, without torch or transformers."""
from .converter import convert

__all__ = ["convert"]
