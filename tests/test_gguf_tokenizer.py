"""Tokenizer rebuilt from GGUF metadata (minigrpo/models/gguf_tokenizer.py): the same pipeline, ids and chat
rendering as transformers' reading of the same file, GPT-2's byte alphabet, and errors for what it cannot read."""

import json

import pytest
from tokenizers.pre_tokenizers import ByteLevel

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
import gguf_tiny  # noqa: E402
from gguf_tiny import SPECIALS, TEXTS, USER_DEFINED, write_tiny_gguf  # noqa: E402

from minigrpo.models import load_tokenizer  # noqa: E402
from minigrpo.models.gguf_tokenizer import byte_alphabet  # noqa: E402

# one file per split regex family (GPT-2's own, Llama 3's, Qwen2's), with and without a BOS added on encode
VARIANTS = [("smollm", False), ("llama-bpe", True), ("qwen2", False)]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "日本語? café 😀"},
     {"role": "assistant", "content": "<think>easy</think> 4"}, {"role": "user", "content": "Thanks\n\tbye"}],
]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"{v[0]}-bos{int(v[1])}")
def pair(request, tmp_path_factory):
    """(ours, transformers') tokenizer of one tiny GGUF."""
    pre, add_bos = request.param
    path = tmp_path_factory.mktemp("tok") / f"{pre}.gguf"
    write_tiny_gguf(path, pre=pre, add_bos=add_bos)
    theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return load_tokenizer(path), theirs


def test_ids_match_transformers_on_varied_texts(pair):
    ours, theirs = pair
    for text in TEXTS:
        assert ours.encode(text) == theirs(text).input_ids, text
        assert ours.encode(text, add_special_tokens=False) == theirs(text, add_special_tokens=False).input_ids


def test_decode_matches_transformers(pair):
    ours, theirs = pair
    for text in TEXTS:
        ids = theirs(text).input_ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


def test_pipeline_equals_transformers_tokenizer_json(pair):
    ours, theirs = pair
    assert json.loads(ours.backend.to_str()) == json.loads(theirs.backend_tokenizer.to_str())


def test_special_tokens_match_transformers(pair):
    ours, theirs = pair
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(ours, name) == getattr(theirs, name)
        assert getattr(ours, name + "_id") == getattr(theirs, name + "_id")
    assert (ours.bos_token, ours.eos_token, ours.pad_token, ours.unk_token) == (SPECIALS[1], SPECIALS[2],
                                                                               SPECIALS[2], SPECIALS[0])


def test_bos_is_prepended_only_when_the_file_says_so(pair):
    ours, theirs = pair
    first = ours.encode("hi")[0]
    assert (first == ours.bos_token_id) == bool(theirs.add_bos_token)


@pytest.mark.parametrize("chat", CHATS, ids=["one-turn", "multi-turn"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_chat_rendering_matches_transformers(pair, chat, generation_prompt):
    ours, theirs = pair
    text = ours.apply_chat_template(chat, add_generation_prompt=generation_prompt)
    assert text == theirs.apply_chat_template(chat, add_generation_prompt=generation_prompt, tokenize=False)
    assert ours.encode_chat(chat, add_generation_prompt=generation_prompt) == theirs.apply_chat_template(
        chat, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False)


def test_control_and_user_defined_tokens_stay_whole(pair):
    ours, _ = pair
    ids = ours.encode(f"a{SPECIALS[2]}b{USER_DEFINED}c", add_special_tokens=False)
    assert ours.token_to_id(SPECIALS[2]) in ids and ours.token_to_id(USER_DEFINED) in ids
    assert ours.decode(ids) == f"ab{USER_DEFINED}c"  # the special token is skipped, the user-defined one kept


def test_byte_alphabet_is_gpt2s():
    table = byte_alphabet()
    assert set(table.values()) == set(ByteLevel.alphabet()) and len(table) == 256
    assert table[ord("A")] == "A" and table["é".encode()[0]] == "Ã"  # printable bytes stand for themselves
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā"  # the others: chr(256 + k)


def test_control_token_outside_the_byte_alphabet_keeps_its_id(tmp_path, monkeypatch):
    # DeepSeek spells its control tokens with U+FF5C and U+2581; llama.cpp matches them whole at their own id
    # (transformers 5 instead adds the bos/eos ones again under a new id, past the vocabulary)
    token = "<｜end▁of▁sentence｜>"
    monkeypatch.setattr(gguf_tiny, "SPECIALS", [token, *SPECIALS[1:]])
    path = tmp_path / "ds.gguf"
    write_tiny_gguf(path)
    tok = load_tokenizer(path)
    assert tok.token_to_id(token) == 0 and tok.unk_token == token
    assert tok.encode(f"hi{token}")[-1] == 0
    assert tok.vocab_size == len(gguf_tiny.train_vocab()[0])  # nothing was added past the vocabulary


def test_other_tokenizer_models_are_refused(tmp_path):
    path = tmp_path / "spm.gguf"
    write_tiny_gguf(path, model="llama")
    with pytest.raises(ValueError, match=r"tokenizer.ggml.model is 'llama'; only 'gpt2'"):
        load_tokenizer(path)


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    path = tmp_path / "pre.gguf"
    write_tiny_gguf(path, pre="tekken")
    with pytest.raises(ValueError, match=r"tokenizer.ggml.pre 'tekken' is not supported"):
        load_tokenizer(path)
