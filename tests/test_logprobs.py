"""Chunked and fused log-probs and entropies against hand values and against the plain F.log_softmax path."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigrpo.grpo import token_entropy, token_logprobs, token_logprobs_from_hidden


def plain_logprobs(logits, targets, temperature=1.0):
    """The obvious path: a full float32 (or float64) log-softmax, then gather."""
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def plain_entropy(logits, temperature=1.0):
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def test_three_token_vocab_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])  # (B=1, T=2, V=3)
    targets = torch.tensor([[2, 1]])
    expected = [3 - math.log(math.e + math.e**2 + math.e**3), -math.log(3)]
    torch.testing.assert_close(token_logprobs(logits, targets), torch.tensor([expected]), rtol=0, atol=1e-6)
    # temperature 2: logits become [0.5, 1, 1.5]
    expected_t2 = [1.5 - math.log(math.exp(0.5) + math.exp(1.0) + math.exp(1.5)), -math.log(3)]
    out = token_logprobs(logits, targets, temperature=2.0)
    torch.testing.assert_close(out, torch.tensor([expected_t2]), rtol=0, atol=1e-6)


def test_entropy_three_token_vocab_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]])
    z = [math.exp(v) for v in (1.0, 2.0, 3.0)]
    p = [v / sum(z) for v in z]
    h = -sum(q * math.log(q) for q in p)
    torch.testing.assert_close(token_entropy(logits), torch.tensor([[h, math.log(3)]]), rtol=0, atol=1e-6)


def test_logprobs_are_float32_for_bf16_logits():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0)).bfloat16()
    targets = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    out = token_logprobs(logits, targets, chunk_size=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, plain_logprobs(logits, targets), rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_matches_plain_log_softmax(chunk_size, temperature):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 11, 17, generator=g)
    targets = torch.randint(0, 17, (3, 11), generator=g)
    torch.testing.assert_close(
        token_logprobs(logits, targets, temperature, chunk_size=chunk_size),
        plain_logprobs(logits, targets, temperature), rtol=1e-6, atol=1e-6,
    )
    torch.testing.assert_close(
        token_entropy(logits, temperature, chunk_size=chunk_size), plain_entropy(logits, temperature),
        rtol=1e-6, atol=1e-6,
    )


def test_chunked_gradient_matches_plain_autograd():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 13, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 13, (2, 9), generator=g)
    w = torch.randn(2, 9, generator=g, dtype=torch.float64)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    ((token_logprobs(a, targets, 0.8, chunk_size=4) * w).sum() + token_entropy(a, 0.8, chunk_size=4).sum()).backward()
    logp = F.log_softmax(b / 0.8, dim=-1)
    ((logp.gather(-1, targets[..., None]).squeeze(-1) * w).sum() - (logp.exp() * logp).sum()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def _hidden_case(dtype=torch.float64, B=3, T=7, C=6, V=19, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g, dtype=dtype)
    weight = torch.randn(V, C, generator=g, dtype=dtype)
    targets = torch.randint(0, V, (B, T), generator=g)
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_size", [1, 4, 21, 500])
def test_from_hidden_matches_plain_values_and_gradients(chunk_size):
    hidden, weight, targets = _hidden_case()
    w_logp = torch.randn(targets.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    h1, W1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, W2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()

    logp, ent = token_logprobs_from_hidden(h1, W1, targets, 0.7, chunk_size=chunk_size, with_entropy=True)
    ((logp * w_logp).sum() + ent.sum()).backward()

    logits = h2 @ W2.T  # (B, T, V): the full tensor the fast path avoids
    ref_logp = F.log_softmax(logits / 0.7, dim=-1)
    ref_ent = -(ref_logp.exp() * ref_logp).sum(-1)
    ((ref_logp.gather(-1, targets[..., None]).squeeze(-1) * w_logp).sum() + ref_ent.sum()).backward()

    assert logp.dtype == torch.float64  # float64 in, float64 out, so the comparison can be tight
    torch.testing.assert_close(logp, ref_logp.gather(-1, targets[..., None]).squeeze(-1), rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-12)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(W1.grad, W2.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_from_hidden_gradient_with_the_entropy_untrained_matches_plain_autograd(temperature):
    # the training case: entropy is returned for logging only, so backward takes its in-place branch
    hidden, weight, targets = _hidden_case(B=2, T=5)  # 10 rows in chunks of 3: four chunks, the last ragged
    g = torch.randn(targets.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h1, W1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, W2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, ent = token_logprobs_from_hidden(h1, W1, targets, temperature, chunk_size=3, with_entropy=True)
    (logp * g).sum().backward()
    plain_logprobs(h2 @ W2.T, targets, temperature).mul(g).sum().backward()
    torch.testing.assert_close(logp, plain_logprobs(hidden @ weight.T, targets, temperature), rtol=0, atol=1e-12)
    torch.testing.assert_close(ent, plain_entropy(hidden @ weight.T, temperature), rtol=0, atol=1e-12)
    torch.testing.assert_close(h1.grad, h2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(W1.grad, W2.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_from_hidden_matches_plain_lm_head_path_in_low_precision(dtype):
    # the projection runs in the weights' dtype as lm_head does, the softmax in float32
    hidden, weight, targets = _hidden_case(dtype)
    logp, ent = token_logprobs_from_hidden(hidden, weight, targets, chunk_size=5)
    assert ent is None and logp.dtype == torch.float32
    torch.testing.assert_close(logp, plain_logprobs(F.linear(hidden, weight), targets), rtol=0, atol=1e-5)


def test_from_hidden_accepts_non_contiguous_hidden_and_frozen_weight():
    hidden, weight, targets = _hidden_case(T=8)
    full = hidden.clone().requires_grad_()
    h = full[:, 1:]  # a non-contiguous slice, as when the prompt positions are dropped
    logp, _ = token_logprobs_from_hidden(h, weight, targets[:, 1:], chunk_size=4)
    logp.sum().backward()
    full2 = hidden.clone().requires_grad_()
    plain_logprobs(full2[:, 1:] @ weight.T, targets[:, 1:]).sum().backward()
    torch.testing.assert_close(full.grad, full2.grad, rtol=0, atol=1e-12)
    assert weight.grad is None


def test_from_hidden_keeps_no_vocab_sized_tensor_for_backward():
    hidden, weight, targets = _hidden_case(torch.float32, B=2, T=6, C=5, V=23)
    hidden.requires_grad_()
    weight.requires_grad_()
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_logprobs_from_hidden(hidden, weight, targets, chunk_size=4, with_entropy=True)
    assert saved and all(s[-1] != 23 for s in saved), saved  # only (rows, C) views and (V, C) weight are kept
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        plain_logprobs(hidden @ weight.T, targets)
    assert any(s[-1] == 23 for s in saved)  # the plain path keeps (B, T, V) softmax results


def test_no_grad_path_builds_no_graph():
    hidden, weight, targets = _hidden_case(torch.float32)
    hidden.requires_grad_()
    with torch.no_grad():
        logp, _ = token_logprobs_from_hidden(hidden, weight, targets)
    assert logp.grad_fn is None and not logp.requires_grad


def test_bad_inputs_are_clear_errors():
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match=r"targets must be \(B, T\) = \(2, 3\), found \(2, 4\)"):
        token_logprobs(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\), found min 0, max 5"):
        token_logprobs(logits, torch.tensor([[0, 1, 5], [0, 0, 0]]))
    with pytest.raises(ValueError, match="torch.long"):
        token_logprobs(logits, torch.zeros(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        token_entropy(logits, chunk_size=0)
    with pytest.raises(ValueError, match=r"logits must be \(B, T, V\)"):
        token_entropy(torch.zeros(3, 5))
    hidden = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"weight must be \(V, C\) with C = 4"):
        token_logprobs_from_hidden(hidden, torch.zeros(5, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1"):
        token_logprobs_from_hidden(hidden, torch.zeros(5, 4), torch.zeros(2, 3, dtype=torch.long), chunk_size=None)
    with pytest.raises(ValueError, match="hidden is torch.float32 but weight is torch.bfloat16"):
        token_logprobs_from_hidden(hidden, torch.zeros(5, 4).bfloat16(), torch.zeros(2, 3, dtype=torch.long))
