"""The table at the end of a sweep (`-m`): each job's swept values against its final metrics.

A Hydra callback (configs/<verb>.yaml, hydra.callbacks), so it runs with every launcher, in the
process that launched the sweep, once all jobs have ended. It reads what each job left in its run
directory (`.hydra/overrides.yaml`, `metrics.jsonl`, the last checkpoint's trainer state): jobs
that ran elsewhere (SLURM) or failed are reported as well. Written to `<sweep dir>/summary.jsonl`
and printed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def job_summary(run_dir: Path) -> dict[str, Any]:
    """One job: its overrides, how far it got, its last validation metrics and best score."""
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    values = dict(str(o).lstrip("+").split("=", 1) for o in overrides if "=" in str(o))
    out: dict[str, Any] = {"job": run_dir.name, "overrides": values, "status": "not started"}
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    max_steps = OmegaConf.select(config, "trainer.max_steps")
    metrics = run_dir / "metrics.jsonl"
    records = []
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    last_step = max((r.get("step", 0) for r in records), default=None)
    valid = [r for r in records if "valid/loss" in r]
    if last_step is not None:
        out["step"] = last_step
        out["status"] = "done" if last_step == max_steps and valid else "stopped"
    if valid:
        final = valid[-1]
        out["metrics"] = {
            key: value
            for key, value in final.items()
            if key.startswith("valid/") and (key == "valid/loss" or not key.endswith("_loss"))
        }
    evaluation = run_dir / "eval.json"  # nlptool eval -m: the split's metrics
    if evaluation.exists():
        result = json.loads(evaluation.read_text())
        split = next(k for k in result if k != "checkpoint")
        out["status"] = "done"
        out["metrics"] = {f"{split}/{k}": v for k, v in result[split].items()}
    state = run_dir / "checkpoints" / "last" / "trainer_state.json"
    if state.exists():
        best = json.loads(state.read_text()).get("best")
        if best is not None:
            out["best"] = best
    return out


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    jobs = [
        job_summary(path)
        for path in sorted(sweep_dir.iterdir(), key=lambda p: (len(p.name), p.name))
        if (path / ".hydra" / "overrides.yaml").exists()
    ]
    return jobs


def swept_keys(jobs: list[dict[str, Any]]) -> list[str]:
    """The override keys whose values differ between jobs (all of them for a single job)."""
    keys: list[str] = []
    for job in jobs:
        keys.extend(k for k in job["overrides"] if k not in keys)
    differing = [k for k in keys if len({job["overrides"].get(k) for job in jobs}) > 1]
    return differing or keys


def summary_table(jobs: list[dict[str, Any]], title: str):
    from rich.table import Table

    from nlptool.console import format_value, table_box

    keys = swept_keys(jobs)
    metric_names: list[str] = []
    for job in jobs:
        metric_names.extend(m for m in job.get("metrics", {}) if m not in metric_names)
    table = Table(title=title, title_justify="left", **table_box())
    with_best = any("best" in job for job in jobs)
    for name in ["job", *keys]:
        table.add_column(name, style="bold" if name == "job" else None, overflow="fold")
    for name in ["step", *metric_names, *["best"] * with_best, "status"]:
        table.add_column(name, justify="right", overflow="fold")
    for job in jobs:
        metrics = job.get("metrics", {})
        table.add_row(
            job["job"],
            *(str(job["overrides"].get(k, "")) for k in keys),
            str(job.get("step", "")),
            *(format_value(metrics[m]) if m in metrics else "" for m in metric_names),
            *([format_value(job["best"]) if "best" in job else ""] * with_best),
            job["status"],
        )
    return table


class SweepSummary(Callback):
    """hydra.callbacks: after a multirun, the summary of its jobs."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nlptool.console import console

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        jobs = summarize(sweep_dir)
        if not jobs:
            return
        with open(sweep_dir / "summary.jsonl", "w") as fh:
            for job in jobs:
                fh.write(json.dumps(job) + "\n")
        console.print(summary_table(jobs, f"Sweep {sweep_dir} ({len(jobs)} jobs)"))
        console.print(f"Wrote {sweep_dir / 'summary.jsonl'}")
