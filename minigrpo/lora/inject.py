"""Put LoRA adapters into any nn.Module, switch them off, merge them into the base weights.

inject_lora wraps every nn.Linear whose module name ends with a target (the last dotted component, as PEFT
matches a plain list of target names), freezes every other parameter and records the settings on the model as
`model.lora_config`, which save_adapter writes out. The module paths do not change: `...self_attn.q_proj` is
now a LoRALinear whose `base_layer` is the original linear, so state-dict keys gain `.base_layer.` and
`.lora_A.weight` / `.lora_B.weight` exactly where PEFT puts them (minus PEFT's adapter name `.default`).

disable_adapters is a context manager: inside it the same network computes the base model exactly (it
raises on a merged model rather than unmerging, because an unmerged bf16 weight is not the original weight bit for
bit and the GRPO reference must be the base model exactly).

merge_lora / unmerge_lora are explicit and idempotent; train() and eval() never merge. merge.py builds the
bit-exact temporary merge and merge_and_unload on them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from minigrpo.lora.layer import LoRALinear, lora_scaling

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoRAConfig:
    """The settings an adapter was made with; stored as `model.lora_config` and written to adapter_config.json."""

    r: int = 32  # rank of A (r, in) and B (out, r)
    alpha: float = 64  # scaling numerator: s = alpha / r (or alpha / sqrt(r) with use_rslora)
    dropout: float = 0.0  # dropout on the adapter branch's input, training only
    targets: tuple[str, ...] = DEFAULT_TARGETS  # last name components of the linears to wrap
    use_rslora: bool = False  # rank-stabilized scaling alpha / sqrt(r)

    @property
    def scaling(self) -> float:
        return lora_scaling(self.r, self.alpha, self.use_rslora)


@dataclass(frozen=True)
class LoRASummary:
    """What inject_lora did: the wrapped module names and the parameter counts after freezing."""

    config: LoRAConfig
    wrapped: tuple[str, ...]  # full module names, e.g. "model.layers.0.self_attn.q_proj"
    trainable_params: int  # sum of r * (in + out) over wrapped layers
    total_params: int  # every parameter of the model, adapters included (shared tensors counted once)

    def __str__(self) -> str:
        c = self.config
        pct = 100.0 * self.trainable_params / max(self.total_params, 1)
        return (
            f"LoRA r={c.r} alpha={c.alpha:g} scaling={c.scaling:g}{' (rsLoRA)' if c.use_rslora else ''} "
            f"dropout={c.dropout:g} targets={','.join(c.targets)}: {len(self.wrapped)} layers wrapped; "
            f"trainable {self.trainable_params:,} of {self.total_params:,} parameters ({pct:.4f}%)"
        )


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """Every LoRALinear in the model with its module name, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable adapter tensors (A then B for each wrapped layer), e.g. for the optimizer."""
    return [p for _, m in lora_layers(model) for p in (m.lora_A.weight, m.lora_B.weight)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<module name>.lora_A.weight": A (r, in), "<module name>.lora_B.weight": B (out, r)} for every wrapped layer."""
    out = {}
    for name, m in lora_layers(model):
        out[f"{name}.lora_A.weight"] = m.lora_A.weight
        out[f"{name}.lora_B.weight"] = m.lora_B.weight
    return out


def summarize(model: nn.Module) -> LoRASummary:
    """The LoRASummary of a model that already holds adapters."""
    config = getattr(model, "lora_config", None)
    if config is None:
        raise ValueError("the model has no LoRA adapters (no model.lora_config): call inject_lora(model, ...) first")
    return LoRASummary(
        config=config,
        wrapped=tuple(name for name, _ in lora_layers(model)),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in model.parameters()),
    )


def inject_lora(
    model: nn.Module,
    r: int = 32,
    alpha: float = 64,
    dropout: float = 0.0,
    targets: tuple[str, ...] | list[str] | str = DEFAULT_TARGETS,
    use_rslora: bool = False,
) -> LoRASummary:
    """Wrap each nn.Linear named `*.<target>` in a LoRALinear and freeze every other parameter.

    Matching is on the last component of the module name: target "q_proj" matches
    "model.layers.3.self_attn.q_proj" but not "model.layers.3.self_attn.q_proj_extra".
    Errors: a target that matches no module, a target that names a module that is not an nn.Linear, or a model
    that already holds adapters.
    """
    if isinstance(targets, str):
        targets = (targets,)  # a bare string would otherwise be iterated character by character
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t and "." not in t for t in targets):
        raise ValueError(f"targets must be non-empty module names without dots (e.g. 'q_proj'), found {targets!r}")
    if getattr(model, "lora_config", None) is not None or lora_layers(model):
        raise RuntimeError("inject_lora: the model already holds LoRA adapters; inject once per model")

    matches: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets:
            continue
        if not isinstance(module, nn.Linear):
            raise TypeError(f"inject_lora: target {leaf!r} matched {name!r}, a {type(module).__name__}; "
                            "only nn.Linear can be wrapped")
        matches.append((name, module))
    found = {name.rsplit(".", 1)[-1] for name, _ in matches}
    missing = [t for t in targets if t not in found]
    if missing:
        linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"inject_lora: target(s) {missing} match no module of {type(model).__name__}; "
                         f"its nn.Linear names are {linear_names}")

    for p in model.parameters():
        p.requires_grad_(False)
    for name, linear in matches:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(linear, r=r, alpha=alpha, dropout=dropout, use_rslora=use_rslora))
    # A plain attribute, not a buffer: it is settings, not state, and must not enter the state dict.
    model.lora_config = LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=targets, use_rslora=use_rslora)
    return summarize(model)


def remove_lora(model: nn.Module) -> None:
    """Undo inject_lora: unmerge, put each original nn.Linear back, forget model.lora_config.

    Parameter freezing is not undone (which parameters were trainable before is the caller's knowledge).
    """
    for name, m in lora_layers(model):
        m.unmerge()
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, m.base_layer)
    if hasattr(model, "lora_config"):
        del model.lora_config


def _require_layers(model: nn.Module, what: str) -> list[tuple[str, LoRALinear]]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{what}: the model has no LoRA adapters; call inject_lora(model, ...) first")
    return layers


@contextmanager
def disable_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every LoRALinear computes its base linear: the model is the base model, exactly.

    The previous flags are restored on exit, also when the block raises, so the context nests.
    A merged model is an error (unmerge_lora first): its weights no longer hold the base model.
    """
    layers = _require_layers(model, "disable_adapters")
    merged = [name for name, m in layers if m.merged]
    if merged:
        raise RuntimeError(f"disable_adapters: {len(merged)} LoRA layer(s) are merged (first: {merged[0]!r}); "
                           "call unmerge_lora(model) first")
    previous = [m.disabled for _, m in layers]
    try:
        for _, m in layers:
            m.disabled = True
        yield model
    finally:
        for (_, m), was in zip(layers, previous):
            m.disabled = was


def merge_lora(model: nn.Module) -> None:
    """W <- W + s * (B @ A) in every wrapped layer (fp32 sum, one cast). Idempotent; bf16 is not bit-reversible."""
    for _, m in _require_layers(model, "merge_lora"):
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """W <- W - s * (B @ A) in every merged layer. Idempotent; restores W only up to rounding."""
    for _, m in _require_layers(model, "unmerge_lora"):
        m.unmerge()
