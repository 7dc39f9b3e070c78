"""Per-token log-probabilities and entropies of sampled tokens, scored a chunk of rows at a time.

For position t with logits z_t (V,) and sampled token y_t, at sampling temperature tau:

    logp_t = log softmax(z_t / tau)[y_t] = z_t[y_t] / tau - logsumexp(z_t / tau)
    H_t    = -sum_v p_v log p_v,   p = softmax(z_t / tau)

The logits are divided by the temperature the completions were sampled at, so that the policy, old and
reference log-probs all describe the distribution the tokens were actually drawn from (as TRL does).

Why chunks. With V = 128k (Llama 3) or 151k (Qwen3) the float32 log-softmax of a (B, T, V) batch is the largest
tensor of a GRPO step: 8 completions x 512 tokens x 151k x 4 bytes = 2.5 GB, more than a 0.6B model's weights.
Only one number per position is needed, so each function here works on `chunk_size` rows (positions) at a time
and upcasts only that chunk to float32.

  token_logprobs(logits, ...)                starts from logits that already exist (B, T, V).
  token_logprobs_from_hidden(hidden, W, ...) starts from the final hidden states (B, T, C) and the output
                                             projection W (V, C): no (B, T, V) tensor ever exists.

When gradients are needed each chunk runs under torch.utils.checkpoint: the forward keeps only the chunk's
inputs (views of hidden / logits, and W, which exist anyway) and its (rows,) outputs; backward recomputes one
chunk's logits at a time. The price is one extra projection matmul per chunk in backward.

The plain path, F.log_softmax(logits / tau, -1).gather(-1, y), is the oracle these are tested against.
"""

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


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

    Memory: only one chunk's logits exist at a time. The peak is a few (chunk_size, V) float32 buffers, about
    five during a chunk's backward (logits, log-softmax, softmax, their gradients): for 256 rows and
    V = 151,936 one buffer is 156 MB, against 2.5 GB for the whole (8 x 512, V) batch. Kept from forward to
    backward: only the inputs (hidden, weight, targets, which exist anyway) and the (B, T) outputs. Backward also
    holds the gradients of hidden (B, T, C) and of weight (V, C) when they require grad.

    Args:
        hidden: (B, T, C) final hidden states (after the final norm); position t scores targets[:, t].
        weight: (V, C) output projection (lm_head.weight; the embedding matrix when tied).
        targets: (B, T) long, token ids in [0, V).
        temperature: > 0; the sampling temperature.
        chunk_size: rows of the flattened (B * T) batch projected at once.
        with_entropy: also return the per-token entropy.

    Returns:
        (logp (B, T), entropy (B, T) or None), float32 (float64 for float64 inputs). Differentiable w.r.t.
        hidden and weight.
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
    V = weight.shape[0]
    _check_common(hidden, targets, temperature, chunk_size, "token_logprobs_from_hidden", "hidden", vocab=V)
    B, T, C = hidden.shape
    rows_h = hidden.reshape(B * T, C)  # (B*T, C)
    rows_y = targets.reshape(B * T)  # (B*T,)
    outs = [
        _maybe_checkpoint(_score_rows, h, weight, y, temperature, with_entropy)  # (c,) or ((c,), (c,))
        for h, y in zip(rows_h.split(chunk_size), rows_y.split(chunk_size))
    ]
    if not with_entropy:
        return torch.cat(outs).view(B, T), None
    logp = torch.cat([o[0] for o in outs]).view(B, T)
    entropy = torch.cat([o[1] for o in outs]).view(B, T)
    return logp, entropy


# ---- one chunk: these functions see (rows or B, c, V) at most ----

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


def _score_rows(h, weight, y, temperature, with_entropy):
    z = F.linear(h, weight)  # (c, V) in the weights' dtype, as lm_head computes it
    logp = _logprobs_from_logits(z, y, temperature)
    if not with_entropy:
        return logp
    return logp, _entropy_from_logits(z, temperature)


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
