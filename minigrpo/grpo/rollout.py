"""The rollout: prompts in, G sampled completions per prompt out, as the typed record `RolloutBatch`.

    items ─prompt_fn─▶ text ─encode_prompts (left-truncate, left-pad)─▶ (B, Tp) ─repeat G─▶ (B*G, Tp)
          ─generate (policy with LoRA, eval mode, no grad)─▶ completions (B*G, N) + mask
          ─decode (skip special tokens)─▶ text

Rows are prompt-major: [p0 c0, p0 c1, ..., p0 c(G-1), p1 c0, ...], the layout `repeat_prompts` produces and
`group_advantages` expects. Scoring the texts and everything after it is the trainer's next stage.

Random stream. The trainer samples completion j of the step's prompt p (p counted over the whole step, across
data-parallel ranks) from its own stream, seeded by `rollout_seeds` from (seed, step, p, j). What a completion
samples is then a function of the weights and that key alone: the same on 1 process or N, whichever rank holds
the prompt and whatever else is in its batch; and a resumed run needs no sampler state to continue.

Sampler. With float32 base weights, completions are sampled from the merged weights W + s * B @ A (lora.merged:
no adapter matmuls per token, W restored bit for bit afterwards); they equal the policy up to float32 rounding.
"""

import contextlib
from dataclasses import dataclass

import torch

from ..generation import encode_prompts, generate, pad_id, repeat_prompts, stream_seed
from ..generation.prompts import prompt_token_ids
from ..lora import lora_layers, merged


@dataclass
class RolloutBatch:
    """One generation batch. B prompts, G completions each, Tp prompt width, N completion width.

    prompt_ids, prompt_mask: (B*G, Tp) long, left-padded, each prompt repeated G times in a row.
    completion_ids, completion_mask: (B*G, N) long; mask is 1 up to and including the EOS, 0 after it.
    completions: B*G decoded completion strings (special tokens skipped).
    items: B*G items, item i is the one completion i answers.
    truncated: (B*G,) bool, the completion hit max_completion_length without an EOS.
    prompt_truncated: int, how many of the B prompts lost tokens to max_prompt_length.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list
    items: list
    truncated: torch.Tensor
    prompt_truncated: int

    def __len__(self):
        return self.completion_ids.shape[0]

    def rows(self, sl):
        """(prompt_ids, prompt_mask, completion_ids, completion_mask) of the rows in slice sl."""
        return self.prompt_ids[sl], self.prompt_mask[sl], self.completion_ids[sl], self.completion_mask[sl]


def rollout_seeds(seed, step, prompt_indices, group_size):
    """One seed per row, prompt-major: stream_seed(seed, step, p, j) for p in prompt_indices, j < group_size."""
    return [stream_seed(seed, step, p, j) for p in prompt_indices for j in range(group_size)]


@torch.no_grad()
def rollout(policy, tokenizer, items, prompt_fn, config, *, generator=None, row_seeds=None, device="cpu",
            autocast=None):
    """Sample config.num_generations completions for each item and decode them; returns a RolloutBatch.

    Randomness: row_seeds (one per row, `rollout_seeds`), or one `generator` for the batch (see generate()).
    `autocast` is a zero-argument callable returning the forward's autocast context (or None for none).
    """
    G = config.num_generations
    ids, mask, cut = encode_prompts(tokenizer, [prompt_fn(it) for it in items], config.max_prompt_length, device)
    ids, mask = repeat_prompts(ids, mask, G)  # (B*G, Tp)
    was_training = policy.training
    policy.eval()  # no adapter dropout while sampling
    try:
        sampler = merged(policy) if should_merge(policy, config) else contextlib.nullcontext()
        with sampler, (autocast() if autocast else contextlib.nullcontext()):
            out = generate(policy, ids, mask, max_new_tokens=config.max_completion_length,
                           temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id(tokenizer), generator=generator,
                           row_seeds=row_seeds)
    finally:
        policy.train(was_training)
    comp_ids, comp_mask = out.completion_ids, out.completion_mask  # (B*G, N)
    lengths = comp_mask.sum(dim=1).tolist()
    texts = tokenizer.batch_decode([row[:n] for row, n in zip(comp_ids.tolist(), lengths)], skip_special_tokens=True)
    eos = tokenizer.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [],
                           dtype=torch.long, device=comp_ids.device)
    stopped = (torch.isin(comp_ids, eos_ids) & comp_mask.bool()).any(dim=1)  # (B*G,)
    return RolloutBatch(ids, mask, comp_ids, comp_mask, texts, [it for it in items for _ in range(G)],
                        (~stopped).cpu(), cut)


def should_merge(policy, config):
    """config.merge_for_generation, with None (auto) = merge iff every LoRA-wrapped base weight is float32."""
    if config.merge_for_generation is not None:
        return config.merge_for_generation
    return all(m.base_layer.weight.dtype == torch.float32 for _, m in lora_layers(policy))


def check_prompts_fit(tokenizer, items, prompt_fn, config, max_positions):
    """Raise a ValueError, before any compute, when a training prompt + max_completion_length exceeds the model's
    context; otherwise return the longest prompt's token count.

    Every prompt is encoded as a rollout encodes it (after max_prompt_length truncation). Positions beyond the
    context were never trained, and sampling refuses them, so without this check a run would stop at the first
    step that draws a long prompt, losing the steps since its last checkpoint.
    """
    lengths = [len(prompt_token_ids(tokenizer, prompt_fn(it), config.max_prompt_length)[0]) for it in items]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + config.max_completion_length > max_positions:
        raise ValueError(
            f"training item {longest} encodes to a prompt of {lengths[longest]} tokens (after max_prompt_length = "
            f"{config.max_prompt_length}); with max_completion_length = {config.max_completion_length} that is "
            f"{lengths[longest] + config.max_completion_length} positions, more than the model's context of "
            f"{max_positions} (config.max_position_embeddings). Lower max_prompt_length or max_completion_length.")
    return lengths[longest]
