"""The model configuration: one frozen dataclass read from a checkpoint's config.json.

Real checkpoints spell the same facts in two ways, and both are accepted:

    transformers 4.x (the Hub files of Llama-3.1, Qwen3, Qwen3-Embedding):
        "torch_dtype": "bfloat16", "rope_theta": 500000.0,
        "rope_scaling": {"rope_type" (or "type"): "llama3", "factor": 8.0, ...} or null
    transformers 5.x (what save_pretrained writes today):
        "dtype": "bfloat16", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, ...}

Missing keys take the defaults the transformers config class of that model type applies, including the two
derived ones: num_key_value_heads = num_attention_heads and head_dim = hidden_size // num_attention_heads
(Qwen3's class instead defaults head_dim to 128 and num_key_value_heads to 32; its Hub files always set both).
"""

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

SUPPORTED_MODEL_TYPES = ("llama", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "llama3")

# The defaults of transformers' LlamaConfig / Qwen3Config, for keys a config.json may leave out.
_DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, rms_norm_eps=1e-6,
                  rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False,
                  attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=None),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, head_dim=128, rms_norm_eps=1e-6,
                  rope_theta=10000.0, max_position_embeddings=32768, tie_word_embeddings=False,
                  attention_bias=False, mlp_bias=False, bos_token_id=None, eos_token_id=None, pad_token_id=None),
}

# The scaling keys that `llama3` RoPE needs (original_max_position_embeddings may fall back, see below).
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor")


@dataclass(frozen=True)
class ModelConfig:
    """Everything the hand-written Llama / Qwen3 needs to know about a checkpoint."""

    model_type: str = field(metadata={"help": "'llama' or 'qwen3'; picks q_norm/k_norm (qwen3) and defaults"})
    vocab_size: int = field(metadata={"help": "V, rows of embed_tokens and lm_head"})
    hidden_size: int = field(metadata={"help": "C, the residual stream width"})
    intermediate_size: int = field(metadata={"help": "width of the SwiGLU hidden layer"})
    num_hidden_layers: int = field(metadata={"help": "number of decoder blocks"})
    num_attention_heads: int = field(metadata={"help": "H, query heads"})
    num_key_value_heads: int = field(metadata={"help": "Hkv, key/value heads; H % Hkv == 0 (grouped-query attention)"})
    head_dim: int = field(metadata={"help": "D, per-head width; Qwen3 sets it explicitly (not C // H)"})
    rms_norm_eps: float = field(default=1e-6, metadata={"help": "eps inside every RMSNorm"})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base"})
    rope_scaling: dict | None = field(default=None, metadata={
        "help": "None for plain RoPE, else {'rope_type': 'llama3', 'factor', 'low_freq_factor', 'high_freq_factor', "
                "'original_max_position_embeddings'}"})
    max_position_embeddings: int = field(default=2048, metadata={"help": "context length the model was trained for"})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "lm_head.weight is embed_tokens.weight"})
    attention_bias: bool = field(default=False, metadata={"help": "bias on q/k/v/o projections"})
    mlp_bias: bool = field(default=False, metadata={"help": "bias on gate/up/down projections"})
    qk_norm: bool = field(default=False, metadata={"help": "per-head RMSNorm on q and k before RoPE (Qwen3)"})
    torch_dtype: str | None = field(default=None, metadata={"help": "dtype named by config.json, e.g. 'bfloat16'"})
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        """Every value a forward pass depends on is checked here; from_hf_config adds the file's name."""
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {self.model_type!r}: expected one of {SUPPORTED_MODEL_TYPES}")
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"config {name} must be a positive integer, found {value!r}")
        for name in ("rms_norm_eps", "rope_theta"):  # eps keeps RMSNorm off 1/0; theta is the base of a power
            value = getattr(self, name)
            if not (_is_real(value) and value > 0):
                raise ValueError(f"config {name} must be a positive finite number, found {value!r}")
        for name in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config {name} must be true or false, found {getattr(self, name)!r}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, list) and name == "eos_token_id" else [value]
            if value is not None and not all(_is_int(i) and i >= 0 for i in ids):
                raise ValueError(f"config {name} must be a token id (an integer >= 0), a list of them for "
                                 f"eos_token_id, or null; found {value!r}")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads}): each key/value head serves a whole group of query heads")
        if self.head_dim % 2 != 0:
            raise ValueError(f"head_dim must be even for rotary embeddings (halves are rotated), found {self.head_dim}")
        if self.rope_scaling is not None:
            _check_rope_scaling(self.rope_scaling)

    @property
    def n_rep(self):
        """Query heads per key/value head: query head h reads key/value head h // n_rep."""
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_hf_config(cls, config: dict, source: str = "config") -> "ModelConfig":
        """Build from a config.json dict (either transformers spelling); `source` names it in error messages."""
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a JSON object of model settings, found a {type(config).__name__}")
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"{source}: unsupported model_type {model_type!r}; "
                             f"expected one of {SUPPORTED_MODEL_TYPES}")
        hidden_act = config.get("hidden_act", "silu")
        if hidden_act != "silu":
            raise ValueError(f"{source}: unsupported hidden_act {hidden_act!r}; expected 'silu' (SwiGLU)")
        if model_type == "qwen3" and config.get("use_sliding_window"):
            raise ValueError(f"{source}: use_sliding_window=true is not supported (only full causal attention)")

        values = dict(_DEFAULTS[model_type])
        values.update({f.name: config[f.name] for f in fields(cls) if f.name in config and f.name not in (
            "rope_scaling", "qk_norm", "torch_dtype", "rope_theta")})
        values["model_type"] = model_type
        if values["num_key_value_heads"] is None:
            values["num_key_value_heads"] = values["num_attention_heads"]
        if values["head_dim"] is None:
            for name in ("hidden_size", "num_attention_heads"):  # head_dim is derived from them just below
                if not _is_int(values[name]) or values[name] <= 0:
                    raise ValueError(f"{source}: config {name} must be a positive integer, found {values[name]!r}")
            if values["hidden_size"] % values["num_attention_heads"] != 0:
                raise ValueError(f"{source}: hidden_size ({values['hidden_size']}) is not divisible by "
                                 f"num_attention_heads ({values['num_attention_heads']}) and no head_dim is given")
            values["head_dim"] = values["hidden_size"] // values["num_attention_heads"]
        values["rope_theta"], values["rope_scaling"] = _read_rope(config, values, source)
        values["qk_norm"] = model_type == "qwen3"
        dtype = config.get("torch_dtype", config.get("dtype"))
        values["torch_dtype"] = str(dtype).removeprefix("torch.") if dtype is not None else None
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_pretrained(cls, path) -> "ModelConfig":
        """Read `path/config.json` (or `path` itself when it is the json file), see read_config_json."""
        config, file = read_config_json(path)
        return cls.from_hf_config(config, source=str(file))


