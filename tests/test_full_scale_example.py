"""examples/paper_full_scale.py: the memory estimate worked out by hand, and the whole run on tiny checkpoints."""

import json

import pytest
import torch
from safetensors import safe_open

from minigrpo.data import MCQItem, save_mcq_jsonl
from minigrpo.miniature import make_tiny_checkpoint
from minigrpo.miniature.tiny import tiny_config
from minigrpo.models import ModelConfig



@pytest.fixture(scope="module")
def example(load_example):
    return load_example("paper_full_scale")


def small_configs():
    """Policy: C 8, I 16, L 2, H 2, Hkv 1, D 4, V 10, untied. Encoder: C 4, I 8, L 1, H 2, Hkv 1, D 2, V 6, qk_norm."""
    policy = ModelConfig.from_hf_config(tiny_config("llama", 10, hidden_size=8, intermediate_size=16,
                                                    num_hidden_layers=2, num_attention_heads=2,
                                                    num_key_value_heads=1))
    encoder = ModelConfig.from_hf_config(tiny_config("qwen3-embedding", 6, hidden_size=4, intermediate_size=8,
                                                     num_hidden_layers=1, num_attention_heads=2,
                                                     num_key_value_heads=1, head_dim=2))
    return policy, encoder


def test_small_config_estimate_matches_hand_count(example):
    policy, encoder = small_configs()
    kw = dict(lora_r=2, targets=("q_proj", "v_proj"), batch_rows=3, prompt_len=4, completion_len=2, dtype_bytes=2,
              logprob_chunk_size=5)
    est = example.estimate_memory_gb(policy, encoder, gradient_checkpointing=False, **kw)
    # policy: embed 10*8 + head 10*8 + final norm 8 + 2 blocks * (q 64 + k 32 + v 32 + o 64 + mlp 3*8*16 + norms 16)
    assert est["policy_params"] == 80 + 80 + 8 + 2 * (64 + 32 + 32 + 64 + 384 + 16) == 1352
    # encoder body: embed 6*4 + final norm 4 + (q 16 + k 8 + v 8 + o 16 + mlp 96 + norms 8 + q/k norm 2*2)
    assert est["encoder_params"] == 24 + 4 + (16 + 8 + 8 + 16 + 96 + 8 + 4) == 184
    # LoRA r=2: q 2*(8+8), v 2*(8+4), per layer, 2 layers
    assert est["lora_params"] == 2 * (32 + 24) == 112
    GB = 1e9
    T, R = 6, 3
    kv = 2 * 2 * R * 1 * 4 * T * 2  # L * (k,v) * R * Hkv * D * T * b
    a_tok = 2 * 8 * (4 + 2) + 5 * 2 * 4 * 2 + 4 * 2 + 2 * 2 * 2 + 3 * 16 * 2  # norms, attn, lse, LoRA, MLP
    assert a_tok == 288
    one_block = R * T * a_tok + R * T * T * 2  # + the additive mask bias
    final_norm = R * T * 8 * (4 + 2)
    activations = 2 * one_block + final_norm
    assert activations == 11664
    logprob = 5 * 10 * 4 * 4
    static = 1352 * 2 + 184 * 2 + 112 * 16
    expected = {"policy_weights": 2704, "encoder_weights": 368, "lora_state": 1792, "kv_cache": kv,
                "activations": activations, "logprob_chunks": logprob, "generation_phase": static + kv,
                "training_phase": static + activations + logprob, "total": static + activations + logprob}
    for key, value in expected.items():
        assert est[key] * GB == pytest.approx(value, rel=1e-12), key
    assert est["total"] * GB == 17328 and est["fits"]


