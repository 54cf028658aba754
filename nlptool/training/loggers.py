"""Where training records go: metrics.jsonl always, and the trackers people already watch.

`trainer.loggers=[jsonl,tensorboard,wandb,mlflow]`. Each record (one JSON object with "step")
goes to every logger chosen; the three integrations are optional extras, and choosing one that
is not installed stops the run before it starts with the command that installs it.

- tensorboard: event files in `<run_dir>/tensorboard` (`tensorboard --logdir runs`).
- wandb: the run `trainer.run_name` (default: the run directory's name) in project
  `trainer.wandb_project`; a resumed run continues the same W&B run (its id is derived from the run
  directory). Offline with WANDB_MODE=offline.
- mlflow: the tracking server of MLFLOW_TRACKING_URI, or a file store in `<run_dir>/mlruns`;
  experiment `trainer.mlflow_experiment`; the config as parameters; a resumed run continues the
  same MLflow run (its id is kept in the run directory).

Each run also gets `curves.png` (training loss, learning rate, validation metrics by step) when
matplotlib is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Any

from nlptool.errors import UserError
from nlptool.training.config import LOGGERS


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl; every record carries "step"."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled  # (off on every rank but 0)
        if enabled and resume_step is not None and path.exists():
            # Records past the checkpoint we resume from belong to a run that was lost: drop them.
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _plain(v) for k, v in record.items()}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# logger -> (module that must import, pip package, nlptool extra)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow", "mlflow"),
}


def check_loggers(names: list[str]) -> None:
    """A UserError for an unknown logger or one whose package is missing (before training)."""
    for name in names:
        if name not in LOGGERS:
            raise UserError(
                f"trainer.loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)}"
            )
        if name in PACKAGES:
            module, package, extra = PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise UserError(
                    f"trainer.loggers includes {name}, but {package} is not installed: "
                    f"pip install 'nlptool[{extra}]' (or pip install {package}), or drop {name} "
                    "from trainer.loggers"
                )


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers (not "step"), for trackers that take scalars only."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class TensorBoardLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, run_dir: Path, config: dict[str, Any], run_name: str, project: str, **_):
        import wandb

        run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=project,
            name=run_name,
            id=run_id,
            resume="allow",  # a resumed or requeued run continues the same W&B run
            dir=str(run_dir),
            config=config,
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger:
    def __init__(
        self, run_dir: Path, config: dict[str, Any], run_name: str, experiment: str, **_: Any
    ) -> None:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # A local file store beside the run (MLflow keeps it in maintenance mode).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        mlflow.set_experiment(experiment)
        id_file = run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        if run_id is None:
            id_file.write_text(self.run.info.run_id + "\n")
            params = {k: str(v)[:500] for k, v in flatten(config).items()}
            mlflow.log_params(params)
        self.mlflow = mlflow

    def log(self, step: int, values: dict[str, float]) -> None:
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        if finite:
            self.mlflow.log_metrics(finite, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


INTEGRATIONS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}


class Loggers:
    """metrics.jsonl (always) and the chosen trackers; `write` sends a record to each. Only the
    main process (rank 0) logs anywhere."""

    def __init__(
        self,
        run_dir: Path,
        names: list[str],
        config: dict[str, Any],
        trainer_cfg: Any,
        resume_step: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.jsonl = MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step, enabled=enabled)
        self.path = self.jsonl.path
        self.trackers: list[Any] = []
        if not enabled:
            return
        check_loggers(names)
        settings = {
            "run_name": trainer_cfg.run_name or run_dir.name,
            "project": trainer_cfg.wandb_project,
            "experiment": trainer_cfg.mlflow_experiment,
        }
        for name in dict.fromkeys(names):  # (each once, in the order given)
            if name in INTEGRATIONS:
                self.trackers.append(INTEGRATIONS[name](run_dir, config, **settings))

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(record)
        values = numeric(record)
        for tracker in self.trackers:
            tracker.log(int(record["step"]), values)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
        if self.jsonl.enabled:
            plot_curves(self.path, self.run_dir / "curves.png")


def plot_curves(metrics: Path, out: Path) -> Path | None:
    """curves.png from metrics.jsonl: training (and validation) loss, learning rate, and the
    other validation metrics, each against the step. None when matplotlib is not installed or
    nothing was logged."""
    if importlib.util.find_spec("matplotlib") is None or not metrics.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    records = []
    for line in metrics.read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [
            (r["step"], r[key])
            for r in records
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
        ]
        return [p[0] for p in points], [p[1] for p in points]

    others = sorted(
        {
            k
            for r in records
            for k in r
            if k.startswith("valid/")
            and k not in ("valid/loss", "valid/ppl")
            and not k.endswith("_loss")
        }
    )
    panels = [["train/loss", "valid/loss"], ["train/lr"], *([others] if others else [])]
    if not series("train/loss")[0] and not series("valid/loss")[0]:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, keys in zip(axes[0], panels):
        for key in keys:
            steps, values = series(key)
            if steps:
                ax.plot(steps, values, marker="o" if key.startswith("valid/") else None,
                        markersize=3, label=key)  # fmt: skip
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[0][0].set_title("loss")
    axes[0][1].set_title("learning rate")
    if others:
        axes[0][2].set_title("validation")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
