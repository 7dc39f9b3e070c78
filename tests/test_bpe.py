"""Byte-level BPE training (minigrpo/miniature/bpe.py): determinism, the three styles' special-token behaviour,
and that transformers loads the written folder and encodes the same ids."""

import json

import pytest

from minigrpo.miniature.bpe import STYLES, train_bpe_tokenizer, write_tiny_tokenizer

TEXTS = ["Paris is the capital of France.", "Ünïcödé, emoji 🙂, tabs\tand\nnewlines  and  spaces.",
         "<think>reasoning</think> The answer is (B).", "日本語のテキスト", ""]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    return {style: (root / style, write_tiny_tokenizer(root / style, style=style)) for style in STYLES}


@pytest.mark.parametrize("style", STYLES)
def test_same_inputs_give_byte_identical_files(tmp_path, style):
    write_tiny_tokenizer(tmp_path / "a", style=style)
    write_tiny_tokenizer(tmp_path / "b", style=style)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize("style", STYLES)
def test_default_vocab_size_is_reached_exactly(tiny, style):
    assert tiny[style][1].vocab_size == 512


@pytest.mark.parametrize("style", STYLES)
def test_byte_level_round_trip_of_any_text(tiny, style):
    tok = tiny[style][1]
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text


def test_llama_style_prepends_bos_and_marks_role_tokens_not_special(tiny):
    tok = tiny["llama"][1]
    assert tok.bos_token == "<｜begin▁of▁sentence｜>" and tok.eos_token == "<｜end▁of▁sentence｜>"
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 1)
    ids = tok.encode("hello")
    assert ids[0] == 0 and ids.count(0) == 1 and tok.encode("hello", add_special_tokens=False) == ids[1:]
    # <think> and the role markers are added tokens (one id each) that decode keeps
    think = tok.token_to_id("<think>")
    assert tok.encode("<think>", add_special_tokens=False) == [think]
    assert tok.decode(tok.encode("<｜User｜>x<think>y</think>")) == "<｜User｜>x<think>y</think>"
    cfg = json.loads((tiny["llama"][0] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["add_bos_token"] is True and cfg["added_tokens_decoder"]["0"]["special"] is True
    assert cfg["added_tokens_decoder"][str(think)]["special"] is False


def test_qwen3_style_has_no_bos(tiny):
    tok = tiny["qwen3"][1]
    assert tok.bos_token_id is None and tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.encode("hello") == tok.encode("hello", add_special_tokens=False)


def test_qwen3_embedding_style_appends_endoftext_even_when_truncated(tiny):
    tok = tiny["qwen3-embedding"][1]
    eot = tok.token_to_id("<|endoftext|>")
    assert tok.pad_token_id == eot and tok.eos_token == "<|im_end|>"
    plain = tok.encode("The heart is a muscle.", add_special_tokens=False)
    assert tok.encode("The heart is a muscle.") == plain + [eot]
    ids, mask = tok.batch_encode(["The heart is a muscle.", "hi"], max_length=3, padding_side="left")
    assert ids[0].tolist() == plain[:2] + [eot] and ids[:, -1].tolist() == [eot, eot]
    assert mask[0].tolist() == [1, 1, 1]


def test_add_bos_false_and_extra_special_tokens(tmp_path):
    tok = train_bpe_tokenizer(["some text to train on, some text"], tmp_path, 300, style="llama", add_bos=False,
                              special_tokens=["<|pad|>"])
    assert tok.encode("some") == tok.encode("some", add_special_tokens=False)
    pad = tok.token_to_id("<|pad|>")
    assert pad == 6 and tok.decode([pad, *tok.encode("some")]) == "some"  # special: skipped
    assert json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))["add_bos_token"] is False


def test_custom_chat_template_is_written(tmp_path):
    tok = train_bpe_tokenizer(["abc abc"], tmp_path, 270, style="qwen3", chat_template="{{ messages[0].content }}")
    assert tok.apply_chat_template([{"role": "user", "content": "q"}]) == "q"


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="style must be one of"):
        train_bpe_tokenizer(["x"], tmp_path, 300, style="gpt2")
    with pytest.raises(ValueError, match="vocab_size must be at least 262"):
        train_bpe_tokenizer(["x"], tmp_path, 100, style="llama")
    with pytest.raises(ValueError, match="has none"):
        train_bpe_tokenizer(["x"], tmp_path, 300, style="qwen3", add_bos=True)


@pytest.mark.parametrize("style", STYLES)
def test_transformers_loads_the_folder_and_encodes_the_same_ids(tiny, style):
    transformers = pytest.importorskip("transformers")
    folder, tok = tiny[style]
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (tok.bos_token, tok.eos_token, tok.pad_token)
    assert len(hf) == tok.vocab_size
    for text in TEXTS:
        assert hf(text)["input_ids"] == tok.encode(text)
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text, add_special_tokens=False)
        assert hf.decode(tok.encode(text), skip_special_tokens=True) == tok.decode(tok.encode(text))
    batch = hf(TEXTS[:3], padding=True, padding_side="left", return_tensors="pt")
    ids, mask = tok.batch_encode(TEXTS[:3], padding_side="left")
    assert ids.tolist() == batch["input_ids"].tolist() and mask.tolist() == batch["attention_mask"].tolist()
