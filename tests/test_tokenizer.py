"""Tokenizer (minigrpo/models/tokenizer.py): encode/pad/truncate/decode on a hand-built vocabulary, config reading,
and errors for missing or corrupt files."""

import json
import re

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, processors

from minigrpo.models.tokenizer import load_tokenizer

# A word-level vocabulary small enough to check every id by hand.
VOCAB = {"<s>": 0, "</s>": 1, "<pad>": 2, "<unk>": 3, "a": 4, "b": 5, "c": 6, "d": 7}


def write_word_tokenizer(folder, post="bos", config=None, padding_in_json=False):
    """tokenizer.json with whitespace words; post = "bos" (prepend <s>), "eos" (append </s>) or None."""
    tok = HFTokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<s>", "</s>", "<pad>"])
    if post == "bos":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 0)])
    elif post == "eos":
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    if padding_in_json:  # some Hub files carry these blocks; the loader must switch them off
        tok.enable_padding(length=12, pad_id=2, pad_token="<pad>")
        tok.enable_truncation(max_length=2)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is None:
        config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    if config is not False:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture()
def tok(tmp_path):
    return load_tokenizer(write_word_tokenizer(tmp_path / "tok"))


def test_encode_prepends_bos_only_with_special_tokens(tok):
    assert tok.encode("a b c") == [0, 4, 5, 6]
    assert tok.encode("a b c", add_special_tokens=False) == [4, 5, 6]


