"""Hand-written Llama / Qwen3 models, checkpoint loading, the frozen encoder and the tokenizer."""

from .checkpoint import read_tensor_infos
from .config import ModelConfig
from .encoder import Encoder
from .kv_cache import KVCache
from .loading import load_body, load_causal_lm, load_encoder
from .saving import save_model
from .tokenizer import Tokenizer, load_tokenizer
from .transformer import CausalLM, Transformer

__all__ = ["CausalLM", "Encoder", "KVCache", "ModelConfig", "Transformer", "load_body", "load_causal_lm",
           "load_encoder", "load_tokenizer", "read_tensor_infos", "save_model", "Tokenizer"]
