"""Reading Hugging Face safetensors checkpoints: one `model.safetensors`, or shards listed by an index.

On disk (safetensors): an 8-byte little-endian header length N, N bytes of JSON header mapping each tensor name to
{dtype, shape, data_offsets}, then the raw row-major bytes. A sharded checkpoint adds `model.safetensors.index.json`:

    {"metadata": {"total_size": ...}, "weight_map": {tensor name: shard file name}}

Shard names are taken from the weight_map, never constructed: transformers writes `model-00001-of-00002.safetensors`
but other tools use other patterns (DeepSeek's distills use `-of-000002`).
Headers are read first (cheap: no tensor data), so a checkpoint that does not fit the model fails before any
weight is loaded.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    """Where one stored tensor lives and what its header says, before its data is read."""

    name: str  # the key as stored in the file
    file: Path
    shape: tuple
    dtype: str  # safetensors spelling, e.g. "BF16"


def checkpoint_files(path):
    """The safetensors files of the checkpoint folder `path`, plus the index's weight_map (or None when single)."""
    folder = Path(path)
    index_path, single_path = folder / INDEX_FILE, folder / SINGLE_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{index_path}: expected JSON with a 'weight_map' object "
                             f"({type(e).__name__}: {e})") from None
        files = sorted({folder / name for name in weight_map.values()})
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"{index_path} lists the shard {file.name}, which is not in {folder}")
        return files, weight_map
    if single_path.is_file():
        return [single_path], None
    raise FileNotFoundError(f"no weights in {folder}: expected {SINGLE_FILE} or {INDEX_FILE}")


def _open(file, device="cpu"):
    try:
        return safe_open(str(file), framework="pt", device=str(device))
    except SafetensorError as e:
        raise ValueError(f"corrupt or truncated safetensors file {file}: {e}") from None


def read_tensor_infos(path):
    """{stored name: TensorInfo} for every tensor of the checkpoint, from the headers only."""
    files, weight_map = checkpoint_files(path)
    infos = {}
    for file in files:
        with _open(file) as f:
            for name in f.keys():
                piece = f.get_slice(name)
                if name in infos:
                    raise ValueError(f"tensor {name!r} is stored twice: in {infos[name].file} and in {file}")
                infos[name] = TensorInfo(name, file, tuple(piece.get_shape()), piece.get_dtype())
    if weight_map is not None:
        for name, file_name in weight_map.items():
            if name not in infos:
                raise ValueError(f"{Path(path) / INDEX_FILE} maps {name!r} to {file_name}, "
                                 f"but that file holds no such tensor")
    return infos


def load_tensors(infos, *, dtype=None, device="cpu"):
    """Read the listed tensors (iterable of TensorInfo), one file open at a time -> {stored name: tensor}.

    Each tensor is cast to `dtype` (when given) right after reading, so only one copy of each weight exists.
    """
    by_file = {}
    for info in infos:
        by_file.setdefault(info.file, []).append(info.name)
    tensors = {}
    for file, names in by_file.items():
        with _open(file, device) as f:
            for name in names:
                try:
                    t = f.get_tensor(name)
                except SafetensorError as e:
                    raise ValueError(f"corrupt or truncated safetensors file {file}: tensor {name!r}: {e}") from None
                tensors[name] = t.to(dtype) if dtype is not None else t
    return tensors


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_dtype(dtype, config_dtype=None):
    """torch.dtype from a torch.dtype, a name ('bfloat16', 'bf16', ...) or None/'auto' -> the config's dtype or fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        dtype = config_dtype or "float32"
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]
