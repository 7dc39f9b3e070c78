"""A BERT encoder (transformers' BertModel), as sentence encoders such as all-MiniLM-L6-v2 use it.

    x_0 = LayerNorm(word_embeddings[ids] + position_embeddings[0..T-1] + token_type_embeddings[types])
    for each layer (POST-norm: the LayerNorm comes after each residual sum, unlike Llama / Qwen3):
        h       = LayerNorm(x + Wo · Attention(x))                     attention.self, attention.output
        x_next  = LayerNorm(h + W2 · gelu(W1 · h + b1) + b2)           intermediate.dense, output.dense
    Attention: bidirectional softmax(q k^T / sqrt(D)) v per head, keys masked where attention_mask is 0
    gelu(x) = x/2 · (1 + erf(x / sqrt(2)))                              exact; config.json's hidden_act "gelu"
    LayerNorm(x) = weight · (x - mean) / sqrt(var + eps) + bias         population var, eps = layer_norm_eps

No final norm: the last layer's output is the hidden state (B, T, C) that the pooling of a sentence encoder reads.

Positions are LEARNED and ABSOLUTE, numbered 0..T-1 in every row (as transformers does when no position_ids are
given), so a row must start at column 0: pad on the right. token_type_ids default to zeros (a single text).

Attribute names equal the checkpoint keys (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, `encoder.layer.0.attention.output.LayerNorm.weight`, ...), so
loading is a one-to-one copy (see loading.load_bert for the spellings it accepts). The pooler
(`pooler.dense`, tanh of the [CLS] state, trained for next-sentence prediction) is not built: sentence embeddings
never read it.
"""

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from .config import read_config_json

# transformers' BertConfig defaults, for keys a config.json may leave out
_DEFAULTS = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12)


@dataclass(frozen=True)
class BertConfig:
    """What the BERT encoder needs to know about a checkpoint (its config.json)."""

    vocab_size: int = field(metadata={"help": "V, rows of word_embeddings"})
    hidden_size: int = field(metadata={"help": "C, the residual stream width"})
    num_hidden_layers: int = field(metadata={"help": "number of encoder layers"})
    num_attention_heads: int = field(metadata={"help": "H, attention heads; D = C // H"})
    intermediate_size: int = field(metadata={"help": "width of the GELU feed-forward layer"})
    max_position_embeddings: int = field(metadata={"help": "rows of position_embeddings: the longest input"})
    type_vocab_size: int = field(default=2, metadata={"help": "rows of token_type_embeddings (segments A/B)"})
    layer_norm_eps: float = field(default=1e-12, metadata={"help": "eps inside every LayerNorm"})
    torch_dtype: str | None = field(default=None, metadata={"help": "dtype named by config.json, e.g. 'float32'"})
    model_type: str = "bert"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"config {name} must be a positive integer, found {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                             f"({self.num_attention_heads})")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf_config(cls, config: dict, source: str = "config") -> "BertConfig":
        """Build from a config.json dict; reject what this encoder cannot honour, naming the key."""
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a JSON object of model settings, found a {type(config).__name__}")
        if config.get("model_type") != "bert":
            raise ValueError(f"{source}: model_type must be 'bert', found {config.get('model_type')!r}")
        unsupported = {
            "hidden_act": (config.get("hidden_act", "gelu"), "gelu", "the exact erf GELU"),
            "position_embedding_type": (config.get("position_embedding_type", "absolute"), "absolute",
                                        "learned absolute positions"),
            "is_decoder": (config.get("is_decoder", False), False, "a bidirectional encoder"),
        }
        for key, (found, expected, meaning) in unsupported.items():
            if found != expected:
                raise ValueError(f"{source}: unsupported {key} {found!r}; expected {expected!r} ({meaning})")
        values = dict(_DEFAULTS)
        values.update({f.name: config[f.name] for f in fields(cls) if f.name in config and f.name != "torch_dtype"})
        dtype = config.get("torch_dtype", config.get("dtype"))
        values["torch_dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else None
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_pretrained(cls, path) -> "BertConfig":
        """Read `path/config.json` (or `path` itself when it is the json file), see config.read_config_json."""
        config, file = read_config_json(path)
        return cls.from_hf_config(config, source=str(file))


def gelu(x):
    """x/2 · (1 + erf(x / sqrt(2))): the exact GELU that BERT's "gelu" names (not the tanh approximation)."""
    return F.gelu(x, approximate="none")


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, position_ids):  # (B, T) each -> (B, T, C)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.LayerNorm(x + self.token_type_embeddings(token_type_ids))


class BertSelfAttention(nn.Module):
    """softmax(q k^T / sqrt(D) + mask) v for each of the H heads; returns the heads concatenated (before Wo)."""

    def __init__(self, config):
        super().__init__()
        C, self.num_heads, self.head_dim = config.hidden_size, config.num_attention_heads, config.head_dim
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)

    def forward(self, x, mask):
        """x (B, T, C), mask (B, 1, 1, T) bool with True = key may be attended, or None -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D) each
                   for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        return out.transpose(1, 2).reshape(B, T, C)  # (B, T, H*D)


class DenseAddNorm(nn.Module):
    """LayerNorm(residual + dense(x)): transformers' BertSelfOutput and BertOutput, the two post-norm steps."""

    def __init__(self, in_features, config):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x, residual):  # (B, T, in_features), (B, T, C) -> (B, T, C)
        return self.LayerNorm(residual + self.dense(x))


class BertAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)  # named "self" as in the checkpoint: attention.self.query.weight
        self.output = DenseAddNorm(config.hidden_size, config)

    def forward(self, x, mask):  # (B, T, C) -> (B, T, C)
        return self.output(self.self(x, mask), residual=x)


class BertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, h):  # (B, T, C) -> (B, T, intermediate_size)
        return gelu(self.dense(h))


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = DenseAddNorm(config.intermediate_size, config)

    def forward(self, x, mask):  # (B, T, C) -> (B, T, C)
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), residual=h)


class BertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertModel(nn.Module):
    """Embeddings and encoder layers (transformers' BertModel without its pooler)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        """input_ids (B, T) -> hidden states (B, T, C) of the last layer.

        attention_mask (B, T): 1 = real token, 0 = pad (no query attends to a pad key); None = all real.
        token_type_ids (B, T): None = zeros. position_ids (B, T): None = 0..T-1 in every row (right padding).
        A row whose mask is all zeros has no key to attend to and gives NaN.
        """
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"input of {T} tokens is longer than max_position_embeddings "
                             f"({self.config.max_position_embeddings}): BERT has no position beyond it")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        mask = None if attention_mask is None else attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
        return self.encoder(self.embeddings(input_ids, token_type_ids, position_ids), mask)
