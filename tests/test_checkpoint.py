"""Loading errors are for people: each names the file, the key, and expected vs found."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, read_tensor_infos
from minigrpo.models.checkpoint import resolve_dtype


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llama"), arch="llama", num_hidden_layers=1)


@pytest.fixture
def ckpt(tiny_llama, tmp_path):
    """A fresh, editable copy of the tiny checkpoint."""
    return shutil.copytree(tiny_llama, tmp_path / "ckpt")


def _edit(path, fn):
    state = load_file(path / "model.safetensors")
    fn(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named_with_its_expected_shape(ckpt):
    _edit(ckpt, lambda s: s.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'model.layers.0.mlp.up_proj.weight': expected shape "
                                         r"\[128, 64\], found nothing"):
        load_causal_lm(ckpt)


def test_wrong_shape_names_key_file_expected_and_found(ckpt):
    _edit(ckpt, lambda s: s.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(ValueError, match=r"wrong shape for 'model.norm.weight' in model.safetensors: "
                                         r"expected \[64\], found \[63\]"):
        load_causal_lm(ckpt)


def test_unexpected_tensor_is_named_with_its_file(ckpt):
    _edit(ckpt, lambda s: s.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(16)}))
    with pytest.raises(ValueError, match=r"unexpected tensor 'model.layers.0.self_attn.q_norm.weight' in "
                                         r"model.safetensors \(shape \[16\]\)"):
        load_causal_lm(ckpt)


def test_all_problems_are_listed_in_one_error(ckpt):
    _edit(ckpt, lambda s: (s.pop("lm_head.weight"), s.update({"extra.weight": torch.ones(2)})))
    with pytest.raises(ValueError) as err:
        load_causal_lm(ckpt)
    assert "missing tensor 'lm_head.weight'" in str(err.value) and "unexpected tensor 'extra.weight'" in str(err.value)
    assert str(ckpt) in str(err.value)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_safetensors_file_is_named(ckpt, cut):
    file = ckpt / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError, match=f"corrupt or truncated safetensors file {file}"):
        load_causal_lm(ckpt)


def test_garbage_safetensors_file_is_named(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated safetensors file .*model.safetensors"):
        load_causal_lm(ckpt)


def test_missing_config_json_is_named(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"no config.json found: expected the file {ckpt}/config.json"):
        load_causal_lm(ckpt)


def test_missing_weights_are_named(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="expected model.safetensors or model.safetensors.index.json"):
        load_causal_lm(ckpt)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma"}, "unsupported model_type 'gemma'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope type 'yarn'"),
])
def test_unsupported_config_in_a_checkpoint_names_the_file(ckpt, change, message):
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=f"config.json: {message}"):
        load_causal_lm(ckpt)


def test_shard_file_names_come_from_the_index(tmp_path):
    """DeepSeek-style shard names (6-digit count) load because names are read, not constructed."""
    path = make_tiny_checkpoint(tmp_path, arch="llama", shards=2, num_hidden_layers=1)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    renames = {f"model-0000{i}-of-00002.safetensors": f"model-0000{i}-of-000002.safetensors" for i in (1, 2)}
    for old, new in renames.items():
        (path / old).rename(path / new)
    index["weight_map"] = {k: renames[v] for k, v in index["weight_map"].items()}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert len(read_tensor_infos(path)) == len(index["weight_map"])
    load_causal_lm(path)


def test_index_naming_a_missing_shard_is_named(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="llama", shards=2, num_hidden_layers=1)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lists the shard model-00002-of-00002.safetensors"):
        load_causal_lm(path)


def test_index_key_absent_from_its_shard_is_named(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="llama", shards=2, num_hidden_layers=1)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.ghost.weight"] = "model-00001-of-00002.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="maps 'model.ghost.weight' to model-00001-of-00002.safetensors, but that "
                                         "file holds no such tensor"):
        load_causal_lm(path)


def test_dtype_none_follows_config_and_explicit_dtype_wins(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="qwen3", dtype="bfloat16", num_hidden_layers=1)
    assert load_causal_lm(path).model.norm.weight.dtype == torch.bfloat16
    assert load_causal_lm(path, dtype="float32").model.norm.weight.dtype == torch.float32
    assert resolve_dtype(None, None) == torch.float32 and resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        resolve_dtype("int8")


def test_loaded_model_has_no_meta_tensors_left(tiny_llama):
    lm = load_causal_lm(tiny_llama)
    assert not any(t.is_meta for t in list(lm.parameters()) + list(lm.buffers()))
