"""A sentence-transformers folder: which modules it chains, how it pools, how long its inputs may be.

Files read (all JSON), as sentence-transformers saves them:

    modules.json     [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}, ...]
                     Module types are recognised by class name (the module path differs between versions):
                       Transformer  the model; config.json, weights, tokenizer and sentence_bert_config.json lie
                                    under its "path" ("" = the folder itself, "0_Transformer" in old folders)
                       Pooling      <path>/config.json gives the pooling mode
                       Normalize    L2 normalisation (no files; the folder need not exist)
                     Any other module (Dense, ...) is an error: without it the embeddings would silently differ.
    <Pooling>/config.json
                     the mode in either spelling: {"pooling_mode": "mean"} (sentence-transformers >= 6) or the
                     legacy booleans {"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false, ...}
                     (none true means mean, as sentence-transformers reads it). Supported modes: "mean" (masked
                     mean), "cls" (the first real token) and "lasttoken" (the last real token), named here "mean",
                     "cls" and "last". Max, sqrt-length, weighted and concatenated modes are errors.
    <Transformer>/sentence_bert_config.json
                     {"max_seq_length": 256, "do_lower_case": false}: inputs are truncated to max_seq_length tokens,
                     the [CLS]/[SEP] the tokenizer adds included; do_lower_case lowercases the text first.

A folder's embeddings are always L2-normalised by Encoder.embed; `normalize` only records whether the folder
asked for it.
"""

import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tokenizers import normalizers

from .config import read_json

MODULES_FILE = "modules.json"
SENTENCE_CONFIG_FILE = "sentence_bert_config.json"
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")
# sentence-transformers' mode name -> Encoder's pooling name
POOLING_MODES = {"mean": "mean", "cls": "cls", "lasttoken": "last"}
# the legacy boolean keys, in the order sentence-transformers reads them
_LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                        "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True)
class SentenceFolder:
    """What a sentence-transformers folder says about its encoder."""

    model_path: Path          # the Transformer module's folder: config.json, weights, tokenizer
    pooling: str | None       # "mean" | "cls" | "last", or None when modules.json lists no Pooling
    normalize: bool           # modules.json lists Normalize
    max_seq_length: int | None  # from sentence_bert_config.json, None when absent
    do_lower_case: bool


def read_pooling_mode(file):
    """The Encoder pooling name ("mean", "cls", "last") from a Pooling module's config.json."""
    config = read_json(file)
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
    else:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if len(modes) != 1:
        raise ValueError(f"{file}: pooling combines the modes {modes}; expected exactly one of "
                         f"{list(POOLING_MODES)}")
    if modes[0] not in POOLING_MODES:
        raise ValueError(f"{file}: unsupported pooling mode {modes[0]!r}; expected one of {list(POOLING_MODES)}")
    return POOLING_MODES[modes[0]]


def read_sentence_folder(path):
    """SentenceFolder of `path`, or None when `path` has no modules.json (a plain checkpoint folder)."""
    folder = Path(path)
    modules_file = folder / MODULES_FILE
    if not modules_file.is_file():
        return None
    modules = read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ValueError(f"{modules_file}: expected a list of {{\"path\", \"type\", ...}} objects")
    by_kind = {}
    for i, module in enumerate(modules):
        kind = module["type"].rsplit(".", 1)[-1]
        if kind not in KNOWN_MODULES:
            raise ValueError(f"{modules_file}: entry {i} is the module {module['type']!r}, which is not supported; "
                             f"expected only {list(KNOWN_MODULES)}")
        if kind in by_kind:
            raise ValueError(f"{modules_file}: lists {kind} twice (entries {by_kind[kind][0]} and {i})")
        by_kind[kind] = (i, folder / module.get("path", ""))
    if "Transformer" not in by_kind:
        raise ValueError(f"{modules_file}: lists no Transformer module, so there is no model to load")
    model_path = by_kind["Transformer"][1]
    pooling = read_pooling_mode(by_kind["Pooling"][1] / "config.json") if "Pooling" in by_kind else None

    config_file = model_path / SENTENCE_CONFIG_FILE
    config = read_json(config_file) if config_file.is_file() else {}
    max_seq_length = config.get("max_seq_length")
    if max_seq_length is not None and (not isinstance(max_seq_length, int) or max_seq_length < 1):
        raise ValueError(f"{config_file}: max_seq_length must be a positive integer or null, found {max_seq_length!r}")
    return SentenceFolder(model_path=model_path, pooling=pooling, normalize="Normalize" in by_kind,
                          max_seq_length=max_seq_length, do_lower_case=bool(config.get("do_lower_case", False)))


def lowercase_inputs(tokenizer):
    """Put a Lowercase step in front of the tokenizer's normalizer, as sentence-transformers does for
    do_lower_case (lowercasing twice is the same as once, so a tokenizer that already lowercases is unchanged)."""
    steps = [normalizers.Lowercase()]
    if tokenizer.backend.normalizer is not None:
        steps.append(tokenizer.backend.normalizer)
    tokenizer.backend.normalizer = normalizers.Sequence(steps)


def extract_model_zip(zip_path, folder):
    """Extract a zipped model folder into `folder` once; return the model folder (see below).

    Idempotent: when `folder` already exists, nothing is read or written. Atomic: the members are extracted into
    a temporary folder next to `folder`, which is then renamed to `folder`, so an interrupted extraction never
    leaves a partial `folder` that a later call would take for a finished one.
    The returned model folder is `folder` itself, or its one subfolder when every member of the zip lies under a
    single top-level directory.
    """
    zip_path, folder = Path(zip_path), Path(folder)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
        try:
            try:
                with zipfile.ZipFile(zip_path) as archive:
                    archive.extractall(tmp)  # extractall drops absolute paths and ".." from member names
            except zipfile.BadZipFile as e:
                raise ValueError(f"{zip_path} is not a readable zip archive: {e}") from None
            try:
                tmp.rename(folder)
            except OSError:
                if not folder.is_dir():  # not a concurrent extraction that finished first
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