def test_batch_encode_left_padding_puts_pads_first(tok):
    ids, mask = tok.batch_encode(["a", "a b c"], padding_side="left")
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[2, 2, 0, 4], [0, 4, 5, 6]]
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_batch_encode_right_padding_puts_pads_last(tok):
    ids, mask = tok.batch_encode(["a b c", "d"], padding_side="right")
    assert ids.tolist() == [[0, 4, 5, 6], [0, 7, 2, 2]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


def test_batch_encode_truncation_keeps_prepended_bos(tok):
    ids, mask = tok.batch_encode(["a b c d", "b"], max_length=3, padding_side="left")
    assert ids.tolist() == [[0, 4, 5], [2, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    # truncation is per call: the next call sees the full text again
    assert tok.batch_encode(["a b c d"])[0].tolist() == [[0, 4, 5, 6, 7]]


def test_batch_encode_truncation_keeps_appended_eos(tmp_path):
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", post="eos"))
    ids, mask = tok.batch_encode(["a b c d", "c"], max_length=3, padding_side="left")
    assert ids.tolist() == [[4, 5, 1], [2, 6, 1]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_mask_comes_from_lengths_when_pad_id_is_a_real_token(tmp_path):
    # Qwen3-Embedding pads with the very token it appends; the mask must still mark that token as real.
    config = {"eos_token": "</s>", "pad_token": "</s>"}
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", post="eos", config=config))
    ids, mask = tok.batch_encode(["a b", "c"], padding_side="left")
    assert ids.tolist() == [[4, 5, 1], [1, 6, 1]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]


def test_padding_and_truncation_stored_in_tokenizer_json_are_ignored(tmp_path):
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", padding_in_json=True))
    assert tok.encode("a b c d") == [0, 4, 5, 6, 7]
    assert tok.batch_encode(["a"])[0].tolist() == [[0, 4]]


def test_decode_round_trip_and_skip_special_tokens(tok):
    ids = tok.encode("a b c")
    assert tok.decode(ids) == "a b c"
    assert tok.decode(ids, skip_special_tokens=False) == "<s> a b c"
    assert tok.decode(torch.tensor(ids)) == "a b c"
    assert tok.batch_decode(torch.tensor([[0, 4, 2], [0, 7, 6]])) == ["a", "d c"]


def test_special_tokens_read_from_string_spelling(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 8 and len(tok) == 8
    assert tok.token_to_id("c") == 6 and tok.id_to_token(7) == "d" and tok.token_to_id("zzz") is None


def test_special_tokens_read_from_dict_spelling(tmp_path):
    added = lambda s: {"__type": "AddedToken", "content": s, "lstrip": False, "normalized": False,  # noqa: E731
                       "rstrip": False, "single_word": False}
    config = {"bos_token": added("<s>"), "eos_token": added("</s>"), "pad_token": None, "unk_token": added("<unk>")}
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", config=config))
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 3)
    # no pad token: padding uses EOS
    assert tok.pad_token == "</s>" and tok.pad_token_id == 1
    assert tok.batch_encode(["a", "a b"])[0].tolist() == [[1, 0, 4], [0, 4, 5]]


def test_config_fields_read(tmp_path):
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
              "model_max_length": 1000000000000000019884624838656, "chat_template": "{{ bos_token }}"}
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", config=config))
    assert tok.add_bos_token is True and tok.model_max_length is None and tok.has_chat_template
    config["model_max_length"] = 4096
    assert load_tokenizer(write_word_tokenizer(tmp_path / "u", config=config)).model_max_length == 4096


def test_missing_tokenizer_config_gives_no_special_tokens(tmp_path):
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", config=False))
    assert tok.bos_token_id is None and tok.eos_token_id is None and tok.pad_token_id is None
    assert not tok.has_chat_template
    assert tok.batch_encode(["a b", "c d"])[0].tolist() == [[0, 4, 5], [0, 6, 7]]
    with pytest.raises(ValueError, match="neither a pad_token nor an eos_token"):
        tok.batch_encode(["a b", "c"])


def test_missing_tokenizer_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_corrupt_tokenizer_json_names_the_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer\.json could not be read"):
        load_tokenizer(tmp_path)


def test_corrupt_tokenizer_config_names_file_and_line(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t")
    (folder / "tokenizer_config.json").write_text('{\n"bos_token": "<s>",\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json is not valid JSON \(line 3"):
        load_tokenizer(folder)


def test_special_token_missing_from_vocab_is_an_error(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t", config={"eos_token": "<|eot|>"})
    with pytest.raises(ValueError, match=r"eos_token '<\|eot\|>' is not in the vocabulary"):
        load_tokenizer(folder)


def test_bad_special_token_value_names_the_key(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t", config={"bos_token": 5})
    with pytest.raises(ValueError, match="'bos_token'"):
        load_tokenizer(folder)


def test_batch_encode_rejects_bad_arguments(tok):
    with pytest.raises(TypeError, match="one str"):
        tok.batch_encode("a b")
    with pytest.raises(ValueError, match="padding_side"):
        tok.batch_encode(["a"], padding_side="middle")
    with pytest.raises(ValueError, match="at least one"):
        tok.batch_encode([])


def _fallback_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def test_missing_chat_template_warns_once_per_tokenizer_naming_what_is_missing(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t")  # tokenizer_config.json without chat_template, no .jinja file
    tok = load_tokenizer(folder)
    chat = [{"role": "user", "content": "a b"}]
    with pytest.warns(UserWarning) as record:
        tok.apply_chat_template(chat, add_generation_prompt=True)
        tok.apply_chat_template(chat, add_generation_prompt=True)
    messages = _fallback_warnings(record)
    assert len(messages) == 1
    assert str(folder) in messages[0] and "no chat template" in messages[0] and "length limit" in messages[0]
    with pytest.warns(UserWarning, match="no chat template"):  # another tokenizer says it again
        load_tokenizer(folder).apply_chat_template(chat)


def test_missing_eos_token_warns_once_per_tokenizer_naming_what_is_missing(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t", config={"bos_token": "<s>", "pad_token": "<pad>"})
    tok = load_tokenizer(folder)
    with pytest.warns(UserWarning) as record:
        assert tok.eos_token_id is None and tok.eos_token_id is None
    messages = _fallback_warnings(record)
    assert len(messages) == 1
    assert str(folder) in messages[0] and "no eos_token" in messages[0] and "length limit" in messages[0]


def test_checkpoint_with_template_and_eos_gives_no_warning(tmp_path):
    import warnings

    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ messages[0]['content'] }}"}
    tok = load_tokenizer(write_word_tokenizer(tmp_path / "t", config=config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tok.eos_token_id == 1 and tok.apply_chat_template([{"role": "user", "content": "a"}]) == "a"


def test_non_utf8_tokenizer_config_names_file_and_line(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t")
    cfg = folder / "tokenizer_config.json"
    cfg.write_bytes(b'{\n  "bos_token": "<s>",\n  "eos_token": "caf\xe9"\n}\n')  # Latin-1, not UTF-8
    with pytest.raises(ValueError, match=re.escape(f"{cfg}:3: expected UTF-8 text, found byte 0xe9")):
        load_tokenizer(folder)


def test_non_utf8_chat_template_file_names_file_and_line(tmp_path):
    folder = write_word_tokenizer(tmp_path / "t")
    jinja = folder / "chat_template.jinja"
    jinja.write_bytes(b"{% for m in messages %}\n{{ m['content'] }} \x93quoted\x94\n{% endfor %}")  # Windows-1252
    with pytest.raises(ValueError, match=re.escape(f"{jinja}:2: expected UTF-8 text, found byte 0x93")):
        load_tokenizer(folder)
