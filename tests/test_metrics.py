"""metrics.jsonl reading (minigrpo/grpo/metrics.py): a crash mid-write cuts the last line; other damage is named."""

import re
import warnings

import pytest

from minigrpo.grpo.metrics import JsonlLog, read_metrics


def write_rows(run_dir, *steps, tail=b""):
    log = JsonlLog(run_dir / "metrics.jsonl")
    for step in steps:
        log.append({"step": step, "loss": 0.5 * step, "kl": None})
    with open(log.path, "ab") as f:
        f.write(tail)
    return log


@pytest.mark.parametrize("tail", [b'{"step": 3, "loss": 1.', b'{"step": 3, "text": "caff\xc3', b"{"],
                         ids=["json", "utf-8", "brace"])
def test_last_line_cut_off_by_a_crash_is_skipped_with_a_warning(tmp_path, tail):
    write_rows(tmp_path, 1, 2, tail=tail)
    with pytest.warns(UserWarning, match=re.escape(f"{tmp_path / 'metrics.jsonl'}:3: skipped the last line")):
        rows = read_metrics(tmp_path)
    assert rows == [{"step": 1, "loss": 0.5, "kl": None}, {"step": 2, "loss": 1.0, "kl": None}]


def test_bad_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    log = write_rows(tmp_path, 1)
    with open(log.path, "ab") as f:
        f.write(b'{"step": 2, "loss":\n')
    write_rows(tmp_path, 3)
    with pytest.raises(ValueError, match=re.escape(f"{log.path}:2: expected one JSON object per line")):
        read_metrics(tmp_path)


def test_truncate_after_drops_the_cut_off_line_and_later_steps(tmp_path):
    log = write_rows(tmp_path, 1, 2, 3, tail=b'{"step": 4, "lo')
    with pytest.warns(UserWarning, match="skipped the last line"):
        log.truncate_after(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file is whole again: no warning
        assert [r["step"] for r in log.read()] == [1, 2]
    assert log.path.read_text().endswith("\n")


def test_complete_log_reads_without_warning(tmp_path):
    write_rows(tmp_path, 1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
