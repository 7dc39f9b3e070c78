"""Batched sampling from a causal LM with a preallocated KV cache, and the prompt encoding it reads."""

from minigrpo.generation.generate import GenerationOutput, generate, repeat_prompts
from minigrpo.generation.prompts import encode_prompts, pad_id, position_ids
from minigrpo.generation.sampling import row_uniforms, sample_next_token, stream_seed, top_k_filter, top_p_filter
from minigrpo.models.kv_cache import KVCache

__all__ = ["GenerationOutput", "KVCache", "encode_prompts", "generate", "pad_id", "position_ids", "repeat_prompts",
           "row_uniforms", "sample_next_token", "stream_seed", "top_k_filter", "top_p_filter"]
