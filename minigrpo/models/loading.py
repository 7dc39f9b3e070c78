"""Build a model from a checkpoint folder (config.json + safetensors), without ever holding two copies of it.

    1. read config.json -> ModelConfig;
    2. build the module on the meta device (shapes only, no memory);
    3. read the safetensors headers and check them against the module: every expected key present, none extra,
       every shape equal; otherwise one error listing each problem with file, key, expected and found;
    4. read each tensor, cast it to the target dtype and device, and assign it into the module as its Parameter;
    5. recompute the non-persistent RoPE frequencies in float32 on the target device; re-tie lm_head.

dtype=None uses the dtype named by config.json (`torch_dtype` or `dtype`, bfloat16 for real Llama / Qwen3
checkpoints), and float32 when config.json names none.

Key spellings: causal-LM checkpoints store `model.layers.0...` and `lm_head.weight`; embedding checkpoints saved
from the bare body (Qwen3-Embedding) store `layers.0...` with no prefix and no lm_head. The prefix is detected.
A tied checkpoint that also stores lm_head.weight (Qwen3-0.6B does) keeps embed_tokens as the head, as it was
trained, and warns if the two stored tensors differ.
"""

import warnings
from pathlib import Path

import torch

from .checkpoint import load_tensors, read_tensor_infos, resolve_dtype
from .config import ModelConfig
from .encoder import Encoder
from .tokenizer import load_tokenizer
from .transformer import CausalLM, Transformer

PREFIX = "model."
HEAD = "lm_head.weight"
EMBED = PREFIX + "embed_tokens.weight"


def load_causal_lm(path, dtype=None, device="cpu"):
    """CausalLM (Llama or Qwen3, by config.json's model_type) with the checkpoint's weights, in eval mode."""
    config = ModelConfig.from_pretrained(path)
    with torch.device("meta"):
        lm = CausalLM(config)
    infos = _drop_rope_buffers(read_tensor_infos(path))
    # name the tensors as the module does: body keys under "model.", lm_head at the top
    if not any(name.startswith(PREFIX) for name in infos):
        infos = {(name if name == HEAD else PREFIX + name): info for name, info in infos.items()}
    stored_head = infos.pop(HEAD, None) if config.tie_word_embeddings else None
    expected = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop(HEAD)
    _check(path, expected, infos)
    _assign(lm, infos, dtype=resolve_dtype(dtype, config.torch_dtype), device=device)
    lm.tie_weights()
    if stored_head is not None:
        _warn_if_head_differs(stored_head, lm.model.embed_tokens.weight)
    lm.model.rotary_emb.reset_inv_freq(device)
    return lm.eval()


def load_body(path, dtype=None, device="cpu"):
    """The Transformer body alone (no lm_head) from a causal-LM or a bare-body (embedding) checkpoint."""
    config = ModelConfig.from_pretrained(path)
    with torch.device("meta"):
        body = Transformer(config)
    infos = {name.removeprefix(PREFIX): info for name, info in _drop_rope_buffers(read_tensor_infos(path)).items()
             if name != HEAD}
    _check(path, {k: tuple(v.shape) for k, v in body.state_dict().items()}, infos)
    _assign(body, infos, dtype=resolve_dtype(dtype, config.torch_dtype), device=device)
    body.rotary_emb.reset_inv_freq(device)
    return body.eval()


def load_encoder(path, pooling="last", dtype=None, device="cpu"):
    """Frozen Encoder (see encoder.py) over the body of `path`, with the tokenizer from the same folder."""
    body = load_body(path, dtype=dtype, device=device)
    return Encoder(body, load_tokenizer(path), pooling=pooling)


def _drop_rope_buffers(infos):
    # some old Llama checkpoints stored the RoPE frequencies; they are recomputed from config.json instead
    return {name: info for name, info in infos.items() if not name.endswith("rotary_emb.inv_freq")}


def _check(path, expected, infos):
    """Raise one error listing every missing, unexpected or mis-shaped tensor (module key: expected shape)."""
    problems = []
    for key, shape in expected.items():
        if key not in infos:
            problems.append(f"missing tensor {key!r}: expected shape {list(shape)}, found nothing in the checkpoint")
        elif infos[key].shape != shape:
            info = infos[key]
            problems.append(f"wrong shape for {info.name!r} in {info.file.name}: expected {list(shape)}, "
                            f"found {list(info.shape)}")
    for key, info in infos.items():
        if key not in expected:
            problems.append(f"unexpected tensor {info.name!r} in {info.file.name} (shape {list(info.shape)}): "
                            f"the model has no such parameter")
    if problems:
        raise ValueError(f"checkpoint {Path(path)} does not match its config.json:\n  " + "\n  ".join(problems))


def _assign(module, infos, *, dtype, device):
    """Load every listed tensor into `module` in place of its meta Parameters (no second copy is made)."""
    tensors = load_tensors(infos.values(), dtype=dtype, device=device)  # {stored name: tensor}
    state = {key: tensors[info.name] for key, info in infos.items()}
    module.load_state_dict(state, strict=False, assign=True)


def _warn_if_head_differs(info, embed_weight):
    head = load_tensors([info], dtype=embed_weight.dtype, device=embed_weight.device)[info.name]
    if head.shape != embed_weight.shape or not torch.equal(head, embed_weight):
        warnings.warn(f"{info.file}: tie_word_embeddings is true but the stored {info.name!r} differs from "
                      f"embed_tokens.weight; using embed_tokens.weight as the output head (as the model is tied)",
                      stacklevel=3)
