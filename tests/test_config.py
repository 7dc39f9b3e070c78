"""ModelConfig: both transformers spellings, the transformers defaults, and clear errors."""

import json
import re

import pytest

from minigrpo.models import ModelConfig

# Llama-3.1-8B's config.json as on the Hub (transformers 4.x spelling)
LLAMA31 = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.0",
    "use_cache": True, "vocab_size": 128256,
}
# Qwen3-0.6B's config.json as on the Hub
QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
    "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936,
}


def test_llama31_hub_config_is_read_with_llama3_rope_and_derived_head_dim():
    c = ModelConfig.from_hf_config(LLAMA31)
    assert (c.model_type, c.head_dim, c.num_key_value_heads, c.n_rep) == ("llama", 128, 8, 4)
    assert c.rope_theta == 500000.0 and c.torch_dtype == "bfloat16" and not c.qk_norm
    assert c.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}


def test_qwen3_hub_config_keeps_explicit_head_dim_and_enables_qk_norm():
    c = ModelConfig.from_hf_config(QWEN3)
    assert c.head_dim == 128 != c.hidden_size // c.num_attention_heads
    assert c.qk_norm and c.tie_word_embeddings and c.rope_scaling is None and c.rope_theta == 1e6


def test_transformers5_spelling_gives_the_same_config():
    v5 = {k: v for k, v in LLAMA31.items() if k not in ("torch_dtype", "rope_theta", "rope_scaling")}
    v5["dtype"] = "bfloat16"
    v5["rope_parameters"] = {**LLAMA31["rope_scaling"], "rope_theta": 500000.0}
    assert ModelConfig.from_hf_config(v5) == ModelConfig.from_hf_config(LLAMA31)
    q5 = {k: v for k, v in QWEN3.items() if k not in ("torch_dtype", "rope_theta", "rope_scaling")}
    q5.update(dtype="bfloat16", rope_parameters={"rope_type": "default", "rope_theta": 1000000})
    assert ModelConfig.from_hf_config(q5) == ModelConfig.from_hf_config(QWEN3)


def test_old_type_key_is_a_synonym_of_rope_type():
    old = dict(LLAMA31, rope_scaling={k if k != "rope_type" else "type": v for k, v in LLAMA31["rope_scaling"].items()})
    assert ModelConfig.from_hf_config(old) == ModelConfig.from_hf_config(LLAMA31)


def test_missing_keys_take_transformers_defaults():
    c = ModelConfig.from_hf_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4})
    assert c.num_key_value_heads == 4 and c.head_dim == 16  # = heads, = hidden / heads
    assert c.rope_theta == 10000.0 and c.rms_norm_eps == 1e-6 and c.torch_dtype is None
    assert not c.tie_word_embeddings and not c.attention_bias


def test_llama3_scaling_without_original_length_falls_back_to_max_positions():
    rope = {k: v for k, v in LLAMA31["rope_scaling"].items() if k != "original_max_position_embeddings"}
    c = ModelConfig.from_hf_config(dict(LLAMA31, rope_scaling=rope))
    assert c.rope_scaling["original_max_position_embeddings"] == 131072


def test_transformers_written_config_roundtrips(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen3Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    cfg.save_pretrained(tmp_path)  # 5.x spelling
    c = ModelConfig.from_pretrained(tmp_path)
    assert (c.vocab_size, c.head_dim, c.num_key_value_heads, c.qk_norm) == (50, 16, 2, True)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "mistral"}, "unsupported model_type 'mistral'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "unsupported rope type 'yarn'"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "unsupported rope type 'dynamic'"),
    ({"num_key_value_heads": 5}, r"num_attention_heads \(32\) must be divisible by num_key_value_heads \(5\)"),
    ({"hidden_act": "gelu"}, "unsupported hidden_act 'gelu'"),
    ({"hidden_size": 100, "head_dim": None}, r"hidden_size \(100\) is not divisible by num_attention_heads \(32\)"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer, found 0"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks"),
])
def test_impossible_or_unsupported_configs_are_rejected_naming_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_hf_config({k: v for k, v in {**LLAMA31, **change}.items() if v is not None})


def test_missing_config_json_names_the_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no config.json found: expected the file {tmp_path}/config.json"):
        ModelConfig.from_pretrained(tmp_path)


def test_unsupported_model_type_error_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dict(QWEN3, model_type="qwen2")))
    with pytest.raises(ValueError, match=r"config.json: unsupported model_type 'qwen2'"):
        ModelConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": "linear"}, "config rope_scaling must be an object (or null), found 'linear'"),
    ({"rope_scaling": None, "rope_parameters": ["llama3"]}, "config rope_parameters must be an object"),
    ({"hidden_size": "4096"}, "config hidden_size must be a positive integer, found '4096'"),
    ({"num_hidden_layers": 32.0}, "config num_hidden_layers must be a positive integer, found 32.0"),
    ({"max_position_embeddings": True}, "config max_position_embeddings must be a positive integer, found True"),
    ({"rms_norm_eps": -1e-5}, "config rms_norm_eps must be a positive finite number, found -1e-05"),
    ({"rms_norm_eps": "1e-5"}, "config rms_norm_eps must be a positive finite number, found '1e-5'"),
    ({"rope_theta": 0}, "config rope_theta must be a positive finite number, found 0"),
    ({"rope_theta": "500000"}, "config rope_theta must be a positive finite number, found '500000'"),
    ({"rope_theta": float("inf")}, "config rope_theta must be a positive finite number, found inf"),
    ({"tie_word_embeddings": "false"}, "config tie_word_embeddings must be true or false"),
    ({"eos_token_id": "</s>"}, "config eos_token_id must be a token id"),
    ({"rope_scaling": {**LLAMA31["rope_scaling"], "factor": "8"}}, "config rope_scaling.factor must be a positive"),
    ({"rope_scaling": {**LLAMA31["rope_scaling"], "high_freq_factor": 1.0}},
     "config rope_scaling.high_freq_factor (1.0) must be greater than low_freq_factor (1.0)"),
])
def test_malformed_values_are_an_error_naming_file_and_key(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA31, **change}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: {message}")):
        ModelConfig.from_pretrained(tmp_path)


def test_top_level_list_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps([LLAMA31]))
    message = f"{tmp_path / 'config.json'}: expected a JSON object of model settings, found a list"
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig.from_pretrained(tmp_path)


def test_non_utf8_config_json_names_file_and_line(tmp_path):
    text = json.dumps(LLAMA31, indent=1).replace('"llama"', '"llama", "_name_or_path": "caf\\u00e9"')
    (tmp_path / "config.json").write_bytes(text.encode("utf-8").replace(b"caf\\u00e9", b"caf\xe9"))  # Latin-1
    line = text[:text.index("caf")].count("\n") + 1
    assert line > 1
    message = f"{tmp_path / 'config.json'}:{line}: expected UTF-8 text, found byte 0xe9"
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig.from_pretrained(tmp_path)
