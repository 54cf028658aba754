"""`nlptool pretrain` and `nlptool finetune`: one path from a config to a trained, saved model,
for a pretraining objective or a downstream task alike."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig

from nlptool.console import console, show_end, show_start
from nlptool.data.tokenizer import TextTokenizer
from nlptool.models import count_parameters
from nlptool.objectives import build_objective
from nlptool.schema import FinetuneConfig, PretrainConfig, check_config, to_yaml
from nlptool.training import checkpoint as ckpt
from nlptool.training import distributed
from nlptool.training.distributed import Dist
from nlptool.training.loggers import Loggers, check_loggers
from nlptool.training.loop import Trainer, TrainingJob
from nlptool.training.resume import FIXED_ON_RESUME, check_resume_compatible, find_resume
from nlptool.training.runtime import resolve_device, seed_everything
from nlptool.training.signals import TrainingInterrupted, stopped_by_signal
from nlptool.verbs import RunContext
from nlptool.verbs.loading import model_source, with_checkpoint_model
from nlptool.verbs.prepare import model_config_for, prepare_data, prepare_task

# A task's objective (its head and loss) may differ from the checkpoint's pretraining objective.
TASK_FIXED_ON_RESUME = ("model", "tokenizer")


def pretrain(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Train a model from scratch with its pretraining objective."""
    return train(check_config(cfg), ctx)


