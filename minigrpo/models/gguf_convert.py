"""GGUF -> Hugging Face: the config.json dict, the state dict, and a whole checkpoint folder (convert_gguf).

A GGUF holds what a Hugging Face folder holds, under llama.cpp's names (ARCH is `general.architecture`):

    config.json key            GGUF metadata key
    num_hidden_layers          ARCH.block_count
    hidden_size                ARCH.embedding_length
    intermediate_size          ARCH.feed_forward_length
    num_attention_heads        ARCH.attention.head_count
    num_key_value_heads        ARCH.attention.head_count_kv        (default: head_count)
    head_dim                   ARCH.attention.key_length, else ARCH.rope.dimension_count, else hidden / heads
    rms_norm_eps               ARCH.attention.layer_norm_rms_epsilon  (a float32 in the file, read as such)
    rope_theta                 ARCH.rope.freq_base                 (default 10000)
    max_position_embeddings    ARCH.context_length
    vocab_size                 ARCH.vocab_size, else the length of tokenizer.ggml.tokens
    tie_word_embeddings        true when the file has no `output.weight` (llama.cpp writes the head only when it
                               is not the embedding matrix)
    bos / eos / pad_token_id   tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id

    HF tensor                                  GGUF tensor
    model.embed_tokens.weight                  token_embd.weight
    model.layers.{i}.input_layernorm           blk.{i}.attn_norm
    model.layers.{i}.self_attn.{q,k,v,o}_proj  blk.{i}.attn_{q,k,v,output}     (.weight and .bias)
    model.layers.{i}.self_attn.{q,k}_norm      blk.{i}.attn_{q,k}_norm         (Qwen3)
    model.layers.{i}.post_attention_layernorm  blk.{i}.ffn_norm
    model.layers.{i}.mlp.{gate,up,down}_proj   blk.{i}.ffn_{gate,up,down}
    model.norm.weight, lm_head.weight          output_norm.weight, output.weight

Un-permuting q and k (llama only). llama.cpp's Llama RoPE rotates neighbouring pairs (x[2i], x[2i+1]) of a head;
Hugging Face's rotates x[i] with x[i + D/2]. So llama.cpp's converter reorders the rows of each head of W_q (H
heads) and W_k (Hkv heads), and of their biases:

    gguf row  h*D + 2*i + t  =  hf row  h*D + t*D/2 + i        (t in {0, 1}, i < D/2)

and un_permute reads the rows as (H, D/2, 2) and swaps the last two axes back to (H, 2, D/2). Qwen3 files are not
permuted: llama.cpp rotates Qwen3 in the split-halves ("NeoX") layout, as Hugging Face does.

Loading a .gguf builds the same config / module / strict shape check as loading.py and fills it from the
dequantized (float32) tensors in memory; nothing is written. Not supported, each with an error naming it: other
architectures, RoPE scaling (ARCH.rope.scaling.type, or llama3's `rope_freqs.weight` factors), and tensors
without a Hugging Face counterpart.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import TensorInfo, resolve_dtype
from .config import ModelConfig
from .gguf_dequant import DEQUANTIZE, type_name
from .gguf_reader import GGUFFile, read_gguf
from .gguf_tokenizer import tokenizer_config, tokenizer_json
from .loading import HEAD, _check
from .transformer import CausalLM

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
PERMUTED_QK = ("llama",)  # architectures whose q/k rows llama.cpp reorders

GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_config(gguf: GGUFFile) -> dict:
    """The config.json dict of the model described by the GGUF's metadata (see the table above)."""
    arch = gguf.architecture
    if arch not in ARCHITECTURES:
        raise ValueError(f"{gguf.path}: unsupported architecture {arch!r} (general.architecture); "
                         f"expected one of {sorted(ARCHITECTURES)}")
    meta = gguf.metadata
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{gguf.path}: RoPE scaling {scaling!r} ({arch}.rope.scaling.type) is not supported")
    if "rope_freqs.weight" in gguf.tensors:
        raise ValueError(f"{gguf.path}: the tensor 'rope_freqs.weight' (llama3 RoPE frequency factors) is not "
                         "supported: only unscaled RoPE can be read from a GGUF")

    hidden, heads = gguf.require(f"{arch}.embedding_length"), gguf.require(f"{arch}.attention.head_count")
    head_dim = meta.get(f"{arch}.attention.key_length", meta.get(f"{arch}.rope.dimension_count", hidden // heads))
    rotated = meta.get(f"{arch}.rope.dimension_count", head_dim)
    if rotated != head_dim:
        raise ValueError(f"{gguf.path}: {arch}.rope.dimension_count is {rotated} but heads are {head_dim} wide; "
                         "partial rotary embeddings are not supported")
    vocab_size = meta.get(f"{arch}.vocab_size")
    if vocab_size is None:
        vocab_size = len(gguf.require("tokenizer.ggml.tokens"))
    return {
        "architectures": [ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": gguf.require(f"{arch}.feed_forward_length"),
        "num_hidden_layers": gguf.require(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": gguf.require(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": meta.get(f"{arch}.rope.freq_base", 10000.0),
        "rope_scaling": None,
        "max_position_embeddings": gguf.require(f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in gguf.tensors,
        "attention_bias": "blk.0.attn_q.bias" in gguf.tensors,
        "mlp_bias": "blk.0.ffn_gate.bias" in gguf.tensors,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",  # every tensor is dequantized to float32
    }


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face key of a GGUF tensor name, or None when it has none."""
    stem, _, suffix = gguf_name.rpartition(".")
    if suffix not in ("weight", "bias"):
        return None
    if stem in GLOBAL_NAMES:
        return f"{GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_NAMES:
        return f"model.layers.{parts[1]}.{LAYER_NAMES[parts[2]]}.{suffix}"
    return None


def un_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order: rows (H, D/2, 2) -> (H, 2, D/2), i.e. pairs back to split halves.

    w: (H*D, C) weight or (H*D,) bias, in the GGUF's row order; returns the same shape in Hugging Face's.
    """
    rows = w.shape[0]
    if rows % (2 * n_heads) != 0:
        raise ValueError(f"cannot un-permute {rows} rows into {n_heads} heads of an even width")
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_tensor(gguf: GGUFFile, gguf_name: str, config: ModelConfig) -> torch.Tensor:
    """One tensor, dequantized to float32 and in Hugging Face's layout."""
    w = torch.from_numpy(gguf.load(gguf_name))
    if config.model_type in PERMUTED_QK:
        module = gguf_name.split(".")[-2]
        if module == "attn_q":
            w = un_permute(w, config.num_attention_heads)
        elif module == "attn_k":
            w = un_permute(w, config.num_key_value_heads)
    return w


def checked_names(gguf: GGUFFile, config: ModelConfig, lm: CausalLM) -> dict:
    """{HF key: GGUF name} for every tensor of the file, after checking it against the module `lm` built from
    `config`: one error lists every unmapped tensor, one every unsupported type, and one every missing,
    unexpected or mis-shaped tensor."""
    unknown = [name for name in gguf.tensors if hf_name(name) is None]
    if unknown:
        raise ValueError(f"{gguf.path}: tensors without a Hugging Face counterpart in a {config.model_type} "
                         f"model: {unknown}")
    unreadable = [f"{t.name!r} ({t.type_name})" for t in gguf.tensors.values() if t.ggml_type not in DEQUANTIZE]
    if unreadable:  # before any tensor is read
        raise ValueError(f"{gguf.path}: unsupported tensor types: {', '.join(unreadable)}; supported: "
                         f"{', '.join(type_name(t) for t in DEQUANTIZE)}")
    infos = {hf_name(t.name): TensorInfo(t.name, gguf.path, t.shape, t.type_name) for t in gguf.tensors.values()}
    expected = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop(HEAD)
    _check(gguf.path, expected, infos, source="its GGUF metadata")
    return {key: info.name for key, info in infos.items()}


def _model_and_names(gguf: GGUFFile):
    """(config.json dict, ModelConfig, CausalLM on the meta device, {HF key: GGUF name}), all checked."""
    config_dict = hf_config(gguf)
    config = ModelConfig.from_hf_config(config_dict, source=str(gguf.path))
    with torch.device("meta"):
        lm = CausalLM(config)
    return config_dict, config, lm, checked_names(gguf, config, lm)


def load_gguf_causal_lm(path, dtype=None, device="cpu") -> CausalLM:
    """CausalLM from a .gguf file, in eval mode; dtype=None keeps the dequantized float32."""
    gguf = read_gguf(path)
    _, config, lm, names = _model_and_names(gguf)
    dtype = resolve_dtype(dtype, config.torch_dtype)
    # one tensor at a time: each float32 copy is cast and placed before the next is dequantized
    state = {key: hf_tensor(gguf, name, config).to(dtype=dtype, device=device) for key, name in names.items()}
    lm.load_state_dict(state, strict=False, assign=True)
    lm.tie_weights()
    lm.model.rotary_emb.reset_inv_freq(device)
    return lm.eval()


def convert_gguf(gguf_path, out_dir) -> Path:
    """Write the Hugging Face folder of a .gguf: config.json, generation_config.json, model.safetensors (float32),
    tokenizer.json and tokenizer_config.json (with the chat template). Returns the folder.

    `out_dir` is created if needed; files of those names already in it are replaced.
    """
    gguf = read_gguf(gguf_path)
    config_dict, config, _, names = _model_and_names(gguf)
    tokenizer = tokenizer_json(gguf)  # fails early on a tokenizer it cannot rebuild, before any weight is read
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {key: hf_tensor(gguf, name, config).contiguous() for key, name in names.items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    generation = {k: config_dict[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                  if config_dict[k] is not None}
    for name, content in (("config.json", config_dict), ("generation_config.json", generation),
                          ("tokenizer_config.json", tokenizer_config(gguf))):
        (out / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "tokenizer.json").write_text(tokenizer, encoding="utf-8")
    return out
