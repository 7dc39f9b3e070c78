"""Read a GGUF file, llama.cpp's one-file checkpoint: header, metadata, tensor table, and the tensors themselves.

Why a reader of our own: the format is small and worth reading, and loading a .gguf then needs no extra package
(ggml's `gguf` package is used only by the tests, as an oracle). The file is memory-mapped, so only the tensors
asked for are read, one at a time.

The container (all numbers little-endian):

    magic       4 bytes "GGUF"
    version     uint32: 2 or 3 (version 1 wrote 32-bit counts and is not read)
    n_tensors   uint64
    n_kv        uint64
    n_kv  x     key (string), value type (uint32), value
    n_tensors x name (string), n_dims (uint32), dims (n_dims x uint64, innermost first), ggml type (uint32),
                offset (uint64, from the start of the data section)
    padding up to a multiple of `general.alignment` (32 when the key is absent), then the data section

    string  = uint64 byte count + UTF-8 bytes
    value   = by type: 0 uint8, 1 int8, 2 uint16, 3 int16, 4 uint32, 5 int32, 6 float32, 7 bool (1 byte),
              8 string, 9 array (item type uint32, count uint64, items), 10 uint64, 11 int64, 12 float64

Shapes: ggml lists dims innermost first (ne[0] is the row length); numpy and torch list them outermost first, so
every shape here is the reverse of the file's. A Linear weight (out, in) is stored with dims [in, out].
Byte size of a tensor: (number of values / BLOCK) * SIZE, with BLOCK and SIZE from gguf_dequant.GGML_TYPES.
"""

import mmap
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from .gguf_dequant import GGML_TYPES, dequantize, type_name

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# metadata value type -> struct format of the fixed-size ones; 8 (string) and 9 (array) are read apart
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    """One entry of the tensor table: where the tensor's bytes are and how to read them."""

    name: str
    shape: tuple   # outermost first (the reverse of the file's dims)
    ggml_type: int
    offset: int    # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)


class GGUFFile:
    """An opened GGUF: `metadata` {key: value}, `tensors` {name: GGUFTensor}, and `load(name)` -> float32 array."""

    def __init__(self, path: Path, version: int, metadata: dict, tensors: dict, buffer):
        self.path, self.version, self.metadata, self.tensors = path, version, metadata, tensors
        self._buffer = buffer

    @property
    def architecture(self) -> str:
        return self.require("general.architecture")

    def require(self, key: str):
        """The value of a metadata key that must be present."""
        if key not in self.metadata:
            raise ValueError(f"{self.path}: metadata key {key!r} is missing")
        return self.metadata[key]

    def load(self, name: str) -> np.ndarray:
        """The tensor `name` dequantized to a new float32 array of its shape."""
        t = self.tensors[name]
        raw = np.frombuffer(self._buffer, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        try:
            return dequantize(raw, t.ggml_type, t.shape)
        except ValueError as e:
            raise ValueError(f"{self.path}: tensor {name!r} (shape {list(t.shape)}): {e}") from None

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, version={self.version}, {len(self.metadata)} keys, " \
               f"{len(self.tensors)} tensors)"


class _Cursor:
    """Reads the header in order, and names the file, the byte offset and the item when the file ends early."""

    def __init__(self, buffer, path):
        self.buffer, self.path, self.pos, self.size = buffer, path, 0, len(buffer)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.size:
            raise ValueError(f"{self.path} is truncated: expected {n} bytes of {what} at byte {self.pos}, "
                             f"but the file ends at byte {self.size}")
        data = self.buffer[self.pos:self.pos + n]
        self.pos += n
        return data

    def scalar(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.scalar("<Q", f"the length of {what}")
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path}: {what} at byte {self.pos - n} is not UTF-8 ({e})") from None

    def value(self, vtype: int, what: str):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            item_type = self.scalar("<I", f"the item type of {what}")
            count = self.scalar("<Q", f"the length of {what}")
            if item_type in _SCALARS:  # one read for the whole array: token types, scores, ...
                dtype = np.dtype(_SCALARS[item_type])
                raw = self.take(count * dtype.itemsize, f"{count} items of {what}")
                return np.frombuffer(raw, dtype=dtype).tolist()
            return [self.value(item_type, f"item {i} of {what}") for i in range(count)]
        raise ValueError(f"{self.path}: {what} has the unknown value type {vtype} (byte {self.pos - 4}); "
                         f"expected one of 0-12")


def read_gguf(path) -> GGUFFile:
    """Parse the header and tensor table of the GGUF at `path` (memory-mapped; no tensor is read yet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    with open(path, "rb") as f:
        size = path.stat().st_size
        if size < len(MAGIC):
            raise ValueError(f"{path} is truncated: expected at least the 4-byte magic 'GGUF', found {size} bytes")
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cur = _Cursor(buffer, path)

    magic = cur.take(4, "the magic")
    if magic != MAGIC:
        raise ValueError(f"{path} is not a GGUF file: expected the magic bytes b'GGUF', found {magic!r}")
    version = cur.scalar("<I", "the version")
    if version not in VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = " (the file looks big-endian; only little-endian GGUF is read)" if swapped in VERSIONS else ""
        raise ValueError(f"{path}: unsupported GGUF version {version}{hint}; expected one of {VERSIONS}")
    n_tensors = cur.scalar("<Q", "the tensor count")
    n_kv = cur.scalar("<Q", "the metadata key count")

    metadata = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        vtype = cur.scalar("<I", f"the value type of {key!r}")
        if key in metadata:
            raise ValueError(f"{path}: metadata key {key!r} appears twice")
        metadata[key] = cur.value(vtype, f"the value of {key!r}")

    table = [_tensor_entry(cur, i) for i in range(n_tensors)]
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ValueError(f"{path}: general.alignment must be a positive integer, found {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment  # the header end, rounded up to the alignment

    tensors = {}
    for name, shape, ggml_type, offset in table:
        if name in tensors:
            raise ValueError(f"{path}: tensor {name!r} appears twice in the tensor table")
        tensor = GGUFTensor(name, shape, ggml_type, data_start + offset, _byte_size(path, name, shape, ggml_type))
        if tensor.offset + tensor.nbytes > size:
            raise ValueError(f"{path} is truncated: tensor {name!r} ({tensor.type_name}, shape {list(shape)}) "
                             f"needs bytes {tensor.offset} to {tensor.offset + tensor.nbytes}, but the file ends "
                             f"at byte {size}")
        tensors[name] = tensor
    return GGUFFile(path, version, metadata, tensors, buffer)


def _tensor_entry(cur: _Cursor, i: int):
    """(name, shape outermost first, ggml type, offset in the data section) of tensor-table entry i."""
    name = cur.string(f"the name of tensor {i}")
    n_dims = cur.scalar("<I", f"the dimension count of tensor {name!r}")
    dims = [cur.scalar("<Q", f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
    ggml_type = cur.scalar("<I", f"the type of tensor {name!r}")
    offset = cur.scalar("<Q", f"the data offset of tensor {name!r}")
    return name, tuple(reversed(dims)), ggml_type, offset


def _byte_size(path, name, shape, ggml_type) -> int:
    if ggml_type not in GGML_TYPES:
        raise ValueError(f"{path}: tensor {name!r} has the unknown ggml type {ggml_type}")
    type_, block, size = GGML_TYPES[ggml_type]
    row = shape[-1] if shape else 1
    if row % block != 0:
        raise ValueError(f"{path}: tensor {name!r} ({type_}) has rows of {row} values, not a multiple of the "
                         f"{block}-value block")
    return prod(shape) // block * size
