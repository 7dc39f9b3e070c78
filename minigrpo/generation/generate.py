"""Batched sampling from a causal LM with a preallocated KV cache: the rollout step of GRPO.

    prompts (B, P), left-padded ──prefill (one forward over P tokens)──▶ cache holds P positions
        └─▶ loop t = 0..N-1: sample token_t from the last logits, feed it (B, 1), cache grows by one slot

Conventions (the same as transformers' `generate()`, so that greedy decoding is token-identical to it):
- Prompts are left-padded to a common length P: row b's real tokens end at column P - 1, so every row's next
  token goes to the same cache slot and a single `seen` counter serves the whole batch.
- Position ids come from the mask (prompts.position_ids): pos = cumsum(mask) - 1 over the prompt, with pads set to
  0; each new token takes the previous position + 1.
- A row stops at its first EOS; the EOS token stays in the completion with mask 1 (so the policy learns to
  stop), every later slot holds `pad_token_id` with mask 0. Finished rows keep being fed pads (their outputs are
  ignored), and the loop ends as soon as every row has stopped, so N = max_new_tokens or fewer.
- Randomness: the uniforms every draw reads are made before the loop, one row of max_new_tokens per sequence
  (`_uniform_table`): from one `generator` for the whole batch, or from each row's own seed (`row_seeds`), in
  which case a row's tokens depend on its seed and prompt only, not on the rest of the batch.

Shapes: B rows, P prompt length, N new tokens, S = P + N cache slots, V vocabulary.
"""

import operator
from dataclasses import dataclass

import torch

from minigrpo.generation.prompts import position_ids
from minigrpo.generation.sampling import check_sampling_args, row_uniforms, sample_next_token
from minigrpo.models.kv_cache import KVCache


@dataclass
class GenerationOutput:
    """completion_ids (B, N) long: the sampled tokens, `pad_token_id` after a row's EOS.
    completion_mask (B, N) long: 1 for each generated token up to and including the row's first EOS, else 0."""

    completion_ids: torch.Tensor
    completion_mask: torch.Tensor


