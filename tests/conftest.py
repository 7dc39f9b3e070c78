"""Shared fixtures: tiny random checkpoints written by transformers' own save_pretrained, a record of the
largest differences measured against transformers (printed at the end of the run), and a loader for the
example scripts."""

import importlib.util
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MAX_DIFFS = {}  # name -> largest |ours - transformers| seen in this run


@pytest.fixture
def record_max_diff():
    def record(name, value):
        MAX_DIFFS[name] = max(MAX_DIFFS.get(name, 0.0), float(value))
    return record


@pytest.fixture(scope="session")
def load_example():
    """load_example(name) imports examples/<name>.py as a module: the examples are scripts, not a package."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def pytest_terminal_summary(terminalreporter):
    if MAX_DIFFS:
        terminalreporter.section("max |minigrpo - transformers|")
        for name, value in sorted(MAX_DIFFS.items()):
            terminalreporter.write_line(f"{name:45s} {value:.3e}")


def _small(cls, **kw):
    base = dict(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256)
    return cls(**{**base, **kw})


@pytest.fixture(scope="session")
def hf_llama_config():
    """Llama 3.1 shape in small: GQA (4 heads, 2 kv heads), `llama3` RoPE with all three bands, untied head."""
    transformers = pytest.importorskip("transformers")
    return _small(transformers.LlamaConfig, rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-5,
                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})


@pytest.fixture(scope="session")
def hf_qwen3_config():
    """Qwen3 shape in small: head_dim 32 != 64 / 4, q/k norm, tied head."""
    transformers = pytest.importorskip("transformers")
    return _small(transformers.Qwen3Config, head_dim=32, rope_theta=1e6, tie_word_embeddings=True)


def _save(model, path, **kw):
    model.save_pretrained(path, **kw)
    return path


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory, hf_llama_config):
    """(folder, transformers model) of a LlamaForCausalLM saved by transformers."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    hf = LlamaForCausalLM(hf_llama_config).eval()
    return _save(hf, tmp_path_factory.mktemp("llama")), hf


@pytest.fixture(scope="session")
def qwen3_checkpoint(tmp_path_factory, hf_qwen3_config):
    """(folder, transformers model) of a tied Qwen3ForCausalLM saved by transformers in many small shards."""
    from transformers import Qwen3ForCausalLM
    torch.manual_seed(1)
    hf = Qwen3ForCausalLM(hf_qwen3_config).eval()
    return _save(hf, tmp_path_factory.mktemp("qwen3_sharded"), max_shard_size="50KB"), hf


@pytest.fixture(scope="session")
def qwen3_body_checkpoint(tmp_path_factory, hf_qwen3_config):
    """(folder, transformers model) of a bare Qwen3Model (keys without 'model.', no lm_head), like Qwen3-Embedding."""
    from transformers import Qwen3Model
    torch.manual_seed(2)
    hf = Qwen3Model(hf_qwen3_config).eval()
    return _save(hf, tmp_path_factory.mktemp("qwen3_body")), hf


@pytest.fixture
def batch():
    """Random ids (3, 9) and a left-padding mask: row 0 full, row 1 three pads, row 2 one real token."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 101, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :8] = 0
    return ids, mask
