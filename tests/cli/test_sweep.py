"""nlptool/sweep.py: the summary of a multirun, from what each job left in its run directory."""

from __future__ import annotations

import json

from nlptool.cli.sweep import summarize, swept_keys
from tests.test_cli import nlptool


def test_a_local_sweep_ends_with_a_summary_table(tmp_path):
    out = nlptool(
        "pretrain", "-m", "trainer=smoke", "trainer.max_steps=2", "trainer.progress=false",
        "trainer.lr=1e-3,3e-4", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    ).stdout  # fmt: skip
    lines = (tmp_path / "sweep" / "summary.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all('"status": "done"' in line for line in lines)
    assert '"trainer.lr": "0.001"' in lines[0] and '"trainer.lr": "0.0003"' in lines[1]
    assert "Sweep" in out and "trainer.lr" in out and "valid/loss" in out


def test_failed_and_stopped_jobs_are_reported(tmp_path):
    for num, (lr, records) in enumerate(
        [
            ("1e-3", [{"step": 0, "valid/loss": 9.0}, {"step": 4, "valid/loss": 7.5}]),
            ("3e-4", [{"step": 0, "valid/loss": 9.0}, {"step": 2, "train/loss": 8.0}]),
            ("1e-4", None),  # failed before training
        ]
    ):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- trainer.lr={lr}\n- model=bert-tiny\n")
        (job / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 4\n")
        if records is not None:
            (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    jobs = summarize(tmp_path)
    assert [job["status"] for job in jobs] == ["done", "stopped", "not started"]
    assert jobs[0]["metrics"] == {"valid/loss": 7.5}
    assert jobs[1]["step"] == 2 and jobs[1]["metrics"] == {"valid/loss": 9.0}
    assert swept_keys(jobs) == ["trainer.lr"]
