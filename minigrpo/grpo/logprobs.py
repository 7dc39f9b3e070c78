"""Per-token log-probabilities and entropies of sampled tokens: the plain oracle and the fused fast path.

For position t with logits z_t (V,) and sampled token y_t, at sampling temperature tau:

    logp_t = log softmax(z_t / tau)[y_t] = z_t[y_t] / tau - logsumexp(z_t / tau)
    H_t    = -sum_v p_v log p_v,   p = softmax(z_t / tau)

The logits are divided by the temperature the completions were sampled at, so that the policy, old and
reference log-probs all describe the distribution the tokens were actually drawn from (as TRL does).

Why chunks. With V = 128k (Llama 3) or 151k (Qwen3) the float32 log-softmax of a (B, T, V) batch is the largest
tensor of a GRPO step: 8 completions x 512 tokens x 151k x 4 bytes = 2.5 GB, more than a 0.6B model's weights.
Only one number per position is needed, so the functions here can work on `chunk_size` rows (positions) at a
time and upcast only that chunk to float32.

  token_logprobs(logits, ...)                from logits that already exist (B, T, V), in chunks, each under
  token_entropy(logits, ...)                 torch.utils.checkpoint when grad is needed.
  token_logprobs_from_hidden(hidden, W, ...) the fast path, from the final hidden states (B, T, C) and the
                                             output projection W (V, C): no (B, T, V) tensor ever exists, and
                                             the backward is derived by hand (_FusedLogprobs below).
  completion_logprobs(model, ...)            what the trainer calls: the model's hidden states over prompt +
                                             completion, then the fast path, or the plain one (chunk_size=0).

The plain path, F.log_softmax(logits / tau, -1).gather(-1, y) over full logits (_plain_logprobs), is the oracle
the others are tested against.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..generation.prompts import position_ids
from ..lora import effective_weight

CHUNK_ELEMENTS = 2**24  # logits per chunk when completion_logprobs sizes chunks itself: 64 MiB in float32


def completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *, temperature=1.0,
                        chunk_size=None, with_entropy=False):
    """log pi(y_t | x, y_<t) and entropy for every completion position, (B, N) float32 each (entropy None if not
    asked).

    The model reads prompt + completion (positions from generation.prompts.position_ids, as when sampling); the
    hidden state at position Tp - 1 + t (after the final norm) predicts completion token t, so only the N
    positions from Tp - 1 on are projected onto the vocabulary, by `token_logprobs_from_hidden` with the weight
    lm_head applies (LoRA included when the head is wrapped), chunk_size rows at a time. None sizes the chunks
    by the vocabulary, CHUNK_ELEMENTS // V rows, because every temporary of a chunk is (rows, V): 1024 rows of a
    151,936-token vocabulary would be 0.6 GB each. chunk_size = 0 takes the plain path instead: full (B, N, V)
    logits and one float32 log_softmax (the oracle; memory-hungry).
    """
    Tp, N = prompt_ids.shape[1], completion_ids.shape[1]
    ids = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # (B, Tp+N-1): the last token predicts nothing
    mask = torch.cat([prompt_mask, completion_mask], dim=1)[:, :-1]
    hidden = model.hidden_states(ids, attention_mask=mask, position_ids=position_ids(mask))[:, Tp - 1:]  # (B, N, C)
    weight = effective_weight(model.lm_head)  # (V, C)
    if chunk_size == 0:
        return _plain_logprobs(hidden, weight, completion_ids, temperature, with_entropy)
    if chunk_size is None:
        chunk_size = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return token_logprobs_from_hidden(hidden.to(weight.dtype), weight, completion_ids, temperature, chunk_size,
                                      with_entropy)


def token_logprobs(logits, targets, temperature=1.0, chunk_size=256):
    """logp[b, t] = log softmax(logits[b, t] / temperature)[targets[b, t]], in float32.

    Args:
        logits: (B, T, V) any floating dtype; position t scores targets[:, t] (shift before calling).
        targets: (B, T) long, token ids in [0, V).
        temperature: > 0; the sampling temperature.
        chunk_size: rows (batch x positions) scored at once; the sequence is split into chunks of
            max(1, chunk_size // B) positions, and the working set is a few (B, that, V) float32 buffers.

    Returns:
        (B, T) float32 (float64 for float64 logits). Differentiable w.r.t. logits: each chunk is checkpointed,
        see the module docstring.
    """
    _check_common(logits, targets, temperature, chunk_size, "token_logprobs", "logits")
    step = max(1, chunk_size // logits.shape[0])  # positions per chunk
    pieces = [
        _maybe_checkpoint(_logprobs_from_logits, z, y, temperature)  # (B, c)
        for z, y in zip(logits.split(step, dim=1), targets.split(step, dim=1))
    ]
    return torch.cat(pieces, dim=1)  # (B, T)


def token_entropy(logits, temperature=1.0, chunk_size=256):
    """H[b, t] = -sum_v p_v log p_v with p = softmax(logits[b, t] / temperature).

    Args and chunking as `token_logprobs`. Returns (B, T) float32 (float64 for float64 logits), in nats.
    """
    _check_common(logits, None, temperature, chunk_size, "token_entropy", "logits")
    step = max(1, chunk_size // logits.shape[0])
    pieces = [_maybe_checkpoint(_entropy_from_logits, z, temperature) for z in logits.split(step, dim=1)]
    return torch.cat(pieces, dim=1)  # (B, T)


def token_logprobs_from_hidden(hidden, weight, targets, temperature=1.0, chunk_size=256, with_entropy=False):
    """logp = log softmax((hidden @ weight.T) / temperature) gathered at targets, never forming (B, T, V).

    Formula per row h (C,):  z = W h (V,);  logp = z[y] / tau - logsumexp(z / tau);
    entropy (if asked) H = -sum_v p_v log p_v, p = softmax(z / tau).
    The projection is F.linear in the weights' dtype, exactly the model's lm_head; the softmax is in float32.

    Memory: only one chunk's logits exist at a time, one (chunk_size, V) float32 buffer or two: for 256 rows
    and V = 151,936 one buffer is 156 MB, against 2.5 GB for the whole (8 x 512, V) batch. Kept from forward to
    backward: the inputs (hidden, weight, targets, which exist anyway) and three floats per row. Backward also
    holds the gradients of hidden (B, T, C) and of weight (V, C) when they require grad.

    Args:
        hidden: (B, T, C) final hidden states (after the final norm); position t scores targets[:, t].
        weight: (V, C) output projection (lm_head.weight; the embedding matrix when tied).
        targets: (B, T) long, token ids in [0, V).
        temperature: > 0; the sampling temperature.
        chunk_size: rows of the flattened (B * T) batch projected at once.
        with_entropy: also return the per-token entropy.

    Returns:
        (logp (B, T), entropy (B, T) or None), float32 (float64 for float64 inputs). Both differentiable
        w.r.t. hidden and weight.
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise ValueError(f"token_logprobs_from_hidden: hidden must be (B, T, C), found {_shape(hidden)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(
            f"token_logprobs_from_hidden: weight must be (V, C) with C = {hidden.shape[2]} (hidden's last dim), "
            f"found {_shape(weight)}"
        )
    if weight.dtype != hidden.dtype:
        raise ValueError(f"token_logprobs_from_hidden: hidden is {hidden.dtype} but weight is {weight.dtype}")
    _check_common(hidden, targets, temperature, chunk_size, "token_logprobs_from_hidden", "hidden",
                  vocab=weight.shape[0])
    B, T, C = hidden.shape
    logp, entropy = _FusedLogprobs.apply(hidden.reshape(B * T, C), weight, targets.reshape(B * T),
                                         float(temperature), chunk_size)  # (B*T,) each
    return logp.view(B, T), (entropy.view(B, T) if with_entropy else None)


class _FusedLogprobs(torch.autograd.Function):
    """Log-probs and entropies of sampled tokens straight from hidden states, in row chunks, backward by hand.

    Per row h (C,) with sampled token y, z = W h / tau (V,), computed in float32 from the weights' dtype:
        lse  = m + log sum_v exp(z_v - m),  m = max_v z_v
        logp = z_y - lse
        H    = lse - sum_v p_v z_v,         p = softmax(z) = exp(z - lse)
    Backward, with g = d loss / d logp and k = d loss / d H per row:
        d logp / d z = onehot(y) - p,   d H / d z = -p (log p + H),   d z / d h = W / tau
        => dz = g (onehot(y) - p) - k p (log p + H);  grad_h = (dz / tau) W,  grad_W = (dz / tau)^T h
        (grad_W when W requires grad, e.g. a LoRA-wrapped lm_head).

    Autograd through a checkpointed log_softmax would store nothing either, but would redo the logsumexp in
    backward and then differentiate it through (rows, V) temporaries. Here the forward exponentiates each
    chunk's logits once for both lse and H and keeps only lse and H per row; the backward recomputes one chunk's
    z, reuses lse, and, when the entropy is not trained (k = 0, the GRPO case), forms no (rows, V) tensor besides
    z itself. The plain log_softmax is the oracle this is tested against.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, temperature, chunk_size):
        ctx.set_materialize_grads(False)  # a gradient that is None (entropy not trained) skips its term
        R = h.shape[0]
        logp = torch.empty(R, dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)  # (R,)
        entropy, lse_all = torch.empty_like(logp), torch.empty_like(logp)
        for i in range(0, R, chunk_size):
            rows = slice(i, i + chunk_size)
            z = _chunk_logits(h[rows], weight, temperature)  # (c, V)
            m = z.amax(dim=-1, keepdim=True)  # (c, 1)
            e = torch.exp(z - m)
            s = e.sum(dim=-1, keepdim=True)
            lse = (m + s.log()).squeeze(-1)  # (c,)
            logp[rows] = z.gather(1, targets[rows, None]).squeeze(1) - lse
            entropy[rows] = lse - (e * z).sum(dim=-1) / s.squeeze(-1)
            lse_all[rows] = lse
        ctx.save_for_backward(h, weight, targets, lse_all, entropy)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        h, weight, targets, lse, entropy = ctx.saved_tensors
        tau, c = ctx.temperature, ctx.chunk_size
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for i in range(0, h.shape[0], c):
            rows = slice(i, i + c)
            g = torch.zeros_like(lse[rows, None]) if grad_logp is None else grad_logp[rows, None] / tau  # (c, 1)
            log_p = _chunk_logits(h[rows], weight, tau).sub_(lse[rows, None])  # (c, V): log p, in place of z
            if grad_entropy is None:
                dz = log_p.exp_().mul_(-g)  # -g p, in place: the only (c, V) buffer
            else:
                k = grad_entropy[rows, None] / tau  # (c, 1)
                dz = log_p.exp() * (-g - k * (log_p + entropy[rows, None]))
            dz.scatter_add_(1, targets[rows, None], g)  # + g onehot(y)
            dz = dz.to(weight.dtype)
            if grad_h is not None:
                grad_h[rows] = dz @ weight  # (c, C)
            if grad_w is not None:
                grad_w += dz.T @ h[rows]  # (V, C)
        return grad_h, grad_w, None, None, None


def _plain_logprobs(hidden, weight, targets, temperature, with_entropy):
    """The oracle: full (B, N, V) logits and one float32 log_softmax, every (B, N, V) tensor at once."""
    logps = F.log_softmax(F.linear(hidden, weight).float() / temperature, dim=-1)  # (B, N, V)
    logp = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, N)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(logps.exp() * logps).sum(dim=-1)  # (B, N)
    return logp, entropy


# ---- one chunk: these functions see (rows or B, c, V) at most ----

def _chunk_logits(h, weight, temperature):
    # (c, V): the projection in the weights' dtype, as lm_head computes it, then widened and tempered
    return _widen(F.linear(h, weight), temperature)


def _logprobs_from_logits(z, y, temperature):
    z = _widen(z, temperature)  # (..., V) float32 (float64 stays float64)
    return z.gather(-1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


def _entropy_from_logits(z, temperature):
    z = _widen(z, temperature)  # (..., V) float32 (float64 stays float64)
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)  # -sum p log p: no cancellation of two large sums
    return -(torch.exp(logp) * logp).sum(dim=-1)


def _widen(z, temperature):
    z = z.to(torch.promote_types(z.dtype, torch.float32))  # a no-op for float32 logits
    return z if temperature == 1.0 else z / temperature


def _maybe_checkpoint(fn, *args):
    """Run fn on one chunk; under autograd, keep only its inputs and recompute its insides in backward."""
    needs_grad = torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    if needs_grad:
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


# ---- argument checks ----

def _shape(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_common(scores, targets, temperature, chunk_size, where, name, vocab=None):
    if not isinstance(scores, torch.Tensor) or scores.dim() != 3:
        raise ValueError(f"{where}: {name} must be (B, T, V), found {_shape(scores)}")
    if not scores.is_floating_point():
        raise ValueError(f"{where}: {name} must be floating point, found {scores.dtype}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"{where}: temperature must be a number > 0, found {temperature!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be an int >= 1, found {chunk_size!r}")
    if targets is None:
        return
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(scores.shape[:2]):
        raise ValueError(f"{where}: targets must be (B, T) = {tuple(scores.shape[:2])}, found {_shape(targets)}")
    if targets.dtype != torch.long:
        raise ValueError(f"{where}: targets must be torch.long token ids, found {targets.dtype}")
    V = scores.shape[2] if vocab is None else vocab
    if targets.numel() > 0:
        lo, hi = targets.min().item(), targets.max().item()
        if lo < 0 or hi >= V:
            raise ValueError(f"{where}: target ids must lie in [0, {V}), found min {lo}, max {hi}")
