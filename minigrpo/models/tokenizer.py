"""A thin tokenizer over the `tokenizers` library, read from a checkpoint folder like transformers reads it.

Files read:
    tokenizer.json         the whole pipeline (normalizer, pre-tokenizer, BPE model, post-processor, decoder)
    tokenizer_config.json  (optional) the special-token strings bos/eos/pad/unk (a string, or a dict
                           {"content": ...} as transformers writes AddedToken), chat_template (a string, or a list
                           of {"name", "template"}), add_bos_token, model_max_length
    chat_template.jinja    (optional) the chat template as its own file, which then wins over the config entry
                           (transformers >= 4.43 writes it so)

Conventions, where libraries differ:
    * encode(add_special_tokens=True) runs the post-processor of tokenizer.json: it PREPENDS BOS for Llama /
      DeepSeek-R1-Distill and APPENDS <|endoftext|> for Qwen3-Embedding. add_bos_token in the config is only
      recorded: the post-processor decides (transformers 5 also ignores the flag when tokenizer.json exists).
    * A rendered chat already contains its BOS, so encode_chat tokenises it with add_special_tokens=False (as
      transformers' apply_chat_template(tokenize=True) does); encode(rendered) would give a double BOS.
    * decode skips special tokens by default; added tokens marked "special": false (e.g. <think>) are kept.
    * pad_token_id falls back to eos_token_id when the checkpoint sets no pad token (Llama-3 sets none).
      Padding never defines the mask: the mask comes from lengths, because the pad id can be a real token
      (Qwen3-Embedding pads with <|endoftext|>, the token it also appends to every sequence).
    * vocab_size counts the added tokens too: it is the number of rows the embedding must have at least.
    * Any padding/truncation stored in tokenizer.json is switched off at load; batch_encode does its own.
    * A checkpoint without a chat template, or without an EOS token, still works, with a fallback: the built-in
      DEFAULT_CHAT_TEMPLATE, or no stop token (every completion runs to the length limit). Each fallback warns
      once per tokenizer, when it is first used, naming what is missing and what follows from it. Encoders need
      neither, so nothing is said at load.
    * Text files that are not UTF-8 raise ValueError naming the file, the line and the byte.
"""

import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer

from .chat_template import DEFAULT_CHAT_TEMPLATE, SPECIAL_TOKEN_KEYS, render_chat_template
from .config import read_json, read_utf8

# transformers writes int(1e30) as model_max_length when a checkpoint sets no limit.
_NO_LIMIT = 10**12


