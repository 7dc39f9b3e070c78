"""Tiny random checkpoints in exactly the on-disk format of the real ones, for tests and CPU examples.

`make_tiny_checkpoint(out_dir, arch)` writes, like the Hub folders of the models it imitates:

    config.json                       transformers 4.x spelling (torch_dtype, rope_theta, rope_scaling)
    model.safetensors                 metadata {"format": "pt"}; or model-0000i-of-0000n.safetensors shards plus
                                      model.safetensors.index.json when shards > 1
    tokenizer.json, tokenizer_config.json  (bpe.write_tiny_tokenizer, in the matching style)

    arch "llama":            Llama-3.1 style: GQA, `llama3` RoPE scaling (theta 500000), untied lm_head
    arch "qwen3":            Qwen3 style: explicit head_dim != hidden/heads, q_norm/k_norm, tied (no lm_head stored)
    arch "qwen3-embedding":  a Qwen3 body saved bare (Qwen3-Embedding): keys without "model.", no lm_head

Weights follow transformers' init: every Linear and Embedding weight ~ Normal(0, 0.02), norm weights 1, biases 0,
drawn from a generator seeded with `seed`, in state-dict order (so a seed always gives the same checkpoint).
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .bpe import write_tiny_tokenizer
from ..models.checkpoint import INDEX_FILE, SINGLE_FILE, resolve_dtype
from ..models.config import ModelConfig
from ..models.transformer import CausalLM, Transformer

ARCHS = ("llama", "qwen3", "qwen3-embedding")
INIT_STD = 0.02


def tiny_config(arch, vocab_size, dtype="float32", **overrides):
    """config.json contents (dict) of a tiny model, spelled as the real 4.x-written Hub files."""
    if arch == "llama":
        config = {
            "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 0, "eos_token_id": 1, "hidden_act": "silu", "hidden_size": 64,
            "initializer_range": INIT_STD, "intermediate_size": 128, "max_position_embeddings": 1024,
            "mlp_bias": False, "model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
            # original_max_position_embeddings kept small so that all three llama3 bands occur at head_dim 16
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 256, "rope_type": "llama3"},
            "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": dtype,
            "transformers_version": "4.43.0", "use_cache": True, "vocab_size": vocab_size,
        }
    elif arch in ("qwen3", "qwen3-embedding"):
        config = {
            "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": 0, "eos_token_id": 1, "head_dim": 32, "hidden_act": "silu", "hidden_size": 64,
            "initializer_range": INIT_STD, "intermediate_size": 128, "max_position_embeddings": 1024,
            "max_window_layers": 2, "model_type": "qwen3", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
            "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": dtype,
            "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
            "vocab_size": vocab_size,
        }
    else:
        raise ValueError(f"unknown tiny arch {arch!r}: expected one of {ARCHS}")
    config.update(overrides)
    return config


def init_weights_(module, generator):
    """transformers-style init in place: weights of Linear/Embedding ~ N(0, 0.02), norms 1, biases 0."""
    with torch.no_grad():
        for name, p in module.named_parameters():  # tied weights are listed once
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, INIT_STD, generator=generator)


def make_tiny_checkpoint(out_dir, arch="llama", seed=0, dtype="float32", shards=1, **config_overrides):
    """Write a random checkpoint folder (format in the module docstring); return its Path.

    config_overrides replace config.json keys, e.g. num_hidden_layers=3, tie_word_embeddings=False.
    The vocabulary is the tokenizer's unless vocab_size is overridden (it must then cover the tokenizer).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}: expected one of {ARCHS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out, style=arch)
    if arch == "llama":
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    else:  # Qwen3 configs name <|endoftext|> as bos; eos is <|im_end|>, or <|endoftext|> for the embedding model
        endoftext = tokenizer.token_to_id("<|endoftext|>")
        eos = endoftext if arch == "qwen3-embedding" else tokenizer.token_to_id("<|im_end|>")
        special = {"bos_token_id": endoftext, "eos_token_id": eos}
    vocab_size = config_overrides.pop("vocab_size", tokenizer.vocab_size)
    config_dict = tiny_config(arch, vocab_size, str(resolve_dtype(dtype)).removeprefix("torch."),
                              **{**special, **config_overrides})
    config = ModelConfig.from_hf_config(config_dict, source="make_tiny_checkpoint")
    if config.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"vocab_size {config.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")

    model = Transformer(config) if arch == "qwen3-embedding" else CausalLM(config)
    init_weights_(model, torch.Generator().manual_seed(seed))
    state = {k: v.to(resolve_dtype(dtype)).contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # written once, as transformers does
    (out / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n")
    _write_safetensors(out, state, shards)
    return out


def _write_safetensors(out, state, shards):
    """One model.safetensors, or `shards` files named like transformers' plus the index."""
    for old in list(out.glob("model*.safetensors")) + [out / INDEX_FILE]:
        old.unlink(missing_ok=True)  # a previous run's files would confuse the loader
    if shards <= 1:
        save_file(state, str(out / SINGLE_FILE), metadata={"format": "pt"})
        return
    names = list(state)
    per_shard = -(-len(names) // shards)  # ceil
    weight_map = {}
    for i in range(shards):
        file_name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: state[name] for name in names[i * per_shard:(i + 1) * per_shard]}
        save_file(part, str(out / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file_name))
    total_size = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