def finetune(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Fine-tune on a downstream task (`task=...`), from `init` or from scratch; without a task,
    continue training `init` on new text with its objective (domain-adaptive pretraining)."""
    init = model_source(cfg, "init") if cfg.get("init") else None
    if init is not None:
        cfg = with_checkpoint_model(cfg, ckpt.saved_config(init))
    return train(check_config(cfg), ctx, init)


@dataclass
class RunStart:
    run_dir: Path
    device: torch.device
    resume_path: Path | None
    tokenizer: TextTokenizer | None  # the resumed run's or init's; None: make one
    dist: Dist = distributed.SINGLE


def start_run(
    cfg: PretrainConfig, ctx: RunContext, init: Path | None, fixed: tuple[str, ...]
) -> RunStart:
    """Processes, device, the checkpoint to resume (checked against the config) and the
    tokenizer that comes with it or with `init`."""
    check_loggers(list(cfg.trainer.loggers))  # a missing tracker package: before any work
    dist = distributed.setup(cfg.trainer.strategy)
    device = distributed.device_for(str(resolve_device(cfg.trainer.device)), dist)
    resume_path = find_resume(cfg.resume, ctx.run_dir)
    tokenizer = None
    if resume_path is not None:
        check_resume_compatible(
            cfg, ckpt.read_checkpoint(resume_path).config_yaml, resume_path, fixed
        )
        tokenizer = TextTokenizer.load(resume_path)
    elif init is not None:
        tokenizer = TextTokenizer.load(init)
    return RunStart(ctx.run_dir, device, resume_path, tokenizer, dist)


def train(cfg: PretrainConfig | FinetuneConfig, ctx: RunContext, init: Path | None = None):
    """The whole run: data, model (from `init` when given), training with validation and
    checkpoints, the start and end panels. Returns the validation history."""
    task_cfg = getattr(cfg, "task", None)
    start = start_run(cfg, ctx, init, TASK_FIXED_ON_RESUME if task_cfg else FIXED_ON_RESUME)
    started = time.perf_counter()
    with distributed.main_first():  # rank 0 fills the caches, the others read them
        if task_cfg is None:
            objective = build_objective(cfg.objective)  # (one instance: its data and batches)
            data = prepare_data(cfg, start.tokenizer, objective)
            tokenizer, train_data, valid_data = data.tokenizer, data.train, data.valid
            described = f"{data.description}: {len(train_data):,} train / {len(valid_data):,} "
            described += f"valid examples of {cfg.data.max_seq_len} tokens"
        else:
            tokenizer, objective, encoded = prepare_task(cfg, start.tokenizer, ("train", "valid"))
            train_data, valid_data = encoded["train"], encoded["valid"]
            described = f"{len(train_data):,} train / {len(valid_data):,} valid examples"
    described += f" (prepared in {time.perf_counter() - started:.1f}s)"
    seed_everything(cfg.trainer.seed)
    model = objective.build_model(model_config_for(cfg, tokenizer))
    if init is not None and start.resume_path is None:
        initialise(model, init, fresh_heads=task_cfg is not None, quiet=cfg.trainer.quiet)
    job = TrainingJob(
        model=model,
        objective=objective,
        train_data=train_data,
        valid_data=valid_data,
        collate=objective.collate,
        tokenizer=tokenizer,
        config_yaml=to_yaml(cfg),
        run_dir=start.run_dir,
        extra_state={"init": str(init) if init else None},
        early_stopping_patience=task_cfg.early_stopping_patience if task_cfg else 0,
    )
    trainer = Trainer(cfg.trainer, job, start.device, start.dist)
    if start.resume_path is not None:
        trainer.restore(start.resume_path)
        if not cfg.trainer.quiet:
            console.print(f"Resuming from {start.resume_path} at step {trainer.step}")
    title, rows = start_rows(cfg, objective, model, init, described, start, trainer)
    show_start(title, rows, cfg.trainer.quiet)
    history, minutes = fit(trainer, start)
    if trainer.best is not None:
        history["best"] = {f"valid/{objective.main_metric}": trainer.best}
    best = start.run_dir / "checkpoints" / "best"
    kept = best if best.exists() else start.run_dir / "checkpoints" / "last"
    show_end("Validation", history, end_rows(trainer, minutes, kept), cfg.trainer.quiet)
    return history


def initialise(model: torch.nn.Module, init: Path, fresh_heads: bool, quiet: bool) -> None:
    """The weights of `init`: all of them (continued pretraining), or all that fit a task's model
    (a head the checkpoint lacks starts fresh, and is named)."""
    fresh: list[str] = []
    if fresh_heads:
        fresh, _ = ckpt.load_matching_weights(model, init)
    else:
        ckpt.load_weights(model, init)
    if not quiet:
        console.print(
            f"Initialised from {init}" + (f"; new, untrained: {', '.join(fresh)}" if fresh else "")
        )


def start_rows(
    cfg: PretrainConfig, objective: Any, model: torch.nn.Module, init: Path | None, described: str,
    start: RunStart, trainer: Trainer,
) -> tuple[str, list[tuple[str, str]]]:  # fmt: skip
    """The start panel: what is trained on what, how, where."""
    t, plan, task = cfg.trainer, trainer.plan, getattr(cfg, "task", None)
    model_row = f"{cfg.model.name} ({cfg.model.arch}), {count_parameters(model):,} parameters"
    if task is not None:
        labels = f", labels {', '.join(objective.labels)}" if objective.labels else ""
        what = [("task", f"{task.name} ({task.kind}){labels}"), ("model", model_row)]
        what.append(("init", str(init) if init else "none (from scratch)"))
    else:
        what = [("model", model_row), ("objective", cfg.objective.name)]
        if init:
            what.append(("init", str(init)))
    rows = [
        *what,
        ("data", described),
        ("tokenizer", f"{cfg.tokenizer.kind}, {trainer.job.tokenizer.vocab_size:,} tokens"),
        (
            "trainer",
            f"{t.max_steps} steps x {t.batch_size} sequences ({plan.micro_batch_size} per "
            f"forward, {plan.accumulation * plan.world_size} accumulated in all), lr {t.lr:g} "
            f"{t.schedule} with {t.warmup_steps} warm-up",
        ),
    ]
    if task is None:
        tokens = f"{t.batch_size * cfg.data.max_seq_len:,} (at most; padding excluded)"
        rows.append(("tokens/step", tokens))
    compiled = ", compiled" if t.compile else ""
    rows.append(("device", f"{start.device}, {t.precision}{compiled}; {describe(start.dist)}"))
    rows.append(("run dir", str(start.run_dir)))
    if task is not None:
        return "nlptool finetune", rows
    return ("nlptool finetune (continued pretraining)" if init else "nlptool pretrain"), rows


def describe(d: Dist) -> str:
    if d.strategy == "single":
        return "one process"
    return f"{d.strategy}, {d.world_size} process{'es' * (d.world_size != 1)}"


def fit(trainer: Trainer, start: RunStart) -> tuple[dict[str, Any], float]:
    """Train, logging to metrics.jsonl and the trackers; the validation history and the minutes
    it took. A signal that stopped training ends the process (after the checkpoint)."""
    log = Loggers(
        start.run_dir,
        list(trainer.cfg.loggers),
        yaml.safe_load(trainer.job.config_yaml),
        trainer.cfg,
        resume_step=trainer.step if start.resume_path else None,
        enabled=start.dist.is_main,
    )
    started = time.perf_counter()
    try:
        history = trainer.fit(log)
    except TrainingInterrupted as stop:
        stopped_by_signal(stop, trainer.cfg.slurm_requeue and start.dist.is_main)
    finally:
        log.close()  # (curves.png; trackers finish, also when training failed)
    return history, (time.perf_counter() - started) / 60


def end_rows(trainer: Trainer, minutes: float, checkpoint: Path) -> list[tuple[str, str]]:
    """The end panel's lines under the metrics: time, throughput, MFU, checkpoint."""
    rows = [("time", f"{minutes:.1f} min ({trainer.train_seconds / 60:.1f} training)")]
    if trainer.train_seconds > 0:
        rows.append(("tokens/s", f"{trainer.tokens_seen / trainer.train_seconds:,.0f} average"))
    if trainer.last_mfu is not None:
        rows.append(("MFU", f"{trainer.last_mfu:.2f} (last log window)"))
    rows.append(("checkpoint", str(checkpoint)))
    return rows
