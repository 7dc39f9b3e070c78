"""The rollout: prompts in, a scored batch of completions out, as the typed record `RolloutBatch`.

    items ─prompt_fn─▶ text ─encode (left-truncate, left-pad)─▶ (B, Tp) ─repeat K─▶ (B*G, Tp)
          ─generate (policy with LoRA, eval mode, no grad)─▶ completions (B*G, N) + mask
          ─decode (skip special tokens)─▶ text ─reward functions─▶ components + total (B*G,)
          ─group_advantages─▶ A (B*G,)

Rows are prompt-major: [p0 c0, p0 c1, ..., p0 c(G-1), p1 c0, ...], the layout `repeat_prompts` produces and
`group_advantages` expects. `completion_logprobs` scores completion tokens under any policy (the current one with
grad, the old one, or the reference with adapters disabled) from the final hidden states, a chunk of rows at a time.
"""

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..generation import generate, repeat_prompts
from ..lora import LoRALinear
from ..rewards import combine_rewards
from .advantages import group_advantages
from .logprobs import token_logprobs_from_hidden


class ScoringError(ValueError):
    """A reward function failed (non-finite value, wrong length, ...). .component names it."""

    def __init__(self, component, message):
        super().__init__(message)
        self.component = component


@dataclass
class RolloutBatch:
    """One generation batch. B prompts, G completions each, Tp prompt width, N completion width.

    prompt_ids, prompt_mask: (B*G, Tp) long, left-padded, each prompt repeated G times in a row.
    completion_ids, completion_mask: (B*G, N) long; mask is 1 up to and including the EOS, 0 after it.
    completions: B*G decoded completion strings (special tokens skipped).
    items: B*G items, item i is the one completion i answers.
    rewards: name -> (B*G,) float32, each reward function's value before weighting.
    total: (B*G,) float32, sum_k w_k r_k.
    advantages: (B*G,) float32, group-relative.
    adv_stats: python floats from group_advantages (reward_mean, reward_std, frac_zero_std, ...).
    truncated: (B*G,) bool, the completion hit max_completion_length without an EOS.
    prompt_truncated: int, how many of the B prompts lost tokens to max_prompt_length.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    completions: list
    items: list
    rewards: dict
    total: torch.Tensor
    advantages: torch.Tensor
    adv_stats: dict
    truncated: torch.Tensor
    prompt_truncated: int

    def __len__(self):
        return self.completion_ids.shape[0]

    def rows(self, sl):
        """(prompt_ids, prompt_mask, completion_ids, completion_mask, advantages) of the rows in slice sl."""
        return (self.prompt_ids[sl], self.prompt_mask[sl], self.completion_ids[sl], self.completion_mask[sl],
                self.advantages[sl])


def encode_prompts(tokenizer, texts, max_length, device="cpu"):
    """Tokenize and left-pad prompts, keeping each prompt's last max_length tokens.

    Left truncation (TRL's choice for prompts) keeps the end of the prompt: the question, its options and the
    chat template's generation header, without which the model would not start its answer. The text is tokenized
    as is (add_special_tokens=False), as SFT and evaluation do: a rendered chat template already holds its BOS.

    Returns (ids (B, Tp) long, mask (B, Tp) long, number of prompts truncated).
    """
    rows, cut = [], 0
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > max_length:
            ids, cut = ids[-max_length:], cut + 1
        if not ids:
            raise ValueError(f"encode_prompts: prompt {text[:60]!r} encodes to zero tokens")
        rows.append(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (_first(tokenizer.eos_token_id) or 0)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device), cut


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


def position_ids_from_mask(mask):
    """p[b, t] = (number of real tokens in row b up to t) - 1, clamped at 0: left padding does not shift positions."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, S)


def completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature=1.0,
                        chunk_size=1024, with_entropy=False):
    """log pi(y_t | x, y_<t) / entropy for every completion position, (B, N) float32 each (entropy None if not asked).

    The model reads prompt + completion; hidden state at position Tp - 1 + t (after the final norm) predicts
    completion token t, so only the N positions from Tp - 1 on are projected onto the vocabulary. chunk_size = 0
    takes the plain path instead: full (B, N, V) logits and a float32 log_softmax (the oracle; memory-hungry).
    Positions count real tokens only (see position_ids_from_mask), as during generation.
    """
    Tp, N = prompt_ids.shape[1], completion_ids.shape[1]
    ids = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # (B, Tp+N-1): the last token predicts nothing
    mask = torch.cat([prompt_mask, completion_mask], dim=1)[:, :-1]
    hidden = model.hidden_states(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    hidden = hidden[:, Tp - 1:]  # (B, N, C)
    weight = output_weight(model)  # (V, C)
    if chunk_size == 0:  # the plain, obvious path: every float32 (B, N, V) tensor exists at once
        logps = F.log_softmax(F.linear(hidden, weight).float() / temperature, dim=-1)  # (B, N, V)
        logp = logps.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)  # (B, N)
        entropy = None
        if with_entropy:
            with torch.no_grad():
                entropy = -(logps.exp() * logps).sum(dim=-1)  # (B, N)
        return logp, entropy
    return token_logprobs_from_hidden(hidden.to(weight.dtype), weight, completion_ids, temperature,
                                      chunk_size=chunk_size, with_entropy=with_entropy)


