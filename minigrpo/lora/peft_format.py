"""Save and load LoRA adapters in PEFT's on-disk format, so PEFT and this package read each other's files.

A PEFT adapter folder holds two files:
- adapter_config.json: {"peft_type": "LORA", "r", "lora_alpha", "target_modules", "lora_dropout", "use_rslora",
  "task_type", "base_model_name_or_path", ...};
- adapter_model.safetensors (metadata {"format": "pt"}) with one (r, in) and one (out, r) tensor per wrapped
  linear, keyed "base_model.model." + module name + ".lora_A.weight" / ".lora_B.weight", e.g.
  "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" for a causal LM (task_type CAUSAL_LM) and
  "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" for a bare transformer body (FEATURE_EXTRACTION).

PEFT only warns when keys do not fit, leaving B = 0 so the adapter silently does nothing. load_adapter instead
raises on any mismatch (missing key, unexpected key, wrong shape, unsupported config field), naming the key and
the expected and found values.
"""

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from minigrpo.lora.inject import LoRAConfig, LoRASummary, inject_lora, lora_layers, remove_lora, summarize

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel) .model (the wrapped network)


def _task_type(model: nn.Module) -> str:
    # PEFT's key prefix is the same for both; the task type only tells PEFT which PeftModel class to build.
    return "CAUSAL_LM" if hasattr(model, "lm_head") else "FEATURE_EXTRACTION"


def adapter_config_dict(config: LoRAConfig, task_type: str, base_model_name_or_path: str | None) -> dict:
    """adapter_config.json for a plain LoRA adapter; every feature this package lacks is written as off."""
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": list(config.targets),
        "use_rslora": config.use_rslora,
        "bias": "none",
        "lora_bias": False,
        "fan_in_fan_out": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "exclude_modules": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same folder, then os.replace: the file appears whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_adapter(model: nn.Module, out_dir: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write adapter_config.json and adapter_model.safetensors in PEFT's format; returns the folder.

    The weights are written first and the config last, each atomically, so a folder whose config is new also has
    the new weights. Works on merged and unmerged models alike (A and B are kept either way).
    """
    summary = summarize(model)  # raises when the model has no adapters
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in lora_layers(model):
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight.detach().to("cpu").contiguous()  # (r, in)
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight.detach().to("cpu").contiguous()  # (out, r)
    _atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    config = adapter_config_dict(summary.config, _task_type(model), base_model_name_or_path)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    _atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return out


# Fields whose non-default values change what the adapter computes; this package implements none of them.
_UNSUPPORTED = {
    "use_dora": (False, None),
    "bias": ("none", None),
    "lora_bias": (False, None),
    "fan_in_fan_out": (False, None),
    "modules_to_save": (None, []),
    "layers_to_transform": (None, []),
    "exclude_modules": (None, []),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "layer_replication": (None, []),
    "target_parameters": (None, []),
    "trainable_token_indices": (None,),
}


def read_adapter_config(adapter_dir: str | os.PathLike) -> LoRAConfig:
    """Parse adapter_config.json into a LoRAConfig, rejecting every setting this package cannot reproduce."""
    path = Path(adapter_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {adapter_dir}")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{path}: key 'peft_type' expected 'LORA', found {cfg.get('peft_type')!r}")
    for key, allowed in _UNSUPPORTED.items():
        if key in cfg and cfg[key] not in allowed:
            raise ValueError(f"{path}: key {key!r} expected one of {list(allowed)}, found {cfg[key]!r} "
                             "(not supported by minigrpo.lora)")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in cfg:
            raise ValueError(f"{path}: required key {key!r} is missing")
    targets = cfg["target_modules"]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        # PEFT reads a single string as a regular expression over full module names.
        raise ValueError(f"{path}: key 'target_modules' expected a list of module names, found {targets!r}")
    return LoRAConfig(
        r=cfg["r"],
        alpha=cfg["lora_alpha"],
        dropout=cfg.get("lora_dropout", 0.0),
        targets=tuple(targets),
        use_rslora=bool(cfg.get("use_rslora", False)),
    )


def _check_same_config(model_cfg: LoRAConfig, file_cfg: LoRAConfig, path: Path) -> None:
    # Dropout is not compared: it changes training, not the function the weights compute.
    pairs = [("r", model_cfg.r, file_cfg.r), ("lora_alpha", model_cfg.alpha, file_cfg.alpha),
             ("use_rslora", model_cfg.use_rslora, file_cfg.use_rslora),
             ("target_modules", sorted(model_cfg.targets), sorted(file_cfg.targets))]
    for key, expected, found in pairs:
        if expected != found:
            raise ValueError(f"{path / CONFIG_NAME}: key {key!r} expected {expected!r} (the model's adapters), "
                             f"found {found!r}")


def load_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> LoRASummary:
    """Load a PEFT LoRA adapter folder into the model; inject adapters from its config if the model has none.

    Every tensor must fit exactly: the file and the model must hold the same set of keys with the same shapes.
    The model's adapters must not be merged (the merged weight would keep the old adapter).
    """
    adapter_dir = Path(adapter_dir)
    file_cfg = read_adapter_config(adapter_dir)
    if getattr(model, "lora_config", None) is not None:
        _check_same_config(model.lora_config, file_cfg, adapter_dir)
        return _copy_weights(model, adapter_dir)
    # A failed load must not leave half-made adapters behind: undo the injection and the freezing.
    trainable = [p.requires_grad for p in model.parameters()]
    inject_lora(model, r=file_cfg.r, alpha=file_cfg.alpha, dropout=file_cfg.dropout, targets=file_cfg.targets,
                use_rslora=file_cfg.use_rslora)
    try:
        return _copy_weights(model, adapter_dir)
    except BaseException:
        remove_lora(model)
        for p, flag in zip(model.parameters(), trainable):
            p.requires_grad_(flag)
        raise


def _copy_weights(model: nn.Module, adapter_dir: Path) -> LoRASummary:
    """Copy adapter_model.safetensors into the model's adapters after checking every key and shape."""
    layers = lora_layers(model)
    merged = [name for name, m in layers if m.merged]
    if merged:
        raise RuntimeError(f"load_adapter: LoRA layer {merged[0]!r} is merged; call unmerge_lora(model) first")
    params = {}
    for name, m in layers:
        params[f"{KEY_PREFIX}{name}.lora_A.weight"] = m.lora_A.weight
        params[f"{KEY_PREFIX}{name}.lora_B.weight"] = m.lora_B.weight

    weights = adapter_dir / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {adapter_dir}")
    with safe_open(str(weights), framework="pt") as f:
        keys = set(f.keys())
        missing = sorted(set(params) - keys)
        unexpected = sorted(keys - set(params))
        if missing or unexpected:
            hint = f" (keys must start with {KEY_PREFIX!r} followed by the module name)"
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing, first {missing[0]!r}")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected, first {unexpected[0]!r}")
            raise ValueError(f"{weights}: keys do not fit the model: {'; '.join(parts)}{hint}")
        tensors = {key: f.get_tensor(key) for key in params}
    for key, p in params.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{weights}: key {key!r} expected shape {tuple(p.shape)} (r={model.lora_config.r}), "
                             f"found {tuple(t.shape)}")
    with torch.no_grad():
        for key, p in params.items():
            p.copy_(tensors[key])
    return summarize(model)
