"""Where one decode step of `generate` spends its time, by part of the model (torch.profiler, CPU).

A prompt batch is prefilled outside the profiler; then `steps` decode steps run under it, each exactly as
`generate` runs one (sample a token from the last logits, feed it with its position through the KV cache, take the
LM head of the new position). Every top-level aten op is charged to a part (its CPU time, with everything it calls):

    weight matmuls   every projection of every block (q, k, v, o, gate, up, down)
    lm_head          the output projection to the vocabulary
    attention        scaled dot-product attention over the cache
    KV cache         writing the new keys/values into the preallocated cache
    norms            the RMSNorms
    RoPE             the cos/sin tables and the rotation of q and k
    SwiGLU           silu(gate) * up
    sampling         temperature, filters and the draw
    other            embedding, residual adds, reshapes, bookkeeping

by its shapes (a matmul whose output width is the vocabulary is the LM head) and otherwise by the innermost
minigrpo function on its Python stack. `outside ops` is the rest of the profiled step's wall time: Python,
dispatch and the profiler's own overhead (the Python tracer inflates it), or time spent waiting for a core.
"""

import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from minigrpo.generation.prompts import position_ids
from minigrpo.generation.sampling import sample_next_token
from minigrpo.models import KVCache

MATMULS = {"aten::linear", "aten::matmul", "aten::mm", "aten::addmm"}
# (file, function or None for any) of the innermost minigrpo frame -> part; the first match wins
FRAMES = [("norm.py", None, "norms"), ("rope.py", None, "RoPE"), ("kv_cache.py", None, "KV cache"),
          ("attention.py", "grouped_attention", "attention"), ("mlp.py", None, "SwiGLU"),
          ("sampling.py", None, "sampling")]
PARTS = ["weight matmuls", "lm_head", "attention", "KV cache", "norms", "RoPE", "SwiGLU", "sampling", "other"]


def decode_steps(model, ids, mask, steps):
    """A function running `steps` decode steps after a prefill of (ids, mask), as `generate` does (no pads)."""
    batch, prompt_len = ids.shape
    weight = model.model.embed_tokens.weight

    def prepare():
        cache = KVCache.for_model(model.config, batch, prompt_len + steps, dtype=weight.dtype, device=weight.device)
        hidden = model.hidden_states(ids, position_ids=position_ids(mask), kv_cache=cache)  # (B, P, C)
        return cache, model.lm_head(hidden[:, -1])  # logits (B, V)

    def run(cache, logits):
        position = torch.full((batch, 1), prompt_len, dtype=torch.long)
        for t in range(steps):
            token = sample_next_token(logits, temperature=1.0)  # (B,)
            hidden = model.hidden_states(token[:, None], position_ids=position + t, kv_cache=cache)  # (B, 1, C)
            logits = model.lm_head(hidden[:, -1])  # (B, V)

    return prepare, run


def part_of(op, vocab):
    """The part (see the module docstring) a top-level aten op belongs to."""
    if op.name in MATMULS:
        weight_shape = op.input_shapes[1] if len(op.input_shapes) > 1 else []
        return "lm_head" if vocab in weight_shape else "weight matmuls"
    frame = op.cpu_parent
    while frame is not None and "minigrpo/" not in frame.name:
        frame = frame.cpu_parent
    if frame is not None:
        for file, function, part in FRAMES:
            if f"/{file}(" in frame.name and (function is None or frame.name.endswith(": " + function)):
                return part
    return "other"


def top_level_ops(events):
    """The aten ops not called by another aten op (their CPU total includes their callees)."""
    for e in events:
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if e.name.startswith("aten::") and parent is None:
            yield e


def print_decode_profile(model, ids, mask, steps=16):
    """Print, for one batch, the wall time of a decode step and the share of each part in it (under the profiler)."""
    prepare, run = decode_steps(model, ids, mask, steps)
    with torch.inference_mode():
        run(*prepare())  # warm-up
        state = prepare()
        start = time.perf_counter()
        run(*state)
        wall = (time.perf_counter() - start) / steps
        state = prepare()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=True) as prof:
            start = time.perf_counter()
            run(*state)
            profiled = (time.perf_counter() - start) / steps
    per_part = defaultdict(float)  # milliseconds per step
    for op in top_level_ops(prof.events()):
        per_part[part_of(op, model.config.vocab_size)] += op.cpu_time_total / 1e3 / steps
    rows = [(part, per_part[part]) for part in PARTS]
    rows.append(("outside ops", max(profiled * 1e3 - sum(per_part.values()), 0.0)))
    print(f"decode step at batch {ids.shape[0]}, {ids.shape[1]}-token prompt, mean of {steps} steps: "
          f"{wall * 1e3:.1f} ms ({ids.shape[0] / wall:.0f} tokens/s); under the profiler {profiled * 1e3:.1f} ms:")
    for part, ms in rows:
        print(f"  {part:<15} {ms:8.2f} ms  {100 * ms / (profiled * 1e3):5.1f}%")
