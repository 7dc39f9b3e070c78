import sys

import pytest

from minigrpo.eval.plots import plot_elo, plot_hacking

VIEW = {"semantic": {"rating": 1554.4, "ci": [1530.0, 1580.0]}, "cpt": {"rating": 1503.8, "ci": [1480.0, 1525.0]},
        "sft": {"rating": 1484.7, "ci": [1460.0, 1505.0]}}
HACKING = {"kinds": ["reference", "empty", "padded"], "rewards": {
    "semantic": {"mean": {"reference": 0.8, "empty": -1.0, "padded": 0.5}},
    "rouge_l": {"mean": {"reference": 1.0, "empty": 0.0, "padded": 0.5}}}}


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    for fn, data in ((plot_elo, VIEW), (plot_hacking, HACKING)):
        path = tmp_path / f"{fn.__name__}.png"
        assert fn(data, path) == path
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_without_matplotlib_print_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert plot_elo(VIEW, tmp_path / "elo.png") is None
    assert "matplotlib not installed" in capsys.readouterr().out
    assert not (tmp_path / "elo.png").exists()
