"""Contrastive encoder training (minigrpo/miniature/encoder_training.py): InfoNCE by hand, gradients, and a tiny
training run."""

import math
from types import SimpleNamespace

import pytest
import torch

from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.miniature.encoder_training import embed_with_grad, info_nce, paraphrase_margin, train_encoder
from minigrpo.models import load_body, load_tokenizer
from minigrpo.models.encoder import Encoder

# 6 facts, 3 wordings each: every group is one meaning, the other groups are its negatives
GROUPS = [
    ["the cat sat on the mat", "a cat was sitting on the mat", "on the mat sat the cat"],
    ["water boils at one hundred degrees", "at one hundred degrees water boils", "water starts boiling at 100"],
    ["the sun rises in the east", "in the east the sun comes up", "sunrise happens in the east"],
    ["birds can fly in the sky", "in the sky birds are flying", "the sky is where birds fly"],
    ["iron is a heavy metal", "a heavy metal is iron", "iron counts as a heavy metal"],
    ["rivers flow into the sea", "the sea receives the rivers", "into the sea flow the rivers"],
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_embedding"), arch="qwen3-embedding", seed=0)


def _triplets(groups):
    """reference = a group's first text, paraphrase = its second, contrast = the next group's first text."""
    return [SimpleNamespace(reference=g[0], paraphrase=g[1], contrast=groups[(i + 1) % len(groups)][0])
            for i, g in enumerate(groups)]


def test_info_nce_on_orthogonal_pairs_is_log_one_plus_exp_minus_two_over_tau():
    # S = A P^T / 0.5 = [[2, 0], [0, 2]]; every row and column: -log(e^2 / (e^2 + e^0)) = log(1 + e^-2)
    eye = torch.eye(2)
    assert info_nce(eye, eye, 0.5).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_info_nce_averages_the_row_and_column_cross_entropies():
    # S = A P^T / 1 = [[1, 0.6], [0, 0.8]], not symmetric, so anchor->positive and positive->anchor differ
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    rows = ((-1 + math.log(math.e + math.exp(0.6))) + (-0.8 + math.log(1 + math.exp(0.8)))) / 2
    cols = ((-1 + math.log(math.e + 1)) + (-0.8 + math.log(math.exp(0.6) + math.exp(0.8)))) / 2
    assert info_nce(anchors, positives, 1.0).item() == pytest.approx((rows + cols) / 2, abs=1e-6)
    assert info_nce(positives, anchors, 1.0).item() == pytest.approx((rows + cols) / 2, abs=1e-6)


def test_embed_with_grad_gives_unit_rows_equal_to_the_frozen_encoder_and_gradients_reach_the_body(checkpoint):
    body, tok = load_body(checkpoint), load_tokenizer(checkpoint)
    body.requires_grad_(True)
    texts = [g[0] for g in GROUPS[:3]]
    e = embed_with_grad(body, tok, texts)  # (3, C)
    assert e.shape == (3, body.config.hidden_size) and e.dtype == torch.float32
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    assert e.requires_grad
    (e[0] @ e[1]).backward()
    grads = {name: p.grad for name, p in body.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert grads["embed_tokens.weight"].abs().sum() > 0 and grads["layers.0.self_attn.q_proj.weight"].abs().sum() > 0
    frozen = Encoder(body, tok, pooling="last").embed(texts)
    assert (e.detach() - frozen).abs().max().item() <= 1e-5


def test_training_lowers_the_loss_and_raises_the_paraphrase_margin(checkpoint):
    torch.manual_seed(0)
    body, tok = load_body(checkpoint), load_tokenizer(checkpoint)
    encoder = Encoder(body, tok, pooling="mean")  # shares `body`, which train_encoder updates in place
    triplets = _triplets(GROUPS)
    margin_before, frac_before = paraphrase_margin(encoder, triplets)
    losses = train_encoder(body, tok, GROUPS, steps=10, batch_size=6, lr=2e-3, temperature=0.05, pooling="mean",
                           seed=0, progress=False)
    margin_after, frac_after = paraphrase_margin(encoder, triplets)
    # measured (seed 0): loss 4.50, 4.72, 0.02 ... 0.005, 0.018, 0.000; margin 0.096 -> 1.05; fraction 0.5 -> 1.0
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.25 * sum(losses[:3]) / 3
    assert margin_after > margin_before + 0.5
    assert frac_before < 1.0 and frac_after == 1.0
    # the body is handed back frozen and in eval mode, ready for Encoder.embed
    assert not body.training and not any(p.requires_grad for p in body.parameters())


def test_training_is_reproducible_for_a_seed(checkpoint):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        body, tok = load_body(checkpoint), load_tokenizer(checkpoint)
        runs.append(train_encoder(body, tok, GROUPS, steps=3, batch_size=4, seed=1, progress=False))
    assert runs[0] == runs[1]


def test_paraphrase_margin_with_hand_made_unit_vectors():
    vectors = {"r1": [1.0, 0.0], "p1": [0.6, 0.8], "c1": [0.0, 1.0],   # 0.6 - 0.0 =  0.6
               "r2": [0.0, 1.0], "p2": [0.0, 1.0], "c2": [0.8, 0.6],   # 1.0 - 0.6 =  0.4
               "r3": [1.0, 0.0], "p3": [0.0, 1.0], "c3": [0.6, 0.8]}   # 0.0 - 0.6 = -0.6
    encoder = SimpleNamespace(embed=lambda texts: torch.tensor([vectors[t] for t in texts]))
    triplets = [SimpleNamespace(reference=f"r{i}", paraphrase=f"p{i}", contrast=f"c{i}") for i in (1, 2, 3)]
    margin, fraction = paraphrase_margin(encoder, triplets)
    assert margin == pytest.approx((0.6 + 0.4 - 0.6) / 3, abs=1e-6)
    assert fraction == pytest.approx(2 / 3, abs=1e-6)


def test_fewer_than_two_usable_groups_raise_value_error(checkpoint):
    body, tok = load_body(checkpoint), load_tokenizer(checkpoint)
    with pytest.raises(ValueError, match="at least 2 groups"):
        train_encoder(body, tok, GROUPS[:1], steps=1, progress=False)
    # a group of one repeated text has no positive pair, so it does not count
    with pytest.raises(ValueError, match="found 1"):
        train_encoder(body, tok, [GROUPS[0], ["same", "same"]], steps=1, progress=False)
