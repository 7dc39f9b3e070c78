"""Dequantize ggml tensor data (the payload of a GGUF file) to float32 numpy arrays.

A ggml tensor row of n values is cut into blocks of BLOCK values, each stored in SIZE bytes. In the formulas
below x is the value, q the stored small integer, d and m per-block float16 scale and offset.

    type  BLOCK SIZE  layout of one block                                  value
    F32       1    4  float32                                              x
    F16       1    2  float16                                              x
    BF16      1    2  the top 16 bits of a float32                         x
    Q8_0     32   34  d | q[32] int8                                       x = d * q
    Q4_0     32   18  d | 16 bytes of 4-bit q                              x = d * (q - 8)
    Q4_1     32   20  d | m | 16 bytes of 4-bit q                          x = d * q + m
    Q4_K    256  144  d | dmin | 12 bytes: 8 six-bit (sc, mn) pairs |      x = (d * sc_j) * q - (dmin * mn_j)
                      128 bytes of 4-bit q                                     for the 32 values of sub-block j
    Q6_K    256  210  128 bytes low 4 bits | 64 bytes high 2 bits |        x = (d * sc_j) * (q - 32)
                      16 int8 scales sc | d                                    for the 16 values of sub-block j

Nibble order: in Q4_0 / Q4_1 byte i holds value i in its low 4 bits and value i + 16 in its high 4 bits. Q4_K
packs 32 bytes per pair of sub-blocks: sub-block 2c in the low nibbles, 2c + 1 in the high ones. Q6_K works per
half of 128 values: its 64 low-bit bytes give values 0..63 from their low nibbles and 64..127 from their high
nibbles; high-bit byte i gives the top two bits of values i, i + 32, i + 64, i + 96 (bits 0-1, 2-3, 4-5, 6-7).

The arithmetic is float32 in the order written above, as in ggml's reference C code, so the values are
bit-identical to llama.cpp's and to the `gguf` package's (tests/test_gguf_reader.py checks that).
"""

import numpy as np

QK_K = 256  # values per K-quant super-block

# ggml type id -> (name, BLOCK, SIZE) for every type a GGUF may hold; only those in DEQUANTIZE can be read.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}


def type_name(ggml_type: int) -> str:
    return GGML_TYPES[ggml_type][0] if ggml_type in GGML_TYPES else f"unknown type {ggml_type}"


def _f16(blocks, start):
    """The float16 at bytes [start, start + 2) of each block, as float32: (N, 1)."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(packed):
    """(N, 16k) bytes -> (N, 32k) 4-bit values: every group of 16 bytes gives 16 low nibbles, then 16 high ones."""
    n = packed.shape[0]
    groups = packed.reshape(n, -1, 1, 16)  # (N, k, 1, 16)
    return ((groups >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)) & 0x0F).reshape(n, -1)


def _f32(raw):
    return raw.view(np.float32).astype(np.float32)  # a copy: the caller's bytes may be a read-only map


def _f16_values(raw):
    return raw.view(np.float16).astype(np.float32)


def _bf16(raw):
    # a bfloat16 is the top half of a float32: shift its 16 bits up and read the 32 as a float32
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _q8_0(blocks):
    d = _f16(blocks, 0)                                # (N, 1)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)  # (N, 32)
    return d * q


def _q4_0(blocks):
    d = _f16(blocks, 0)
    q = _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _q4_1(blocks):
    d, m = _f16(blocks, 0), _f16(blocks, 2)
    q = _nibbles(blocks[:, 4:]).astype(np.float32)
    return d * q + m


def _k_scales(packed):
    """Q4_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins, each (N, 8).

    Bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; bytes 8-11 hold the low 4 bits of scales
    4-7 (low nibble) and mins 4-7 (high nibble), whose top 2 bits are the top 2 bits of bytes 0-3 and 4-7.
    """
    lo_sc, lo_mn, rest = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    sc = np.concatenate([lo_sc & 0x3F, (rest & 0x0F) | ((lo_sc >> 2) & 0x30)], axis=1)
    mn = np.concatenate([lo_mn & 0x3F, (rest >> 4) | ((lo_mn >> 2) & 0x30)], axis=1)
    return sc, mn


def _q4_k(blocks):
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k_scales(blocks[:, 4:16])
    scale = (d * sc.astype(np.float32)).reshape(n, 8, 1)     # (N, 8 sub-blocks, 1)
    offset = (dmin * mn.astype(np.float32)).reshape(n, 8, 1)
    qs = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    q = (qs & 0x0F).reshape(n, 8, 32).astype(np.float32)    # (N, 8, 32): low nibbles, then high, per 32 bytes
    return (scale * q - offset).reshape(n, QK_K)


def _q6_k(blocks):
    n = blocks.shape[0]
    ql, qh = blocks[:, 0:128], blocks[:, 128:192]
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (N, 16)
    d = _f16(blocks, 208)
    low = ql.reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    low = (low & 0x0F).reshape(n, 8, 32)                      # per half: 64 low nibbles, then 64 high nibbles
    high = qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    high = (high & 0x03).reshape(n, 8, 32)                    # per half: bits 0-1, 2-3, 4-5, 6-7 of 32 bytes
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    scale = (d * sc).reshape(n, 16, 1)
    return (scale * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


# ggml type id -> function of the raw bytes: plain floats take the flat bytes, block types take (N blocks, SIZE)
_PLAIN = {0: _f32, 1: _f16_values, 30: _bf16}
_BLOCKED = {8: _q8_0, 2: _q4_0, 3: _q4_1, 12: _q4_k, 14: _q6_k}
DEQUANTIZE = {**_PLAIN, **_BLOCKED}


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple) -> np.ndarray:
    """float32 array of `shape` (outermost first) from the tensor's raw bytes (uint8, exactly its byte size).

    A type without a dequantizer raises ValueError naming it; the caller adds the tensor's name.
    """
    if ggml_type not in DEQUANTIZE:
        supported = ", ".join(type_name(t) for t in DEQUANTIZE)
        raise ValueError(f"tensor type {type_name(ggml_type)} cannot be dequantized; supported types: {supported}")
    if ggml_type in _PLAIN:
        return _PLAIN[ggml_type](raw).reshape(shape)
    size = GGML_TYPES[ggml_type][2]
    return _BLOCKED[ggml_type](raw.reshape(-1, size)).reshape(shape)
