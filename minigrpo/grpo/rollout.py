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
from ..lora import LoRALinear, lora_layers, merge_lora
from ..rewards import combine_rewards
from .advantages import group_advantages


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


CHUNK_ELEMENTS = 2**24  # logits per chunk when the chunk size is automatic: 64 MiB in float32


def completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature=1.0,
                        chunk_size=None, with_entropy=False):
    """log pi(y_t | x, y_<t) / entropy for every completion position, (B, N) float32 each (entropy None if not asked).

    The model reads prompt + completion; hidden state at position Tp - 1 + t (after the final norm) predicts
    completion token t, so only the N positions from Tp - 1 on are projected onto the vocabulary (by
    _LogprobsFromHidden below), chunk_size rows at a time; None sizes the chunks by the vocabulary, CHUNK_ELEMENTS // V rows, because every temporary of a chunk
    is (rows, V): 1024 rows of a 151,936-token vocabulary would be 0.6 GB each. chunk_size = 0 takes the plain path
    instead: full (B, N, V) logits and a float32 log_softmax (the oracle; memory-hungry).
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
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // weight.shape[0])
    B = hidden.shape[0]
    rows = hidden.to(weight.dtype).reshape(B * N, -1)  # (B*N, C)
    logp, entropy = _LogprobsFromHidden.apply(rows, weight, completion_ids.reshape(B * N), float(temperature),
                                              chunk_size)
    return logp.view(B, N), (entropy.view(B, N) if with_entropy else None)


class _LogprobsFromHidden(torch.autograd.Function):
    """Log-probs (with grad) and entropies (without) of sampled tokens, straight from hidden states, in row chunks.

    Per row h (C,) with sampled token y, z = W h / tau (V,), computed in float32 from the weights' dtype:
        lse  = m + log sum_v exp(z_v - m),  m = max_v z_v
        logp = z_y - lse
        H    = lse - sum_v p_v z_v,         p = softmax(z) = exp(z - lse)
    Backward (logp only; H is logged, never trained):
        d logp / d z = onehot(y) - p,  d z / d h = W / tau   =>   grad_h = (g (onehot(y) - p) / tau) W
        (and grad_W = (g (onehot(y) - p) / tau)^T h when W requires grad, e.g. a LoRA-wrapped lm_head).

    This is token_logprobs_from_hidden (the readable version in logprobs.py, which it is tested against) with the
    softmax work shared: the forward exponentiates each chunk's logits once for both lse and H and keeps only lse
    per row (B*N floats); the backward recomputes one chunk's z, reuses lse, and forms no (rows, V) tensor besides
    z itself, where autograd through a checkpoint redoes the logsumexp and then differentiates it. Entropy from
    token_logprobs_from_hidden(with_entropy=True) under grad would also hold every chunk's saved tensors until the
    graph is freed (nothing backpropagates through it), O(B * N * V) in all; here it costs nothing extra.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, temperature, chunk_size):
        R = h.shape[0]
        logp = torch.empty(R, dtype=torch.float32, device=h.device)  # (R,)
        entropy, lse_all = torch.empty_like(logp), torch.empty_like(logp)
        for i in range(0, R, chunk_size):
            z = _chunk_logits(h[i:i + chunk_size], weight, temperature)  # (c, V) float32
            m = z.amax(dim=-1, keepdim=True)  # (c, 1)
            e = torch.exp(z - m)
            s = e.sum(dim=-1, keepdim=True)
            lse = (m + s.log()).squeeze(-1)  # (c,)
            logp[i:i + chunk_size] = z.gather(1, targets[i:i + chunk_size, None]).squeeze(1) - lse
            entropy[i:i + chunk_size] = lse - (e * z).sum(dim=-1) / s.squeeze(-1)
            lse_all[i:i + chunk_size] = lse
        ctx.save_for_backward(h, weight, targets, lse_all)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        h, weight, targets, lse = ctx.saved_tensors
        tau, c = ctx.temperature, ctx.chunk_size
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for i in range(0, h.shape[0], c):
            g = grad_logp[i:i + c, None] / tau  # (c, 1)
            z = _chunk_logits(h[i:i + c], weight, tau)  # (c, V)
            dz = torch.exp_(z.sub_(lse[i:i + c, None])).mul_(-g)  # -g p, in place of z
            dz.scatter_add_(1, targets[i:i + c, None], g)  # + g onehot(y)
            dz = dz.to(weight.dtype)
            if grad_h is not None:
                grad_h[i:i + c] = dz @ weight  # (c, C)
            if grad_w is not None:
                grad_w += dz.T @ h[i:i + c]  # (V, C)
        return grad_h, grad_w, None, None, None


def _chunk_logits(h, weight, temperature):
    z = F.linear(h, weight).float()  # (c, V): the projection in the weights' dtype, as lm_head computes it
    return z / temperature if temperature != 1.0 else z


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
    Raises ScoringError (a ValueError; .component names the reward) when a reward fails, is not finite or has
    the wrong length.
    """
    G = config.num_generations
    ids, mask, cut = encode_prompts(tokenizer, [prompt_fn(it) for it in items], config.max_prompt_length, device)
    ids, mask = repeat_prompts(ids, mask, G)  # (B*G, Tp)
    was_training = policy.training
    policy.eval()  # no adapter dropout while sampling
    try:
        merged = merged_adapters(policy) if should_merge(policy, config) else contextlib.nullcontext()
        with merged, (autocast() if autocast else contextlib.nullcontext()):
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


def should_merge(policy, config):
    """config.merge_for_generation, with None (auto) = merge iff every LoRA-wrapped base weight is float32."""
    if config.merge_for_generation is not None:
        return config.merge_for_generation
    return all(m.base_layer.weight.dtype == torch.float32 for _, m in lora_layers(policy))


@contextlib.contextmanager
def merged_adapters(model):
    """Inside the block every LoRALinear's base weight holds W + s * B @ A; on exit W is restored bit for bit.

    unmerge_lora would subtract the delta again, which is exact only up to rounding; the KL reference must stay the
    base model exactly, so the original weights are copied before merging and copied back afterwards.
    """
    layers = [m for _, m in lora_layers(model)]
    saved = [m.base_layer.weight.detach().clone() for m in layers]
    merge_lora(model)
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, w in zip(layers, saved):
                m.base_layer.weight.copy_(w)
                m.merged = False  # the weight is W again: the adapter branch is live, as before merging


def _pad_id(tokenizer):
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return _first(tokenizer.eos_token_id) or 0


