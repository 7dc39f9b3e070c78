"""The tiny-checkpoint factory writes the real on-disk format, which transformers reads to the same logits."""

import json

import pytest
import torch
from safetensors import safe_open

from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.models import load_causal_lm, load_tokenizer, read_tensor_infos


def test_llama_files_and_4x_config_spelling(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="llama")
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                               "tokenizer_config.json"}
    config = json.loads((path / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and "dtype" not in config and "rope_parameters" not in config
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_theta"] == 500000.0
    assert not config["tie_word_embeddings"]
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert "lm_head.weight" in f.keys()
    assert config["vocab_size"] >= load_tokenizer(path).vocab_size


def test_qwen3_is_tied_and_stores_no_lm_head(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="qwen3")
    config = json.loads((path / "config.json").read_text())
    assert config["tie_word_embeddings"]
    assert config["head_dim"] != config["hidden_size"] // config["num_attention_heads"]
    keys = set(read_tensor_infos(path))
    assert "lm_head.weight" not in keys and "model.layers.0.self_attn.q_norm.weight" in keys


def test_embedding_checkpoint_keys_have_no_prefix_and_no_head(tmp_path):
    keys = set(read_tensor_infos(make_tiny_checkpoint(tmp_path, arch="qwen3-embedding")))
    assert "embed_tokens.weight" in keys and "norm.weight" in keys
    assert not any(k.startswith("model.") or k.startswith("lm_head") for k in keys)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = load_causal_lm(make_tiny_checkpoint(tmp_path / "a", seed=3)).state_dict()
    b = load_causal_lm(make_tiny_checkpoint(tmp_path / "b", seed=3)).state_dict()
    c = load_causal_lm(make_tiny_checkpoint(tmp_path / "c", seed=4)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_init_follows_transformers(tmp_path):
    sd = load_causal_lm(make_tiny_checkpoint(tmp_path, arch="qwen3")).state_dict()
    assert torch.equal(sd["model.layers.0.self_attn.q_norm.weight"], torch.ones(32))
    assert abs(sd["model.layers.0.mlp.up_proj.weight"].std().item() - 0.02) < 2e-3


def test_overrides_and_shards(tmp_path):
    path = make_tiny_checkpoint(tmp_path, arch="qwen3", shards=3, num_hidden_layers=3, dtype="bfloat16")
    assert len(list(path.glob("model-*-of-00003.safetensors"))) == 3
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(
        torch.Size(i.shape).numel() * 2 for i in read_tensor_infos(path).values())
    lm = load_causal_lm(path)
    assert lm.config.num_hidden_layers == 3 and lm.model.norm.weight.dtype == torch.bfloat16


def test_unknown_arch_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny arch 'gpt2'"):
        make_tiny_checkpoint(tmp_path, arch="gpt2")


@torch.no_grad()
@pytest.mark.parametrize("arch, shards", [("llama", 1), ("qwen3", 2)])
def test_transformers_reads_the_factory_checkpoint_to_identical_logits(tmp_path, arch, shards, record_max_diff):
    transformers = pytest.importorskip("transformers")
    path = make_tiny_checkpoint(tmp_path, arch=arch, shards=shards)
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    lm = load_causal_lm(path)
    ids, mask = load_tokenizer(path).batch_encode(["The heart is a muscle.", "Paris"], padding_side="left")
    diff = (lm(ids, mask) - hf(input_ids=ids, attention_mask=mask).logits)[mask.bool()].abs().max().item()
    record_max_diff(f"tiny factory {arch} logits fp32", diff)
    assert diff <= 1e-5


def test_transformers_reads_the_embedding_checkpoint_as_a_bare_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = make_tiny_checkpoint(tmp_path, arch="qwen3-embedding")
    hf = transformers.AutoModel.from_pretrained(path)
    assert type(hf).__name__ == "Qwen3Model"


def test_vocab_size_override_is_honoured_and_must_cover_the_tokenizer(tmp_path):
    from minigrpo.miniature import make_tiny_checkpoint
    from minigrpo.models import ModelConfig
    out = make_tiny_checkpoint(tmp_path / "big", arch="llama", vocab_size=1000)
    assert ModelConfig.from_pretrained(out).vocab_size == 1000
    import pytest
    with pytest.raises(ValueError, match="smaller than the tokenizer's"):
        make_tiny_checkpoint(tmp_path / "small", arch="llama", vocab_size=10)
