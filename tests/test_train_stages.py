"""CPT / SFT building blocks (minigrpo/train: loop, cpt, sft, optim), against values worked by hand."""

import math

import pytest
import torch

from minigrpo.train import (build_sft_data, make_optimizer, masked_nll, pack_blocks, shuffled_sentence_copies, train_lm,
                            warmup_cosine)


class CharTokenizer:
    """One token per character ('a' -> 1, 'b' -> 2, ...); EOS 0, pad 0. Enough to check masks by hand."""

    eos_token_id = 0
    pad_token_id = 0

    def encode(self, text, add_special_tokens=True):
        return [ord(c) - ord("a") + 1 for c in text]


def test_masked_nll_averages_only_masked_targets():
    # Vocab 2. Position 0 predicts token 1 with logits (0, log 3): p = 3/4 -> nll = log(4/3).
    # Position 1 predicts token 0 with logits (0, 0): p = 1/2 -> nll = log 2, but its target is masked out.
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [5.0, 5.0]]])
    ids = torch.tensor([[0, 1, 0]])
    loss_mask = torch.tensor([[0, 1, 0]])  # only the target at t = 1 counts
    assert masked_nll(logits, ids, loss_mask).item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    both = masked_nll(logits, ids, torch.tensor([[0, 1, 1]]))
    assert both.item() == pytest.approx((math.log(4 / 3) + math.log(2.0)) / 2, abs=1e-6)


def test_pack_blocks_appends_eos_and_drops_the_partial_block():
    data = pack_blocks(CharTokenizer(), ["abc", "de"], block_size=3)
    # stream: a b c EOS d e EOS -> 7 tokens -> two blocks of 3, the last token dropped
    assert data.input_ids.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert data.loss_mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    with pytest.raises(ValueError, match="fewer than one block"):
        pack_blocks(CharTokenizer(), ["a"], block_size=8)


def test_shuffled_sentence_copies_keeps_every_sentence_and_reorders_them():
    texts = ["S0. S1. S2.", "S3! S4? S5.", "S6. S7. S8. S9."]
    sentences = ["S0.", "S1.", "S2.", "S3!", "S4?", "S5.", "S6.", "S7.", "S8.", "S9."]
    out = shuffled_sentence_copies(texts, copies=3, seed=7, sentences_per_text=4)
    # 10 sentences per copy -> texts of 4, 4 and 2 sentences, three times
    assert [len(t.split(" ")) for t in out] == [4, 4, 2] * 3
    split = [t.split(" ") for t in out]
    copies = [sum(split[3 * c:3 * c + 3], []) for c in range(3)]
    for copy in copies:
        assert sorted(copy) == sorted(sentences)  # each copy holds every sentence exactly once
    assert copies[0] != copies[1] != copies[2] and copies[0] != sentences  # and each is a new order
    assert shuffled_sentence_copies(texts, copies=3, seed=7, sentences_per_text=4) == out  # seeded
    assert shuffled_sentence_copies(texts, copies=3, seed=8, sentences_per_text=4) != out
    with pytest.raises(ValueError, match="copies"):
        shuffled_sentence_copies(texts, copies=0)


def test_sft_loss_mask_covers_completion_and_eos_only():
    data = build_sft_data(CharTokenizer(), ["ab", "a"], ["c", "cd"])
    assert data.input_ids.tolist() == [[1, 2, 3, 0], [1, 3, 4, 0]]
    assert data.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    assert data.loss_mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    short = build_sft_data(CharTokenizer(), ["abc", "a"], ["d", "b"])
    assert short.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="exceed max_length=3"):
        build_sft_data(CharTokenizer(), ["ab"], ["cd"], max_length=3)


def test_warmup_cosine_schedule_values():
    assert warmup_cosine(0, 10, 2) == pytest.approx(0.5)
    assert warmup_cosine(1, 10, 2) == pytest.approx(1.0)
    assert warmup_cosine(2, 10, 2) == pytest.approx(1.0)  # start of the cosine: p = 0
    assert warmup_cosine(6, 10, 2) == pytest.approx(0.1 + 0.9 * 0.5)  # p = 1/2
    assert warmup_cosine(10, 10, 2) == pytest.approx(0.1)


class TinyLM(torch.nn.Module):
    """A bigram model with the CausalLM call signature, and one 'block' matrix for Muon."""

    def __init__(self, vocab=6, width=8):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(vocab, width)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(width, width, bias=False)])
        self.norm = torch.nn.LayerNorm(width)
        self.lm_head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, input_ids, attention_mask=None):
        return self.lm_head(self.norm(self.layers[0](self.embed_tokens(input_ids))))


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_train_lm_fits_a_deterministic_sequence(kind):
    torch.manual_seed(0)
    model = TinyLM()
    data = pack_blocks(CharTokenizer(), ["abcde"] * 8, block_size=6)
    losses = train_lm(model, data, steps=60, batch_size=4, lr=3e-2, optimizer=kind, progress=False)
    assert losses[-1] < 0.1 * losses[0]


def test_muon_takes_block_matrices_and_adamw_the_rest():
    opt = make_optimizer(TinyLM(), "muon")
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert [p.shape for g in muon.param_groups for p in g["params"]] == [torch.Size([8, 8])]
    assert len([p for g in adamw.param_groups for p in g["params"]]) == 4  # embed, norm weight + bias, head
    with pytest.raises(ValueError, match="unknown optimizer kind 'sgd'"):
        make_optimizer(TinyLM(), "sgd")
