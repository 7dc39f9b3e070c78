"""A preallocated key/value cache for incremental decoding.

Layout: one tensor for keys and one for values, each

    (L, B, Hkv, S_max, D)   L layers, B rows, Hkv key/value heads, S_max slots, D head dim

allocated once before decoding. `seen` counts the positions already written (the same for every row and
layer: prompts are left-padded to a common length, so row b's slot s always holds its s-th token or a pad).
A forward over T new tokens writes slots [seen, seen + T) of every layer and then advances `seen` by T,
so decoding never concatenates tensors.
"""

import torch


class KVCache:
    def __init__(self, num_layers, batch_size, num_kv_heads, max_length, head_dim, *, dtype, device):
        shape = (num_layers, batch_size, num_kv_heads, max_length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_length = max_length
        self.seen = 0  # positions already written, in every layer

    @classmethod
    def for_model(cls, config, batch_size, max_length, *, dtype, device):
        return cls(config.num_hidden_layers, batch_size, config.num_key_value_heads, max_length,
                   config.head_dim, dtype=dtype, device=device)

    def update(self, layer_idx, k, v):
        """Write the new keys/values (B, Hkv, T, D) of one layer; return all of them so far (B, Hkv, seen + T, D)."""
        end = self.seen + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions needed, {self.max_length} allocated")
        self.keys[layer_idx, :, :, self.seen:end] = k
        self.values[layer_idx, :, :, self.seen:end] = v
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def advance(self, num_tokens):
        """Called once per forward, after every layer has written its `num_tokens` new positions."""
        self.seen += num_tokens
