"""LoRA adapters: the LoRALinear wrapper, injection / disabling, merging, and PEFT-format save and load."""

from minigrpo.lora.inject import (
    LoRAConfig,
    LoRASummary,
    disable_adapters,
    inject_lora,
    lora_layers,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    remove_lora,
    summarize,
    unmerge_lora,
)
from minigrpo.lora.layer import LoRALinear, lora_scaling
from minigrpo.lora.merge import effective_weight, merge_and_unload, merged
from minigrpo.lora.peft_format import load_adapter, read_adapter_config, save_adapter

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "LoRASummary",
    "disable_adapters",
    "effective_weight",
    "inject_lora",
    "load_adapter",
    "lora_layers",
    "lora_parameters",
    "lora_scaling",
    "lora_state_dict",
    "merge_and_unload",
    "merge_lora",
    "merged",
    "read_adapter_config",
    "remove_lora",
    "save_adapter",
    "summarize",
    "unmerge_lora",
]