def output_weight(model):
    """The (V, C) matrix lm_head applies: its weight, plus s * B @ A when LoRA wraps the head and is active."""
    head = model.lm_head
    if isinstance(head, LoRALinear) and not (head.disabled or head.merged):
        return head.weight + head.delta_weight().to(head.weight.dtype)
    return head.weight


@torch.no_grad()
def generate_and_score(policy, tokenizer, items, prompt_fn, reward_fns, reward_weights, config, *, generator,
                       device="cpu", autocast=None):
    """Sample G completions for each item, decode them, score them, and compute group advantages.

    `autocast` is a zero-argument callable returning the forward's autocast context (or None for none).
    Raises ValueError naming the reward function when a reward is not finite or has the wrong length.
    """
    G = config.num_generations
    ids, mask, cut = encode_prompts(tokenizer, [prompt_fn(it) for it in items], config.max_prompt_length, device)
    ids, mask = repeat_prompts(ids, mask, G)  # (B*G, Tp)
    was_training = policy.training
    policy.eval()  # no adapter dropout while sampling
    try:
        with (autocast() if autocast else contextlib.nullcontext()):
            out = generate(policy, ids, mask, max_new_tokens=config.max_completion_length,
                           temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=_pad_id(tokenizer), generator=generator)
    finally:
        policy.train(was_training)
    comp_ids, comp_mask = out.completion_ids, out.completion_mask  # (B*G, N)
    lengths = comp_mask.sum(dim=1).tolist()
    texts = tokenizer.batch_decode([row[:n] for row, n in zip(comp_ids.tolist(), lengths)], skip_special_tokens=True)
    rep_items = [it for it in items for _ in range(G)]

    try:
        breakdown = combine_rewards(reward_fns, reward_weights, texts, rep_items)
    except ValueError as e:  # the message names the function; find which one for ScoringError.component
        named = [n for n in reward_fns if f"'{n}'" in str(e) or f'"{n}"' in str(e)] or [n for n in reward_fns if n in str(e)]
        raise ScoringError(named[0] if named else "rewards", str(e)) from e
    rewards = {k: v.detach().float().cpu() for k, v in breakdown.components.items()}
    total = breakdown.total.detach().float().cpu()
    for name, r in list(rewards.items()) + [("total", total)]:
        bad = (~torch.isfinite(r)).nonzero().flatten()
        if bad.numel():
            raise ScoringError(name, f"reward {name!r} is not finite: {r[bad[0]].item()} at completion {bad[0].item()}")
    advantages, adv_stats = group_advantages(total, G, scale=config.scale_rewards, eps=config.adv_eps,
                                             std_floor=config.std_floor)
    eos = tokenizer.eos_token_id
    eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [],
                           dtype=torch.long, device=comp_ids.device)
    stopped = (torch.isin(comp_ids, eos_ids) & comp_mask.bool()).any(dim=1)  # (B*G,)
    return RolloutBatch(ids, mask, comp_ids, comp_mask, texts, rep_items, rewards, total,
                        advantages.to(device), adv_stats, (~stopped).cpu(), cut)


def _pad_id(tokenizer):
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return _first(tokenizer.eos_token_id) or 0


