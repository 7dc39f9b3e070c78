"""Rebuild a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) from a GGUF's tokenizer metadata.

A GGUF stores the tokenizer as lists, under llama.cpp's keys:

    tokenizer.ggml.model             "gpt2": byte-level BPE (the only kind read here; SmolLM2, Llama 3, Qwen3)
    tokenizer.ggml.pre               which regex splits text into words before BPE (e.g. "smollm", "llama-bpe")
    tokenizer.ggml.tokens            token strings, index = id
    tokenizer.ggml.token_type        per token: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    tokenizer.ggml.merges            "left right" strings, highest priority first
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, tokenizer.ggml.add_{bos,eos}_token (default false)
    tokenizer.chat_template          the Jinja chat template

The rebuilt tokenizer.json is what transformers builds from the same file (AutoTokenizer.from_pretrained(dir,
gguf_file=...)), so both give the same ids:

    model          BPE(vocab, merges), no unk token, no dropout, no subword prefix or suffix
    vocab          token -> id; a normal token written with characters outside GPT-2's byte alphabet is respelled
                   as the alphabet characters of its UTF-8 bytes (its spelling as BPE produces it)
    normalizer     none
    pre-tokenizer  ByteLevel with GPT-2's regex, no prefix space (pre "default", "gpt-2", "smollm"); for the
                   Llama-3 and Qwen2 families, Split(their regex, isolated) then ByteLevel without a regex.
                   llama.cpp's "smollm" also splits digits one by one: the same ids, as SmolLM2's merges never
                   join two digits. Any other pre is an error rather than silently different ids.
    added tokens   control tokens as special tokens, user-defined ones (e.g. <think>) as plain added tokens, both
                   matched whole in the raw text; then bos/eos/unk/pad as special when not already added
    post-processor TemplateProcessing: "[bos] $A [eos]" with each present only when add_bos/add_eos_token is true
    decoder        ByteLevel

One difference from transformers 5: a control or user-defined token spelled outside the byte alphabet (DeepSeek's
"<｜begin▁of▁sentence｜>") keeps its spelling and id here, as in llama.cpp; transformers respells it and then
drops it from the special tokens (or, for a bos/eos token, adds it again under a new id past the vocabulary).
"""

from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as HFTokenizer

from .gguf_reader import GGUFFile, read_gguf
from .tokenizer import Tokenizer

CONTROL, USER_DEFINED = 3, 4
SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
               "pad_token": "padding_token_id"}

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the split regex; None means GPT-2's own regex inside ByteLevel
PRE_SPLITS = {"default": None, "gpt-2": None, "smollm": None,
              "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT,
              "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}


@lru_cache(maxsize=1)
def byte_alphabet() -> dict:
    """GPT-2's byte -> character table: printable bytes stand for themselves, the other 68 take chr(256 + k)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b], extra = chr(256 + extra), extra + 1
    return table


def _spelling(token: str) -> str:
    """The token as byte-level BPE writes it: itself when already in the alphabet, else its UTF-8 bytes."""
    alphabet = byte_alphabet()
    if set(token) <= set(alphabet.values()):
        return token
    return "".join(alphabet[b] for b in token.encode("utf-8"))


def special_tokens(gguf: GGUFFile) -> dict:
    """{"bos_token": string, ...} for the special-token ids the file sets."""
    tokens = gguf.require("tokenizer.ggml.tokens")
    found = {}
    for name, key in SPECIAL_IDS.items():
        token_id = gguf.metadata.get(f"tokenizer.ggml.{key}")
        if token_id is None:
            continue
        if not 0 <= token_id < len(tokens):
            raise ValueError(f"{gguf.path}: tokenizer.ggml.{key} is {token_id}, outside the {len(tokens)} tokens")
        found[name] = tokens[token_id]
    return found


def _flags(gguf: GGUFFile):
    return (bool(gguf.metadata.get("tokenizer.ggml.add_bos_token", False)),
            bool(gguf.metadata.get("tokenizer.ggml.add_eos_token", False)))


def build_backend(gguf: GGUFFile) -> HFTokenizer:
    """The `tokenizers` pipeline described in the module docstring."""
    kind = gguf.metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{gguf.path}: tokenizer.ggml.model is {kind!r}; only 'gpt2' (byte-level BPE) is supported")
    pre = gguf.metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_SPLITS:
        raise ValueError(f"{gguf.path}: tokenizer.ggml.pre {pre!r} is not supported (its split regex is unknown "
                         f"here); expected one of {sorted(PRE_SPLITS)}")
    tokens = gguf.require("tokenizer.ggml.tokens")
    types = gguf.metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(f"{gguf.path}: {len(types)} token types for {len(tokens)} tokens")
    merges = []
    for i, merge in enumerate(gguf.require("tokenizer.ggml.merges")):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{gguf.path}: merge {i} {merge!r} is not two tokens separated by one space")
        merges.append(tuple(pair))

    added = {i for i, kind in enumerate(types) if kind in (CONTROL, USER_DEFINED)}
    vocab = {(token if i in added else _spelling(token)): i for i, token in enumerate(tokens)}
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False))
    split = PRE_SPLITS[pre]
    if split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                         pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                                  use_regex=False)])
    backend.decoder = decoders.ByteLevel()

    backend.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True)
                                for i in sorted(added) if types[i] == CONTROL])
    backend.add_tokens([AddedToken(tokens[i], normalized=False, special=False)
                        for i in sorted(added) if types[i] == USER_DEFINED])
    named = special_tokens(gguf)
    already = {t.content for t in backend.get_added_tokens_decoder().values()}
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t in dict.fromkeys(named.values()) if t not in already])

    add_bos, add_eos = _flags(gguf)
    bos, eos = (named.get("bos_token") if add_bos else None), (named.get("eos_token") if add_eos else None)
    single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
    pair = " ".join([single] + ([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in (bos, eos) if t])
    return backend


def tokenizer_json(gguf: GGUFFile) -> str:
    """The tokenizer.json text of the file's tokenizer."""
    return build_backend(gguf).to_str()


def tokenizer_config(gguf: GGUFFile) -> dict:
    """tokenizer_config.json: the special-token strings, the add-bos/eos flags and the chat template."""
    add_bos, add_eos = _flags(gguf)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special_tokens(gguf),
              "add_bos_token": add_bos, "add_eos_token": add_eos}
    if "tokenizer.chat_template" in gguf.metadata:
        config["chat_template"] = gguf.metadata["tokenizer.chat_template"]
    return config


def load_gguf_tokenizer(path) -> Tokenizer:
    """Tokenizer of a .gguf file, built in memory (nothing is written)."""
    gguf = read_gguf(path)
    add_bos, _ = _flags(gguf)
    return Tokenizer(build_backend(gguf), special_tokens(gguf), gguf.metadata.get("tokenizer.chat_template"),
                     add_bos_token=add_bos, source=str(Path(path)))
