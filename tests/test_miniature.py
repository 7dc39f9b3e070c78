"""The main job (examples/miniature.py) end to end on CPU, every stage for a few steps."""

import json

import pytest

from minigrpo.miniature import make_synthetic_dataset, make_tiny_checkpoint, paraphrase_margin, paraphrase_triplets
from minigrpo.miniature.knowledge import cloze_sentences
from minigrpo.models import load_encoder

FAST = ["--n-train", "24", "--n-eval", "6", "--vocab-size", "400", "--hidden", "32", "--layers", "1",
        "--encoder-steps", "3", "--cpt-steps", "3", "--cpt-copies", "2", "--sft-steps", "3", "--grpo-steps", "2",
        "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "12", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def miniature(load_example):
    return load_example("miniature")


def test_pipeline_writes_results_for_every_stage(miniature, tmp_path):
    results = miniature.main(["--out", str(tmp_path), *FAST])
    saved = json.loads((tmp_path / "results.json").read_text())
    ds = make_synthetic_dataset(seed=0, n_train=24, n_eval=6)  # the run's dataset: same seed and sizes
    probed = sum(cloze_sentences(it) is not None for it in ds.eval)
    for stage in ("cpt", "sft", "grpo"):
        r = saved[stage]
        assert set(r) >= {"accuracy", "reward", "format_rate", "rewards", "cloze", "accuracy_by_subject"}
        # accuracy and format rate are the means of their reward components; the reward is their weighted sum
        assert r["accuracy"] == r["rewards"]["correctness"] and r["format_rate"] == r["rewards"]["format"]
        assert r["reward"] == pytest.approx(sum(r["rewards"].values()), abs=1e-6)
        assert r["cloze"] * probed == pytest.approx(round(r["cloze"] * probed), abs=1e-9)  # k of the probed items
        assert r["reward"] == pytest.approx(results[stage]["reward"])
    assert set(saved["sft"]["rewards"]) == {"semantic", "correctness", "format", "cot"}
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (tmp_path / "rewards.png").stat().st_size > 0
    for stage in ("cpt", "sft", "encoder"):  # every stage's model is a loadable checkpoint folder
        assert (tmp_path / stage / "model.safetensors").exists() and (tmp_path / stage / "config.json").exists()
    # the reported margin is the saved encoder's, on the held-out triplets
    encoder = load_encoder(tmp_path / "encoder", pooling="mean")
    margin, frac = paraphrase_margin(encoder, paraphrase_triplets(ds, split="eval", seed=0))
    assert saved["encoder"] == pytest.approx({"margin": margin, "fraction": frac}, abs=1e-6)


def test_rouge_variant_and_an_external_encoder_folder(miniature, tmp_path):
    encoder = make_tiny_checkpoint(tmp_path / "qwen3-embedding", arch="qwen3-embedding")
    results = miniature.main(["--out", str(tmp_path / "run"), *FAST, "--reward", "semantic+rouge",
                              "--encoder", str(encoder)])
    assert set(results["grpo"]["rewards"]) == {"semantic", "rouge_l", "correctness", "format", "cot"}
    assert not (tmp_path / "run" / "encoder").exists()  # nothing trained: the given encoder is used as is