def repeat_prompts(prompt_ids, prompt_mask, k):
    """Repeat each prompt k times, prompt-major: rows [p0 x k, p1 x k, ...], shapes (B, P) -> (B * k, P).

    Group advantages assume this order: rows [g * k, (g + 1) * k) are the k completions of prompt g.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (completions per prompt) must be an int >= 1, found {k!r}")
    if prompt_ids.shape != prompt_mask.shape:
        raise ValueError(f"prompt_ids {tuple(prompt_ids.shape)} and prompt_mask {tuple(prompt_mask.shape)} "
                         "must have the same shape")
    return prompt_ids.repeat_interleave(k, dim=0), prompt_mask.repeat_interleave(k, dim=0)


def check_prompts(prompt_ids, prompt_mask, max_new_tokens, max_positions):
    """Raise a ValueError saying what is wrong with a batch of prompts, or return None.

    Longest real prompt + max_new_tokens must fit in the model's context (max_positions): positions beyond it were
    never trained and rotary tables of some checkpoints end there, so this is an error rather than a warning.
    """
    if prompt_ids.ndim != 2 or prompt_ids.shape != prompt_mask.shape:
        raise ValueError(f"prompt_ids and prompt_mask must both be (B, P); found {tuple(prompt_ids.shape)} and "
                         f"{tuple(prompt_mask.shape)}")
    batch, width = prompt_ids.shape
    if batch == 0 or width == 0:
        raise ValueError(f"empty batch of prompts: shape {tuple(prompt_ids.shape)}, expected B >= 1 and P >= 1")
    if prompt_ids.dtype != torch.long:
        raise ValueError(f"prompt_ids must be torch.long token ids, found {prompt_ids.dtype}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, found {max_new_tokens!r}")
    if not ((prompt_mask == 0) | (prompt_mask == 1)).all():
        raise ValueError("prompt_mask must hold only 0 (pad) and 1 (real token)")
    no_real = (prompt_mask[:, -1] == 0).nonzero().flatten()
    if len(no_real) > 0:
        raise ValueError(f"prompt rows {no_real.tolist()[:8]} do not end with a real token: prompts must be "
                         "left-padded and contain at least one real token")
    not_left = (prompt_mask[:, 1:] < prompt_mask[:, :-1]).any(dim=-1).nonzero().flatten()
    if len(not_left) > 0:
        raise ValueError(f"prompt rows {not_left.tolist()[:8]} are not left-padded (a pad follows a real token); "
                         "pad on the left, e.g. tokenizer.batch_encode(..., padding_side='left')")
    longest = int(prompt_mask.sum(dim=-1).max())
    if longest + max_new_tokens > max_positions:
        raise ValueError(f"longest prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) = "
                         f"{longest + max_new_tokens} exceeds the model's context of {max_positions} positions "
                         "(config.max_position_embeddings); shorten the prompts or max_new_tokens")


def _eos_tensor(eos_token_id, device):
    """None -> None; an int or a collection of ints (list, tuple, set, 1-D tensor) -> a 1-D long tensor of stop ids."""
    if eos_token_id is None:
        return None
    if isinstance(eos_token_id, torch.Tensor):
        eos_token_id = eos_token_id.tolist()
    items = [eos_token_id] if not isinstance(eos_token_id, (list, tuple, set, frozenset)) else list(eos_token_id)
    try:
        ids = [operator.index(i) for i in items]  # ints, numpy ints; rejects floats and strings
    except TypeError:
        ids = []
    if len(ids) == 0:
        raise ValueError(f"eos_token_id must be None, an int or a non-empty collection of ints, found {eos_token_id!r}")
    return torch.tensor(ids, dtype=torch.long, device=device)


def _last_logits(model, input_ids, attention_mask, position_ids, cache):
    """Logits (B, V) of the last position only: the LM head on one position instead of T (prefill has T = P)."""
    hidden = model.hidden_states(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 kv_cache=cache)  # (B, T, C)
    return model.lm_head(hidden[:, -1])  # (B, V)


def generate(model, prompt_ids, prompt_mask, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             eos_token_id=None, pad_token_id=0, generator=None, row_seeds=None):
    """Sample up to max_new_tokens tokens after each left-padded prompt; returns a GenerationOutput.

    model: a CausalLM (uses `hidden_states(...)`, `lm_head`, `config` and `model.embed_tokens` for the device and
        dtype). It is used in whatever mode it is in, never switched: call model.eval() first if it has dropout.
        Runs under torch.inference_mode; the returned tensors are ordinary tensors, usable later in autograd.
    prompt_ids, prompt_mask: (B, P) long, left-padded, mask 1 = real token.
    temperature: 0 = greedy (argmax); else softmax(logits / temperature), filtered by top_k (0 = off) and
        top_p (1 = off) as in `sampling.py`.
    eos_token_id: None (never stop early), an int, or a collection of ints (any of them stops the row).
    generator: a torch.Generator on the model's device, for reproducible sampling of the whole batch.
    row_seeds: instead of `generator`, one int seed per row (B): row b samples from its own stream
        (sampling.row_uniforms), so its tokens do not depend on the other rows, or on how many there are.
    """
    check_prompts(prompt_ids, prompt_mask, max_new_tokens, model.config.max_position_embeddings)
    check_sampling_args(temperature, top_k, top_p)
    # the cache holds what the layers compute, in the dtype of the activations, i.e. of the token embeddings
    weight = model.model.embed_tokens.weight
    eos_ids = _eos_tensor(eos_token_id, weight.device)
    uniforms = None if temperature == 0 else _uniform_table(prompt_ids.shape[0], max_new_tokens, generator,
                                                             row_seeds, weight.device)  # (B, max_new_tokens)
    with torch.inference_mode():
        completion_ids, completion_mask = _sample_loop(
            model, prompt_ids.to(weight.device), prompt_mask.to(weight.device), max_new_tokens, eos_ids,
            pad_token_id, weight.dtype, dict(temperature=temperature, top_k=top_k, top_p=top_p), uniforms)
    # clone outside inference mode: inference tensors cannot be saved for backward (e.g. as a gather index)
    return GenerationOutput(completion_ids=completion_ids.clone(), completion_mask=completion_mask.clone())


def _uniform_table(batch, max_new_tokens, generator, row_seeds, device):
    """(B, max_new_tokens) float64 uniforms, column t read by the draw of token t: each row's own stream when
    row_seeds is given, else drawn from `generator` (or torch's global generator when None)."""
    if row_seeds is None:
        return torch.rand(batch, max_new_tokens, generator=generator, dtype=torch.float64, device=device)
    if generator is not None:
        raise ValueError("generate: pass either one generator for the batch or row_seeds (one per row), not both")
    if len(row_seeds) != batch:
        raise ValueError(f"generate: row_seeds must hold one seed per prompt row, found {len(row_seeds)} for "
                         f"{batch} rows")
    return row_uniforms(row_seeds, max_new_tokens, device)


def _sample_loop(model, prompt_ids, prompt_mask, max_new_tokens, eos_ids, pad_token_id, dtype, sampling, uniforms):
    """The prefill and decoding loop of `generate`, on checked inputs; returns completion ids and mask (B, N).
    uniforms: (B, max_new_tokens), or None for greedy decoding."""
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    cache = KVCache.for_model(model.config, batch, prompt_len + max_new_tokens, dtype=dtype, device=device)

    # One mask for the whole run, filled once: the prompt part from the caller, ones for every new token; each
    # step passes a slice of it. Without any pad, no mask at all, which lets attention take its unmasked path.
    if bool(prompt_mask.all()):
        full_mask = None
    else:
        full_mask = torch.ones(batch, prompt_len + max_new_tokens, dtype=torch.long, device=device)  # (B, S)
        full_mask[:, :prompt_len] = prompt_mask

    positions = position_ids(prompt_mask)  # (B, P)
    logits = _last_logits(model, prompt_ids, None if full_mask is None else full_mask[:, :prompt_len],
                          positions, cache)  # prefill: (B, V)
    next_position = positions[:, -1:] + 1  # (B, 1); the last prompt column is real in every row

    completion_ids = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)  # (B, N)
    completion_mask = torch.zeros((batch, max_new_tokens), dtype=torch.long, device=device)  # (B, N)
    running = torch.ones(batch, dtype=torch.bool, device=device)  # (B,) rows that have not emitted EOS yet
    for t in range(max_new_tokens):
        token = sample_next_token(logits, **sampling, uniforms=None if uniforms is None else uniforms[:, t])  # (B,)
        if eos_ids is None:
            completion_mask[:, t] = 1
        else:
            token = torch.where(running, token, pad_token_id)
            completion_mask[:, t] = running  # a row's EOS itself still counts
            running = running & ~torch.isin(token, eos_ids)
        completion_ids[:, t] = token
        if t == max_new_tokens - 1:
            break  # the last token is never fed back
        if eos_ids is not None and not bool(running.any()):  # one host sync per step, only when rows can stop
            return completion_ids[:, :t + 1], completion_mask[:, :t + 1]
        step_mask = None if full_mask is None else full_mask[:, :prompt_len + t + 1]  # (B, P + t + 1)
        logits = _last_logits(model, token[:, None], step_mask, next_position + t, cache)  # (B, V)
    return completion_ids, completion_mask
