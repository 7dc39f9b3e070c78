"""Rollouts: batched sampling from a causal LM with a preallocated KV cache."""

from minigrpo.generation.generate import GenerationOutput, generate, repeat_prompts
from minigrpo.generation.sampling import sample_next_token, top_k_filter, top_p_filter
from minigrpo.models.kv_cache import KVCache

__all__ = ["GenerationOutput", "KVCache", "generate", "repeat_prompts", "sample_next_token", "top_k_filter",
           "top_p_filter"]