def _read_rope(config, values, source):
    """Return (rope_theta, rope_scaling or None) from either spelling, with the type under 'rope_type'."""
    for key in ("rope_parameters", "rope_scaling"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise ValueError(f"{source}: config {key} must be an object (or null), found {config[key]!r}")
    params = config.get("rope_parameters")
    if params is not None:  # 5.x: one dict holding theta and the scaling keys
        theta = params.get("rope_theta", config.get("rope_theta", values["rope_theta"]))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:  # 4.x: top-level rope_theta and an optional rope_scaling dict
        theta = config.get("rope_theta", values["rope_theta"])
        scaling = dict(config["rope_scaling"]) if config.get("rope_scaling") else None
    if not _is_real(theta):
        raise ValueError(f"{source}: config rope_theta must be a positive finite number, found {theta!r}")
    if scaling is not None:
        # "type" is the older synonym of "rope_type"
        rope_type = scaling.pop("rope_type", None) or scaling.pop("type", None) or "default"
        scaling.pop("type", None)
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"{source}: unsupported rope type {rope_type!r}; expected one of {SUPPORTED_ROPE_TYPES}")
        if rope_type == "default":
            scaling = None
        else:
            # transformers >= 5 falls back to max_position_embeddings when the original length is not stated
            scaling.setdefault("original_max_position_embeddings", values["max_position_embeddings"])
            scaling = {"rope_type": rope_type, **scaling}
    return float(theta), scaling


_POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "max_position_embeddings")


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_rope_scaling(scaling):
    """The llama3 keys: positive numbers, high_freq_factor above low_freq_factor (the ramp divides by the gap)."""
    if not isinstance(scaling, dict):
        raise ValueError(f"config rope_scaling must be an object or null, found {scaling!r}")
    rope_type = scaling.get("rope_type")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope type {rope_type!r} in rope_scaling: expected one of {SUPPORTED_ROPE_TYPES}")
    missing = [k for k in _LLAMA3_KEYS + ("original_max_position_embeddings",) if k not in scaling]
    if rope_type == "llama3" and missing:
        raise ValueError(f"rope_scaling of type 'llama3' lacks {missing}; found {scaling}")
    for key in _LLAMA3_KEYS:
        if key in scaling and not (_is_real(scaling[key]) and scaling[key] > 0):
            raise ValueError(f"config rope_scaling.{key} must be a positive finite number, found {scaling[key]!r}")
    original = scaling.get("original_max_position_embeddings")
    if original is not None and not (_is_int(original) and original > 0):
        raise ValueError(f"config rope_scaling.original_max_position_embeddings must be a positive integer, "
                         f"found {original!r}")
    if rope_type == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ValueError(f"config rope_scaling.high_freq_factor ({scaling['high_freq_factor']}) must be greater "
                         f"than low_freq_factor ({scaling['low_freq_factor']})")


def read_config_json(path):
    """(settings, file): the JSON object in `path/config.json` (or `path` itself), for every checkpoint, BERT's
    too. Errors name the file, and the line for bytes that are not UTF-8 (read_utf8) or JSON that does not parse."""
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no config.json found: expected the file {file}")
    config = read_json(file)
    if not isinstance(config, dict):
        raise ValueError(f"{file}: expected a JSON object of model settings, found a {type(config).__name__}")
    return config, file


def read_json(file):
    """The JSON value in `file`, which must be UTF-8 (read_utf8); a syntax error names the file, line and column."""
    try:
        return json.loads(read_utf8(file))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None


def read_utf8(file) -> str:
    """The text of `file`, which must be UTF-8; ValueError "<file>:<line>: ..." naming the first byte that is not."""
    data = Path(file).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise ValueError(f"{file}:{line}: expected UTF-8 text, found byte 0x{data[e.start]:02x} at column {column} "
                         f"(a file saved in another encoding, e.g. Latin-1 or Windows-1252?)") from None
