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
from .config import ModelConfig, read_config_json
from .encoder import Encoder
from .tokenizer import load_tokenizer
from .transformer import CausalLM, Transformer

PREFIX = "model."
HEAD = "lm_head.weight"


def load_causal_lm(path, dtype=None, device="cpu"):
    """CausalLM (Llama or Qwen3, by config.json's model_type) with the checkpoint's weights, in eval mode.

    `path` may also be a .gguf file: see gguf_convert.py (same build and checks, weights dequantized to float32).
    """
    if Path(path).suffix == ".gguf":
        from .gguf_convert import load_gguf_causal_lm
        return load_gguf_causal_lm(path, dtype=dtype, device=device)
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


def load_bert(path, dtype=None, device="cpu"):
    """BertModel (see bert.py) from a BERT checkpoint folder (config.json + safetensors), in eval mode.

    Stored names are mapped to the module's keys: a `bert.` prefix (BertFor... checkpoints) is stripped and their
    task heads `cls.*` are skipped; old LayerNorm names `gamma` / `beta` become `weight` / `bias`; the stored
    buffers `embeddings.position_ids` (0..P-1) and `embeddings.token_type_ids` (zeros) are skipped. The pooler
    `pooler.dense.*` is checked for shape and then skipped: sentence embeddings never use it.
    """
    from .bert import BertConfig, BertModel  # keep causal-LM loading free of the encoder-only modules

    config = BertConfig.from_pretrained(path)
    with torch.device("meta"):
        model = BertModel(config)
    infos = _bert_module_keys(read_tensor_infos(path))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    C = config.hidden_size
    pooler = {k: shape for k, shape in {"pooler.dense.weight": (C, C), "pooler.dense.bias": (C,)}.items()
              if k in infos}
    _check(path, {**expected, **pooler}, infos)
    _assign(model, {k: info for k, info in infos.items() if k not in pooler},
            dtype=resolve_dtype(dtype, config.torch_dtype), device=device)
    return model.eval()


def load_encoder(path, pooling=None, dtype=None, device="cpu"):
    """Frozen Encoder (see encoder.py) over a Qwen3 body or a BERT, with the tokenizer of the same folder.

    path: a checkpoint folder, or a sentence-transformers folder (modules.json; see sentence_folder.py), whose
    Transformer module names the folder of the weights and tokenizer. A .zip is refused: extract it once with
    extract_model_zip(zip_path, folder) and pass the folder.
    pooling=None: the folder's Pooling module when it has one; else "last" for Qwen3 (the Qwen3-Embedding recipe)
    and "mean" for BERT (what sentence-transformers builds for a plain BERT folder). A string overrides both.
    Inputs are truncated to the smallest of config.json's max_position_embeddings and the folder's max_seq_length.
    """
    from .sentence_folder import lowercase_inputs, read_sentence_folder

    path = Path(path)
    if path.suffix == ".zip":
        raise ValueError(f"{path} is a zip archive: extract it once with "
                         f"minigrpo.models.extract_model_zip({str(path)!r}, folder) and load the folder")
    folder = read_sentence_folder(path)  # None for a plain checkpoint folder
    model_path = folder.model_path if folder else path
    if _model_type(model_path) == "bert":
        model, default_pooling = load_bert(model_path, dtype=dtype, device=device), "mean"
    else:
        model, default_pooling = load_body(model_path, dtype=dtype, device=device), "last"
    tokenizer = load_tokenizer(model_path)
    max_length = model.config.max_position_embeddings
    if folder is not None:
        if folder.do_lower_case:
            lowercase_inputs(tokenizer)
        if folder.max_seq_length is not None:
            max_length = min(max_length, folder.max_seq_length)
        if pooling is None:
            pooling = folder.pooling
    return Encoder(model, tokenizer, pooling=pooling or default_pooling, max_length=max_length)


def _model_type(path):
    """config.json's model_type ("bert", "qwen3", ...), read before choosing which config class parses it."""
    return read_config_json(Path(path) / "config.json")[0].get("model_type")


def _bert_module_keys(infos):
    """{stored name: TensorInfo} -> {BertModel key: TensorInfo}, with the spellings listed in load_bert."""
    keys = {}
    for name, info in infos.items():
        key = name.removeprefix("bert.")
        if key.startswith("cls.") or key in ("embeddings.position_ids", "embeddings.token_type_ids"):
            continue
        if key.endswith(".gamma") or key.endswith(".beta"):
            key = key.rsplit(".", 1)[0] + (".weight" if key.endswith(".gamma") else ".bias")
        if key in keys:
            raise ValueError(f"tensor {name!r} in {info.file.name} and {keys[key].name!r} in {keys[key].file.name} "
                             f"both give the parameter {key!r}")
        keys[key] = info
    return keys


def _drop_rope_buffers(infos):
    # some old Llama checkpoints stored the RoPE frequencies; they are recomputed from config.json instead
    return {name: info for name, info in infos.items() if not name.endswith("rotary_emb.inv_freq")}


def _check(path, expected, infos, source="its config.json"):
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
        raise ValueError(f"checkpoint {Path(path)} does not match {source}:\n  " + "\n  ".join(problems))


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
