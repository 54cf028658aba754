"""The start and end panels: rich on a terminal, plain lines in logs, nothing when quiet."""

from __future__ import annotations

import pytest

from nlptool import console as log
from tests.test_cli import nlptool, read_metrics

ROWS = [("model", "bert-tiny, 1,550,834 parameters"), ("device", "cpu, fp32")]
HISTORY = {"start": {"step": 0, "valid/loss": 9.04}, "end": {"step": 8, "valid/loss": 8.54}}


@pytest.mark.parametrize("terminal", [True, False])
def test_panels_on_a_terminal_and_plain_in_logs(monkeypatch, terminal):
    monkeypatch.setattr(type(log.console), "is_terminal", property(lambda self: terminal))
    with log.console.capture() as captured:
        log.show_start("nlptool pretrain", ROWS)
        log.show_end("Validation", HISTORY, [("checkpoint", "runs/x/checkpoints/last")])
        log.console.print(log.metrics_table("Evaluation", {"valid": HISTORY["end"]}))  # eval's
    text = captured.get()
    for needle in ("nlptool pretrain", "bert-tiny, 1,550,834 parameters", "valid/loss", "9.0400",
                   "8.5400", "runs/x/checkpoints/last"):  # fmt: skip
        assert needle in text
    boxes = any(ch in text for ch in "╭│┃")
    assert boxes == terminal  # CI logs get no box drawing


def test_quiet_shows_nothing(monkeypatch):
    with log.console.capture() as captured:
        log.show_start("nlptool pretrain", ROWS, quiet=True)
        log.show_end("Validation", HISTORY, [], quiet=True)
    assert captured.get() == ""


def test_a_quiet_run_prints_nothing_but_logs_everything(tmp_path):
    out = nlptool(
        "pretrain", "trainer=smoke", "trainer.max_steps=4", "trainer.quiet=true",
        "hydra.run.dir=run", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert out.strip() == ""
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if "train/loss" in r] == [2, 4]
