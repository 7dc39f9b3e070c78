"""GGUF container and dequantizers (minigrpo/models/gguf_reader.py, gguf_dequant.py): blocks worked by hand,
bit-equality with ggml's `gguf` package on random blocks, the header against gguf's own reader, and errors for
truncated or foreign files."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf_tiny import write_tiny_gguf  # noqa: E402

from minigrpo.models.gguf_dequant import DEQUANTIZE, GGML_TYPES, _k_scales, dequantize  # noqa: E402
from minigrpo.models.gguf_reader import read_gguf  # noqa: E402

F16 = {0.25: (0x00, 0x34), 0.5: (0x00, 0x38), 2.0: (0x00, 0x40), -1.0: (0x00, 0xBC)}  # little-endian bytes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, tied=False)
    return path


# ---- blocks worked by hand ------------------------------------------------------------------------------------
def _block(*parts):
    return np.array([b for part in parts for b in part], dtype=np.uint8)


def test_q8_0_block_is_scale_times_int8():
    q = np.arange(32) - 16                                   # -16 .. 15
    raw = _block(F16[0.5], q.astype(np.int8).view(np.uint8))
    np.testing.assert_array_equal(dequantize(raw, 8, (32,)), 0.5 * q)


def _nibble_bytes():
    """16 bytes: byte j holds j in its low nibble (value j) and 15 - j in its high nibble (value 16 + j)."""
    j = np.arange(16)
    return (j | ((15 - j) << 4)).astype(np.uint8), np.concatenate([j, 15 - j])  # bytes, the 32 stored q


def test_q4_0_block_is_scale_times_nibble_minus_8():
    packed, q = _nibble_bytes()
    np.testing.assert_array_equal(dequantize(_block(F16[2.0], packed), 2, (32,)), 2.0 * (q - 8))


def test_q4_1_block_is_scale_times_nibble_plus_min():
    packed, q = _nibble_bytes()
    raw = _block(F16[0.25], F16[-1.0], packed)
    np.testing.assert_array_equal(dequantize(raw, 3, (32,)), 0.25 * q - 1.0)  # e.g. value 0: -1, value 16: 2.75


def test_bf16_is_the_top_half_of_a_float32():
    values = np.array([1.5, -2.0, 3.140625], dtype=np.float32)  # exactly representable in bfloat16
    raw = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    np.testing.assert_array_equal(dequantize(raw, 30, (3,)), values)


def test_q4_k_six_bit_scales_and_mins_unpack_as_packed():
    sc, mn = [1, 2, 3, 4, 33, 34, 35, 63], [5, 6, 7, 8, 40, 0, 17, 62]
    # bytes 0-3: scale j (low 6 bits) + top 2 bits of scale j+4; 4-7 the same for mins;
    # 8-11: low 4 bits of scale j+4 | low 4 bits of min j+4 in the high nibble
    packed = [sc[j] | (sc[j + 4] >> 4) << 6 for j in range(4)] + [mn[j] | (mn[j + 4] >> 4) << 6 for j in range(4)]
    packed += [(sc[j + 4] & 0xF) | (mn[j + 4] & 0xF) << 4 for j in range(4)]
    got_sc, got_mn = _k_scales(np.array([packed], dtype=np.uint8))
    assert got_sc.tolist() == [sc] and got_mn.tolist() == [mn]


# ---- against ggml's gguf package -------------------------------------------------------------------------------
SCALE_BYTES = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208]}  # float16 fields


def _random_raw(qtype, n_blocks, rng):
    """Random bytes of n_blocks blocks, with every float16 field set to a finite value in [-2, 2]."""
    if qtype in (Q.F32, Q.F16, Q.BF16):
        values = rng.uniform(-2, 2, 64 * n_blocks).astype(np.float32)
        return gguf.quants.quantize(values, qtype).view(np.uint8).reshape(-1), (64 * n_blocks,)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for start in SCALE_BYTES[qtype]:
        raw[:, start:start + 2] = rng.uniform(-2, 2, (n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(-1), (n_blocks * block,)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K],
                         ids=lambda q: q.name)
def test_dequantize_is_bit_identical_to_gguf_package(qtype):
    raw, shape = _random_raw(qtype, 24, np.random.default_rng(int(qtype)))
    ours = dequantize(raw, int(qtype), shape)
    theirs = gguf.quants.dequantize(raw, qtype).reshape(shape)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


def test_every_dequantizer_is_tested_above():
    assert set(DEQUANTIZE) == {int(q) for q in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K)}


def test_type_table_matches_ggml():
    for type_id, (name, block, size) in GGML_TYPES.items():
        qtype = Q(type_id)
        assert (qtype.name, *gguf.GGML_QUANT_SIZES[qtype]) == (name, block, size)


def test_header_and_tensor_table_match_gguf_reader(tiny):
    ours, theirs = read_gguf(tiny), gguf.GGUFReader(str(tiny))
    fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert ours.metadata == fields
    assert ours.version == 3 and ours.architecture == "llama"
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert (mine.shape, mine.ggml_type, mine.offset, mine.nbytes) == \
               (tuple(int(n) for n in reversed(t.shape)), int(t.tensor_type), t.data_offset, t.n_bytes)
        np.testing.assert_array_equal(ours.load(t.name), gguf.quants.dequantize(t.data, t.tensor_type))


# ---- errors ------------------------------------------------------------------------------------------------
def _copy(src, dst, data=None, cut=None):
    raw = bytearray(src.read_bytes())
    if data is not None:
        raw[:len(data)] = data
    dst.write_bytes(bytes(raw[:cut]))
    return dst


@pytest.mark.parametrize("where", ["magic", "header", "metadata", "tensor data"])
def test_truncated_file_names_file_and_what_was_expected(tiny, tmp_path, where):
    data_start = min(t.offset for t in read_gguf(tiny).tensors.values())
    cut = {"magic": 2, "header": 10, "metadata": data_start // 2, "tensor data": tiny.stat().st_size - 1}[where]
    bad = _copy(tiny, tmp_path / "cut.gguf", cut=cut)
    with pytest.raises(ValueError, match="cut.gguf is truncated") as e:
        read_gguf(bad)
    assert "expected" in str(e.value) or "needs bytes" in str(e.value)
    if where == "tensor data":
        assert repr(list(read_gguf(tiny).tensors)[-1]) in str(e.value)  # the last tensor is the one cut


def test_bad_magic_is_rejected(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"not a GGUF file: expected the magic bytes b'GGUF', found b'GGML'"):
        read_gguf(_copy(tiny, tmp_path / "x.gguf", data=b"GGML"))


@pytest.mark.parametrize("version, hint", [(1, ""), (3 << 24, "big-endian")])
def test_unsupported_version_is_rejected(tiny, tmp_path, version, hint):
    bad = _copy(tiny, tmp_path / "v.gguf", data=b"GGUF" + version.to_bytes(4, "little"))
    with pytest.raises(ValueError, match=f"unsupported GGUF version {version}.*{hint}"):
        read_gguf(bad)


def test_unsupported_tensor_type_names_type_and_tensor(tmp_path):
    path = tmp_path / "q5.gguf"
    write_tiny_gguf(path, types={"blk.0.attn_q.weight": Q.Q5_0})
    file = read_gguf(path)  # the table reads: Q5_0 has a known block size
    with pytest.raises(ValueError, match=r"tensor 'blk.0.attn_q.weight'.*tensor type Q5_0 cannot be dequantized"):
        file.load("blk.0.attn_q.weight")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF file at .*nothing.gguf"):
        read_gguf(tmp_path / "nothing.gguf")
