"""Prompt encoding and position ids (minigrpo/generation/prompts.py), on a stub tokenizer with ids worked by hand."""

import pytest
import torch

from minigrpo.generation import encode_prompts, pad_id, position_ids


class WordTokenizer:
    """One id per word: "w3" -> 3. encode never adds special tokens (as asked with add_special_tokens=False)."""

    def __init__(self, pad_token_id=0, eos_token_id=9):
        self.pad_token_id, self.eos_token_id = pad_token_id, eos_token_id

    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False  # a rendered chat template already holds its BOS
        return [int(w[1:]) for w in text.split()]


def test_prompts_are_left_truncated_to_their_last_tokens_and_left_padded():
    ids, mask, cut = encode_prompts(WordTokenizer(pad_token_id=7), ["w1 w2 w3 w4 w5", "w6", "w2 w3"], max_length=3)
    assert ids.tolist() == [[3, 4, 5], [7, 7, 6], [7, 2, 3]]  # the first prompt keeps its end: w3 w4 w5
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert cut == 1 and ids.dtype == mask.dtype == torch.long


def test_a_prompt_without_tokens_is_an_error():
    with pytest.raises(ValueError, match="encodes to zero tokens"):
        encode_prompts(WordTokenizer(), ["w1", ""], max_length=4)


def test_pad_id_falls_back_to_the_first_eos_then_zero():
    assert pad_id(WordTokenizer(pad_token_id=5)) == 5
    assert pad_id(WordTokenizer(pad_token_id=None, eos_token_id=[8, 9])) == 8
    assert pad_id(WordTokenizer(pad_token_id=None, eos_token_id=None)) == 0


def test_position_ids_count_real_tokens_of_prompt_and_completion():
    # a left-padded prompt followed by a completion that stopped early (trailing pads)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 5, 6]]