class Tokenizer:
    """Encode/decode text and render chats for one checkpoint. Build it with load_tokenizer(path)."""

    def __init__(self, backend: HFTokenizer, special_tokens: dict | None = None, chat_template=None,
                 add_bos_token: bool | None = None, model_max_length: int | None = None, source: str = "<memory>"):
        self.backend = backend
        self.backend.no_padding()
        self.backend.no_truncation()
        self.source = source
        # Only the tokens the checkpoint sets: these are the strings a chat template sees.
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        for key, token in self.special_tokens.items():
            if backend.token_to_id(token) is None:
                raise ValueError(f"{source}: {key} {token!r} is not in the vocabulary of tokenizer.json")
        # chat_template: None, a Jinja string, or {name: Jinja string}.
        self.chat_templates = {"default": chat_template} if isinstance(chat_template, str) else chat_template
        self.add_bos_token = add_bos_token
        self.model_max_length = model_max_length
        self._warned = set()  # fallbacks already announced by this tokenizer

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"{self.source}: {message}", stacklevel=3)

    # ---- special tokens -------------------------------------------------------------------------------------
    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    @property
    def pad_token(self) -> str | None:
        """The pad token, or the EOS token when the checkpoint sets no pad token."""
        return self.special_tokens.get("pad_token", self.eos_token)

    @property
    def unk_token(self) -> str | None:
        return self.special_tokens.get("unk_token")

    @property
    def bos_token_id(self) -> int | None:
        return self.token_to_id(self.bos_token) if self.bos_token is not None else None

    @property
    def eos_token_id(self) -> int | None:
        """The id of the EOS token; None (with a warning, once) when the checkpoint sets no eos_token."""
        if self.eos_token is None:
            self._warn_once("eos", "the tokenizer has no eos_token (tokenizer_config.json sets none), so generation "
                                   "has no stop token: every completion runs to the length limit, and SFT targets "
                                   "end without one")
            return None
        return self.token_to_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self.token_to_id(self.pad_token) if self.pad_token is not None else None

    @property
    def unk_token_id(self) -> int | None:
        return self.token_to_id(self.unk_token) if self.unk_token is not None else None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    # ---- encode / decode ------------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, found {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def batch_encode(self, texts, *, padding_side: str = "left", max_length: int | None = None,
                     add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise and pad a batch. Returns input_ids (B, T) and attention_mask (B, T), both torch.long.

        T = the longest row after truncation. Truncation cuts text from the right and keeps the tokens the
        post-processor adds (a Qwen3-Embedding row of max_length still ends in <|endoftext|>).
        padding_side "left" puts pads before the text (what generation and last-token pooling want).
        """
        if isinstance(texts, str):
            raise TypeError("batch_encode expects a list of strings, found one str (wrap it in a list)")
        texts = list(texts)
        if not texts:
            raise ValueError("batch_encode needs at least one text")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', found {padding_side!r}")
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be >= 1, found {max_length}")
            self.backend.enable_truncation(max_length, direction="right")
        try:
            rows = [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)]
        finally:
            self.backend.no_truncation()

        T = max(len(r) for r in rows)
        pad_id = self.pad_token_id
        if pad_id is None:
            if any(len(r) != T for r in rows):
                raise ValueError(f"{self.source}: rows of different lengths need padding, but the tokenizer has "
                                 "neither a pad_token nor an eos_token")
            pad_id = 0
        input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(rows), T), dtype=torch.long)    # (B, T)
        for b, row in enumerate(rows):
            n = len(row)
            start = T - n if padding_side == "left" else 0
            input_ids[b, start:start + n] = torch.tensor(row, dtype=torch.long)
            attention_mask[b, start:start + n] = 1
        return input_ids, attention_mask

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens: bool = True) -> list[str]:
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    # ---- chat -----------------------------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        """True when the checkpoint ships a template; otherwise DEFAULT_CHAT_TEMPLATE is used (with a warning)."""
        return bool(self.chat_templates)

    def get_chat_template(self, chat_template: str | None = None, tools=None) -> str:
        """The Jinja source to use: a named template, a given source, the checkpoint's, or the built-in one.

        With several named templates (transformers' list form) the choice is: the name passed, else
        "tool_use" when tools are given and it exists, else "default".
        """
        templates = self.chat_templates or {}
        if chat_template is not None:
            return templates.get(chat_template, chat_template)
        if not templates:
            self._warn_once("chat_template", "the checkpoint has no chat template (no chat_template in "
                                             "tokenizer_config.json, no chat_template.jinja); chats are rendered "
                                             "with minigrpo's DEFAULT_CHAT_TEMPLATE, which this model was not "
                                             "trained on: it may not recognise where its turn ends, and write "
                                             "until the length limit")
            return DEFAULT_CHAT_TEMPLATE
        if tools is not None and "tool_use" in templates:
            return templates["tool_use"]
        if "default" in templates:
            return templates["default"]
        raise ValueError(f"{self.source}: several chat templates {sorted(templates)} and none named 'default'; "
                         "pass chat_template=<name>")

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, *, tools=None, documents=None,
                            chat_template: str | None = None, **kwargs) -> str:
        """Render `messages` with the checkpoint's template (see chat_template.py). Returns text, not ids."""
        source = self.get_chat_template(chat_template, tools)
        return render_chat_template(source, messages, add_generation_prompt=add_generation_prompt, tools=tools,
                                    documents=documents, special_tokens=self.special_tokens, **kwargs)

    def encode_chat(self, messages, add_generation_prompt: bool = True, **kwargs) -> list[int]:
        """Render and tokenise a chat: the ids of transformers' apply_chat_template(..., tokenize=True).

        The template writes BOS itself, so the text is encoded with add_special_tokens=False (no double BOS).
        """
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
                f"eos={self.eos_token!r}, pad={self.pad_token!r}, chat_template={self.has_chat_template})")


def _token_string(value, path: Path, key: str) -> str | None:
    """A special token as tokenizer_config.json spells it: null, "text", or {"content": "text", ...}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: key {key!r} must be a string, null or {{\"content\": str, ...}}, found {value!r}")


def _read_chat_template(value, path: Path):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and "name" in t and "template" in t for t in value):
        return {t["name"]: t["template"] for t in value}
    raise ValueError(f"{path}: key 'chat_template' must be a string or a list of {{\"name\", \"template\"}}, "
                     f"found {type(value).__name__}")


def load_tokenizer(path) -> Tokenizer:
    """Load the tokenizer of a checkpoint folder (tokenizer.json + optional tokenizer_config.json), or of a .gguf
    file (rebuilt in memory from its metadata: see gguf_tokenizer.py)."""
    path = Path(path)
    if path.suffix == ".gguf":
        from .gguf_tokenizer import load_gguf_tokenizer
        return load_gguf_tokenizer(path)
    tok_file = path / "tokenizer.json"
    if not tok_file.is_file():
        raise FileNotFoundError(f"expected {tok_file} (a Hugging Face fast-tokenizer file), found no such file")
    try:
        backend = HFTokenizer.from_file(str(tok_file))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise ValueError(f"{tok_file} could not be read as a tokenizer.json: {e}") from e

    config = {}
    cfg_file = path / "tokenizer_config.json"
    if cfg_file.is_file():
        config = read_json(cfg_file)
        if not isinstance(config, dict):
            raise ValueError(f"{cfg_file}: expected a JSON object, found {type(config).__name__}")

    special = {k: _token_string(config.get(k), cfg_file, k) for k in SPECIAL_TOKEN_KEYS}
    chat_template = _read_chat_template(config.get("chat_template"), cfg_file)
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        chat_template = read_utf8(jinja_file)
    max_len = config.get("model_max_length")
    max_len = int(max_len) if isinstance(max_len, (int, float)) and max_len < _NO_LIMIT else None
    return Tokenizer(backend, special, chat_template, add_bos_token=config.get("add_bos_token"),
                     model_max_length=max_len, source=str(path))
