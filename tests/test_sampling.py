import math

import pytest
import torch

from minigrpo.generation.sampling import (apply_temperature, draw_from_logits, row_uniforms, sample_next_token,
                                         stream_seed, top_k_filter, top_p_filter)

INF = float("inf")


def kept(filtered):
    """Boolean (B, V): which tokens survived a filter."""
    return torch.isfinite(filtered)


def logits_of(probs):
    return torch.tensor([probs], dtype=torch.float32).log()  # (1, V); softmax(log p) = p


# ---------------------------------------------------------------- hand-worked filters

def test_temperature_divides_logits():
    logits = torch.tensor([[1.0, -2.0, 4.0]])
    assert torch.equal(apply_temperature(logits, 0.5), torch.tensor([[2.0, -4.0, 8.0]]))
    assert apply_temperature(logits, 1.0) is logits


def test_top_k_keeps_the_k_largest_logits():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    out = top_k_filter(logits, 2)
    assert torch.equal(out, torch.tensor([[-INF, 4.0, -INF, 3.0]]))


def test_top_k_keeps_every_tie_with_the_kth_value():
    logits = torch.tensor([[3.0, 1.0, 3.0, 5.0]])  # 2nd largest is 3.0, held by two tokens
    assert kept(top_k_filter(logits, 2)).tolist() == [[True, False, True, True]]


def test_top_k_zero_or_above_vocab_keeps_everything():
    logits = torch.tensor([[0.1, 0.2, 0.3]])
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 10), logits)


@pytest.mark.parametrize("top_p, expected_kept", [
    # probs [0.5, 0.3, 0.15, 0.05]; ascending cumulative c = [0.05, 0.2, 0.5, 1.0] for [0.05, 0.15, 0.3, 0.5];
    # a token goes iff its c <= 1 - top_p
    (0.9, [True, True, True, False]),    # 1 - p = 0.1: only 0.05 (c = 0.05) goes
    (0.7, [True, True, False, False]),   # 1 - p = 0.3: 0.05 and 0.15 (c = 0.2) go; 0.5 + 0.3 = 0.8 >= 0.7
    (0.4, [True, False, False, False]),  # 1 - p = 0.6: c = 0.5 goes too; 0.5 >= 0.4 alone
    (0.01, [True, False, False, False]),  # at least one token is always kept
    (1.0, [True, True, True, True]),     # disabled
])
def test_top_p_hand_worked(top_p, expected_kept):
    out = top_p_filter(logits_of([0.5, 0.3, 0.15, 0.05]), top_p)
    assert kept(out).tolist() == [expected_kept]


def test_top_p_works_row_by_row_in_vocabulary_order():
    logits = torch.cat([logits_of([0.05, 0.15, 0.3, 0.5]), logits_of([0.3, 0.05, 0.5, 0.15])])  # (2, 4)
    assert kept(top_p_filter(logits, 0.7)).tolist() == [[False, False, True, True], [True, False, True, False]]


def test_invalid_filter_arguments_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(torch.zeros(1, 3), 0.0)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 3), -1)
    with pytest.raises(ValueError, match="temperature"):
        sample_next_token(torch.zeros(1, 3), temperature=-1.0)


# ---------------------------------------------------------------- parity with transformers' warpers

@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 5, 1.0), (1.0, 0, 0.9), (0.7, 10, 0.8), (1.3, 1, 0.5), (0.5, 50, 0.95), (1.0, 0, 0.3),
])
def test_filters_equal_transformers_warpers_on_random_logits(temperature, top_k, top_p):
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)
    torch.manual_seed(0)
    logits = torch.randn(6, 64) * 3
    logits[0, :4] = logits[0, 4]  # a tie, to exercise the kth-value rule
    theirs = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                 + ([TopKLogitsWarper(top_k)] if top_k else [])
                                 + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    expected = theirs(torch.zeros(6, 1, dtype=torch.long), logits.clone())
    ours = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
    assert torch.equal(kept(ours), kept(expected))
    assert torch.equal(ours[kept(ours)], expected[kept(expected)])


# ---------------------------------------------------------------- drawing tokens

def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [5.0, 5.0, 1.0]])  # second row: tie, first index wins
    assert sample_next_token(logits, temperature=0.0, top_k=1, top_p=0.1).tolist() == [1, 0]


def test_draw_never_picks_a_filtered_token_and_a_single_survivor_always_wins():
    logits = torch.tensor([[-INF, 0.0, -INF, 2.0, -INF], [-INF, -INF, 7.0, -INF, -INF]]).expand(500, 2, 5)
    tokens = draw_from_logits(logits.reshape(1000, 5), torch.Generator().manual_seed(0)).view(500, 2)
    assert set(tokens[:, 0].tolist()) == {1, 3} and set(tokens[:, 1].tolist()) == {2}


