"""trainer.loggers: every record in metrics.jsonl also reaches TensorBoard, W&B and MLflow; a
missing package is a clear error before any work; curves.png."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from nlptool.errors import UserError
from nlptool.training import loggers
from tests.test_cli import REPO, read_metrics

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


def run(tmp_path, *args, max_steps=6):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "nlptool", "pretrain", "trainer=smoke", f"trainer.max_steps={max_steps}",
         "trainer.log_every=2", "trainer.progress=false",
         "trainer.loggers=[jsonl,tensorboard,wandb,mlflow]", "hydra.run.dir=run", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return tmp_path / "run"


def jsonl_series(run_dir, key):
    return [(r["step"], r[key]) for r in read_metrics(run_dir) if key in r]


def test_every_tracker_gets_the_records_and_a_resume_continues_the_same_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run(tmp_path)
    first_id = (run_dir / "mlflow_run_id").read_text().strip()
    run(tmp_path, max_steps=10)  # resume=auto in the same run directory
    assert (run_dir / "mlflow_run_id").read_text().strip() == first_id
    expected = jsonl_series(run_dir, "train/loss")
    assert [s for s, _ in expected] == [2, 4, 6, 8, 10]

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    tb = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in tb] == [2, 4, 6, 8, 10]
    assert [v for _, v in tb] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert "valid/loss" in events.Tags()["scalars"]

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # (the local store nlptool made)
    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    history = sorted((m.step, m.value) for m in client.get_metric_history(first_id, "train/loss"))
    assert [s for s, _ in history] == [s for s, _ in expected]
    assert [v for _, v in history] == pytest.approx([v for _, v in expected], rel=1e-9)
    params = client.get_run(first_id).data.params
    assert params["trainer.max_steps"] == "6" and params["model.name"] == "bert-tiny"

    wandb_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 2  # one per process, one W&B run id for both
    assert len({p.name for p in wandb_runs}) == 1

    png = (run_dir / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_tracker_package_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install 'nlptool\[wandb\]'"):
        loggers.check_loggers(["jsonl", "wandb"])
    loggers.check_loggers(["jsonl", "tensorboard"])  # the others are fine


def test_curves_need_matplotlib_and_records(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    records = [{"step": 0, "valid/loss": 3.0, "valid/accuracy": 0.5},
               {"step": 10, "train/loss": 2.5, "train/lr": 1e-3},
               {"step": 10, "valid/loss": 2.0, "valid/accuracy": 0.7}]  # fmt: skip
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert loggers.plot_curves(metrics, tmp_path / "curves.png") == tmp_path / "curves.png"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a)
    )
    assert loggers.plot_curves(metrics, tmp_path / "other.png") is None
    assert not (tmp_path / "other.png").exists()
