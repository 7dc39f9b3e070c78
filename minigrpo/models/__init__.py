"""Hand-written Llama / Qwen3 / BERT models, checkpoint loading, the frozen encoder and the tokenizer."""

from .bert import BertConfig, BertModel
from .checkpoint import read_tensor_infos
from .config import ModelConfig
from .encoder import Encoder
from .gguf_convert import convert_gguf
from .kv_cache import KVCache
from .loading import load_bert, load_body, load_causal_lm, load_encoder
from .saving import save_model
from .sentence_folder import extract_model_zip
from .tokenizer import Tokenizer, load_tokenizer
from .transformer import CausalLM, Transformer

__all__ = ["BertConfig", "BertModel", "extract_model_zip", "load_bert",
           "CausalLM", "Encoder", "KVCache", "ModelConfig", "Transformer", "load_body", "load_causal_lm",
           "load_encoder", "load_tokenizer", "read_tensor_infos", "save_model", "Tokenizer", "convert_gguf"]