def test_seeded_sampling_is_reproducible():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(1))
    draw = lambda seed: sample_next_token(logits, temperature=1.0, top_k=20, top_p=0.9,  # noqa: E731
                                          generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(torch.stack([draw(s) for s in range(5)]), draw(3).expand(5, -1))


def test_sampling_frequencies_match_the_filtered_distribution():
    """Draw n tokens from probs [0.4, 0.3, 0.15, 0.1, 0.05] with top_k = 4, top_p = 0.8. Top-k removes 0.05 and
    leaves [0.4, 0.3, 0.15, 0.1] / 0.95; top-p then sees ascending c = [0.105, 0.263, 0.579, 1] and removes
    c <= 0.2, i.e. 0.1. The law sampled is [0.4, 0.3, 0.15, 0, 0] / 0.85.

    Failure probability if the sampler is right (Hoeffding, then a union bound over the 3 kept tokens):
    P(|freq_j - p_j| >= eps) <= 2 exp(-2 n eps^2); with n = 20000, eps = 0.02 that is 2 e^-16 = 2.3e-7 per token,
    < 7e-7 in all. Filtered tokens must never be drawn at all. The seed is fixed, so the test is deterministic;
    the bound says how unlucky any other seed would have to be.
    """
    n, eps = 20_000, 0.02
    probs = [0.4, 0.3, 0.15, 0.1, 0.05]
    logits = logits_of(probs).expand(n, -1)  # n independent rows, one draw each
    tokens = sample_next_token(logits, temperature=1.0, top_k=4, top_p=0.8,
                               generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=5).double() / n
    expected = torch.tensor([0.4, 0.3, 0.15, 0.0, 0.0], dtype=torch.float64) / 0.85
    assert freq[3] == 0 and freq[4] == 0
    assert (freq - expected).abs().max() < eps
    assert 2 * math.exp(-2 * n * eps**2) * 3 < 1e-6  # the bound stated above


# ---------------------------------------------------------------- per-row streams

def test_stream_seed_is_a_pure_function_of_its_key_and_tells_keys_apart():
    assert stream_seed(0, 3, 5, 1) == stream_seed(0, 3, 5, 1)
    keys = [(s, step, p, j) for s in (0, 1) for step in (1, 2) for p in range(4) for j in range(3)]
    assert len({stream_seed(*k) for k in keys}) == len(keys)
    assert stream_seed(0, 1, 2) != stream_seed(0, 2, 1)  # order matters
    assert 0 <= stream_seed(-1) < 2**64
    with pytest.raises(ValueError, match="key of ints"):
        stream_seed(0, 1.5)


def test_row_uniforms_depend_on_the_row_seed_alone():
    alone = row_uniforms([7], 5)
    among = row_uniforms([3, 7, 11], 5)
    assert alone.shape == (1, 5) and among.shape == (3, 5) and among.dtype == torch.float64
    assert torch.equal(among[1], alone[0])
    assert torch.equal(alone[0], torch.rand(5, generator=torch.Generator().manual_seed(7), dtype=torch.float64))


def test_per_row_streams_sample_the_filtered_distribution():
    """The test above with uniforms from n per-row streams (stream_seed(0, 1, p, 0) for p < n) instead of one
    generator: the same law [0.4, 0.3, 0.15, 0, 0] / 0.85, the same Hoeffding bound (failure < 7e-7)."""
    n, eps = 20_000, 0.02
    logits = logits_of([0.4, 0.3, 0.15, 0.1, 0.05]).expand(n, -1)
    u = row_uniforms([stream_seed(0, 1, p, 0) for p in range(n)], 1)[:, 0]  # (n,)
    tokens = sample_next_token(logits, temperature=1.0, top_k=4, top_p=0.8, uniforms=u)
    freq = torch.bincount(tokens, minlength=5).double() / n
    expected = torch.tensor([0.4, 0.3, 0.15, 0.0, 0.0], dtype=torch.float64) / 0.85
    assert freq[3] == 0 and freq[4] == 0
    assert (freq - expected).abs().max() < eps


def test_inverse_cdf_reads_the_given_uniform():
    # probs [0.5, 0.25, 0.25]: cumulative [0.5, 0.75, 1]; the token is the first v with F_v > u
    logits = logits_of([0.5, 0.25, 0.25]).expand(4, -1)
    tokens = draw_from_logits(logits, uniforms=torch.tensor([0.0, 0.49, 0.5, 0.99], dtype=torch.float64))
    assert tokens.tolist() == [0, 0, 1, 2]
