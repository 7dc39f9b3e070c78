"""The main job (examples/miniature.py) end to end on CPU, every stage for a few steps."""

import json
import math

import pytest

from minigrpo.data import R1_FORMAT
from minigrpo.eval import ReferenceJudge, elo_view, explanation_of, load_variant_completions, run_tournament
from minigrpo.miniature import make_synthetic_dataset, make_tiny_checkpoint, paraphrase_margin, paraphrase_triplets
from minigrpo.miniature.knowledge import cloze_sentences
from minigrpo.models import load_encoder

FAST = ["--n-train", "24", "--n-eval", "6", "--vocab-size", "400", "--hidden", "32", "--layers", "1",
        "--encoder-steps", "3", "--cpt-steps", "3", "--cpt-copies", "2", "--sft-steps", "3", "--grpo-steps", "2",
        "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "12", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def miniature(load_example):
    return load_example("miniature")


STAGES = {"cpt": "cpt", "sft": "sft", "grpo_semantic": "grpo", "grpo_rouge": "grpo_rouge",
          "grpo_semantic_rouge": "grpo_semantic_rouge"}  # Elo / completion-file name -> results.json key
TRAINED_ON = {"semantic": {"semantic"}, "rouge": {"rouge_l"}, "semantic+rouge": {"semantic", "rouge_l"}}


@pytest.fixture(scope="module")
def default_run(miniature, tmp_path_factory):
    """(run folder, returned results) of one run with the default rewards, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("miniature")
    return out, miniature.main(["--out", str(out), *FAST])


def test_pipeline_writes_results_for_every_stage(default_run):
    tmp_path, results = default_run
    saved = json.loads((tmp_path / "results.json").read_text())
    ds = make_synthetic_dataset(seed=0, n_train=24, n_eval=6)  # the run's dataset: same seed and sizes
    probed = sum(cloze_sentences(it) is not None for it in ds.eval)
    for stage in STAGES.values():
        r = saved[stage]
        assert set(r) >= {"accuracy", "reward", "format_rate", "rewards", "cloze", "accuracy_by_subject"}
        assert set(r["rewards"]) == {"semantic", "rouge_l", "correctness", "format", "cot"}  # one yardstick
        # accuracy and format rate are the means of their reward components; the reward is the paper's sum,
        # ROUGE-L shown beside it with weight 0
        assert r["accuracy"] == r["rewards"]["correctness"] and r["format_rate"] == r["rewards"]["format"]
        assert r["reward"] == pytest.approx(sum(v for k, v in r["rewards"].items() if k != "rouge_l"), abs=1e-6)
        assert r["cloze"] * probed == pytest.approx(round(r["cloze"] * probed), abs=1e-9)  # k of the probed items
        assert r["reward"] == pytest.approx(results[stage]["reward"])
        assert "completions" not in r
    for reward, components in TRAINED_ON.items():  # each GRPO run trained on its own reward
        rows = [json.loads(line) for line in (tmp_path / f"grpo-{reward}" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2]
        trained = {k.split("/")[1] for k in rows[0] if k.startswith("rewards/")} - {"correctness", "format", "cot"}
        assert trained == components
    assert (tmp_path / "rewards.png").stat().st_size > 0
    for stage in ("cpt", "sft", "encoder"):  # every stage's model is a loadable checkpoint folder
        assert (tmp_path / stage / "model.safetensors").exists() and (tmp_path / stage / "config.json").exists()
    # the reported margin is the saved encoder's, on the held-out triplets
    encoder = load_encoder(tmp_path / "encoder", pooling="mean")
    margin, frac = paraphrase_margin(encoder, paraphrase_triplets(ds, split="eval", seed=0))
    assert saved["encoder"] == pytest.approx({"margin": margin, "fraction": frac}, abs=1e-6)


def test_elo_table_rates_every_stage_from_the_cached_completions(default_run):
    tmp_path, _ = default_run
    saved = json.loads((tmp_path / "results.json").read_text())
    ds = make_synthetic_dataset(seed=0, n_train=24, n_eval=6)
    n = len(ds.eval)
    assert list(saved["elo"]) == list(STAGES)
    for variant, entry in saved["elo"].items():
        lo, hi = entry["ci"]
        assert all(math.isfinite(x) for x in (lo, entry["rating"], hi)) and lo <= entry["rating"] <= hi, variant
    # every held-out completion is cached, in item order: the first is the one results.json shows as a sample
    cached = load_variant_completions(tmp_path / "completions", ds.eval, list(STAGES))
    for variant, key in STAGES.items():
        assert len(cached[variant]) == n and cached[variant][0] == saved[key]["samples"][0]["completion"]
    report = saved["tournament"]
    assert set(report["judges"]) == {"reference", "encoder_cosine (circular)"}
    assert report["judges"]["encoder_cosine (circular)"]["circular"] and report["pooled"]["judges"] == ["reference"]
    pairs = len(STAGES) * (len(STAGES) - 1) // 2
    for name, section in report["judges"].items():  # every pair on every item, in both orders
        assert section["units"] == pairs * n, name
        for a, row in section["wins_ties_losses"].items():
            assert set(row) == set(STAGES) - {a} and all(sum(wtl) == 2 * n for wtl in row.values()), (name, a)
    # the pooled ratings are the reference judge's on the cached texts: the same tournament run again agrees
    again = run_tournament(ds.eval, cached, [ReferenceJudge(ds.key_terms(ds.eval))], extract=explanation_of(R1_FORMAT))
    assert elo_view(again) == saved["elo"]
    assert (tmp_path / "elo.png").stat().st_size > 0


def test_one_reward_and_an_external_encoder_folder(miniature, tmp_path):
    encoder = make_tiny_checkpoint(tmp_path / "qwen3-embedding", arch="qwen3-embedding")
    results = miniature.main(["--out", str(tmp_path / "run"), *FAST, "--reward", "semantic+rouge",
                              "--encoder", str(encoder)])
    assert results["args"]["rewards"] == ("semantic+rouge",)  # the old --reward flag names a single variant
    assert "grpo_semantic_rouge" in results and "grpo" not in results and "grpo_rouge" not in results
    assert list(results["elo"]) == ["cpt", "sft", "grpo_semantic_rouge"]
    assert sorted(p.name for p in (tmp_path / "run").glob("grpo-*")) == ["grpo-semantic+rouge"]
    assert not (tmp_path / "run" / "encoder").exists()  # nothing trained: the given encoder is used as is


@pytest.mark.parametrize("value", ["semantic,semantic", "bleu", ""])
def test_unknown_or_repeated_rewards_are_refused(miniature, value, capsys):
    with pytest.raises(SystemExit):
        miniature.parse_args(["--rewards", value])
    assert "expected distinct rewards" in capsys.readouterr().err