def test_checkpointing_keeps_only_block_inputs_plus_one_block(example):
    policy, encoder = small_configs()
    est = example.estimate_memory_gb(policy, encoder, lora_r=2, targets=("q_proj", "v_proj"), batch_rows=3,
                                     prompt_len=4, completion_len=2, dtype_bytes=2, gradient_checkpointing=True,
                                     logprob_chunk_size=None)
    R, T = 3, 6
    inputs, bool_mask = 2 * R * T * 8 * 2, R * T * T  # L * R*T*C*b, the shared bool mask
    one_block, final_norm = R * T * 288 + R * T * T * 2, R * T * 8 * 6
    assert est["activations"] * 1e9 == pytest.approx(inputs + bool_mask + one_block + final_norm, rel=1e-12) == 6948
    # default chunk: 2**24 // V rows, four float32 (rows, V) buffers
    assert est["logprob_chunks"] * 1e9 == pytest.approx((2**24 // 10) * 10 * 16, rel=1e-12)


def test_real_shapes_count_the_published_parameters(example):
    """Llama-3.1-8B's config (DeepSeek-R1-Distill-Llama-8B) and Qwen3-Embedding-0.6B's."""
    policy = ModelConfig.from_hf_config(tiny_config(
        "llama", 128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072,
        rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}))
    encoder = ModelConfig.from_hf_config(tiny_config(
        "qwen3-embedding", 151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768))
    kw = dict(lora_r=32, targets=("q_proj", "k_proj", "v_proj", "o_proj"), batch_rows=24, prompt_len=512,
              completion_len=1024, logprob_chunk_size=None)
    est = example.estimate_memory_gb(policy, encoder, gradient_checkpointing=False, **kw)
    assert est["policy_params"] == 8_030_261_248
    assert est["encoder_params"] == 595_776_512  # 1,191,553,024 bytes in bf16, the safetensors file minus header
    assert est["lora_params"] == 27_262_976
    assert not est["fits"]
    assert example.estimate_memory_gb(policy, encoder, gradient_checkpointing=True, **kw)["fits"]


def items(n, offset=0):
    return [MCQItem(id=f"q{offset + i}", question=f"Which number is {offset + i}?",
                    options={"A": str(offset + i), "B": str(offset + i + 1)}, answer="A",
                    explanations=(f"The number is {offset + i}, so option A.",)) for i in range(n)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("full_scale")
    policy = make_tiny_checkpoint(root / "policy", "llama", seed=0)
    encoder = make_tiny_checkpoint(root / "encoder", "qwen3-embedding", seed=1)
    save_mcq_jsonl(items(4), root / "train.jsonl")
    save_mcq_jsonl(items(2, offset=10), root / "eval.jsonl")
    return root, policy, encoder


def test_estimate_only_reads_the_folders_and_needs_no_data(example, folders, capsys):
    root, policy, encoder = folders
    out = example.main(["--policy", str(policy), "--encoder", str(encoder), "--estimate-only", "--device", "cpu"])
    est = out["memory_estimate"]
    assert est["policy_params"] == example.count_params(ModelConfig.from_pretrained(policy))
    assert "memory estimate" in capsys.readouterr().out
    assert not (root / "run").exists()


def test_tiny_run_writes_results_metrics_and_peft_adapter(example, folders):
    torch.set_num_threads(1)
    root, policy, encoder = folders
    run = root / "run"
    argv = ["--policy", str(policy), "--encoder", str(encoder), "--train", str(root / "train.jsonl"),
            "--eval", str(root / "eval.jsonl"), "--out", str(run), "--num-generations", "2",
            "--prompts-per-step", "2", "--max-completion-length", "6", "--lora-r", "4", "--lora-alpha", "8",
            "--sft-steps", "1", "--sft-batch-size", "2", "--device", "cpu", "--dtype", "float32", "--quiet",
            "--gradient-checkpointing"]
    results = example.main(argv + ["--steps", "2"])
    saved = json.loads((run / "results.json").read_text())
    for stage in ("before", "after"):
        assert set(saved[stage]["rewards"]) == {"semantic", "correctness", "format", "cot"}
        assert 0.0 <= saved[stage]["accuracy"] <= 1.0
    assert saved["memory_estimate"]["lora_params"] == results["memory_estimate"]["lora_params"]
    assert saved["sft"]["steps"] == 1 and (run / "sft" / "model.safetensors").exists()
    rows = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kl"] is not None for r in rows)  # beta = 0.04 by default: the reference forward ran

    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    assert sorted(adapter_config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    layers = 2 * 4  # blocks x targets, an A and a B each
    assert len(keys) == 2 * layers
    assert all(k.startswith("base_model.model.model.layers.") and (".lora_A.weight" in k or ".lora_B.weight" in k)
               for k in keys)


def test_second_run_in_the_same_folder_needs_resume_and_then_continues(example, folders):
    root, policy, encoder = folders
    run = root / "run"  # written by the test above, or here when this test runs alone
    argv = ["--policy", str(policy), "--encoder", str(encoder), "--train", str(root / "train.jsonl"),
            "--eval", str(root / "eval.jsonl"), "--out", str(run), "--num-generations", "2",
            "--prompts-per-step", "2", "--max-completion-length", "6", "--lora-r", "4", "--lora-alpha", "8",
            "--sft-steps", "1", "--sft-batch-size", "2", "--device", "cpu", "--dtype", "float32", "--quiet"]
    if not (run / "grpo" / "metrics.jsonl").exists():
        example.main(argv + ["--steps", "2"])
    before = json.loads((run / "results.json").read_text())["before"]
    with pytest.raises(SystemExit, match="--resume"):
        example.main(argv + ["--steps", "3"])
    with pytest.warns(UserWarning, match="cosine learning-rate schedule now spans 3 updates"):
        example.main(argv + ["--steps", "3", "--resume"])  # a longer run: the schedule stretches, and says so
    rows = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    saved = json.loads((run / "results.json").read_text())
    assert saved["before"] == before and saved["sft"]["steps"] == 1  # SFT model and baseline reused, not redone
