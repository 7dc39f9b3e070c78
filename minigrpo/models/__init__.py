"""Hand-written Llama / Qwen3 models, checkpoint loading, the frozen encoder and the tokenizer."""

from .checkpoint import read_tensor_infos
from .config import ModelConfig
from .encoder import Encoder
from .gguf_convert import convert_gguf
from .kv_cache import KVCache
from .loading import load_body, load_causal_lm, load_encoder
from .tiny import make_tiny_checkpoint
from .bpe import train_bpe_tokenizer, write_tiny_tokenizer
from .saving import save_model
from .tokenizer import Tokenizer, load_tokenizer
from .transformer import CausalLM, Transformer

__all__ = ["CausalLM", "Encoder", "KVCache", "ModelConfig", "Transformer", "load_body", "load_causal_lm",
           "load_encoder", "load_tokenizer", "make_tiny_checkpoint", "read_tensor_infos", "save_model", "Tokenizer",
           "train_bpe_tokenizer", "write_tiny_tokenizer", "convert_gguf"]
