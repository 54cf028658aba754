"""`nlptool eval`: a checkpoint's metrics on a split -> eval.json; for a fine-tuned checkpoint
also one line per example -> predictions.jsonl (input, gold, prediction)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nlptool.console import console, metrics_table
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.objectives import build_objective
from nlptool.schema import check_config, to_yaml
from nlptool.tasks.config import TaskConfig
from nlptool.training import checkpoint as ckpt
from nlptool.training import distributed
from nlptool.training.loop import Trainer, TrainingJob
from nlptool.training.runtime import resolve_device
from nlptool.verbs import RunContext
from nlptool.verbs.loading import model_source, with_checkpoint_model
from nlptool.verbs.prepare import model_config_for, prepare_data, prepare_task


def evaluate(cfg: DictConfig, ctx: RunContext) -> dict[str, Any]:
    """Evaluate a checkpoint with its objective, or its task, on a split; write eval.json."""
    if not cfg.get("checkpoint"):
        raise UserError("nlptool eval needs checkpoint=<checkpoint folder or run directory>")
    path = model_source(cfg, "checkpoint")
    saved = ckpt.saved_config(path)
    on_task = saved.get("task") is not None or cfg.get("task") is not None
    split = cfg.split
    cfg = task_config(cfg, saved, path, ctx) if on_task else objective_config(cfg, saved, ctx)
    typed = check_config(cfg)
    device = resolve_device(typed.trainer.device)
    tokenizer = TextTokenizer.load(path)
    with distributed.main_first():
        if on_task:
            labels = list(typed.task.labels or [])
            tokenizer, objective, encoded = prepare_task(typed, tokenizer, (split,))
            objective.labels = labels or objective.labels
            examples = encoded[split]
        else:
            objective = build_objective(typed.objective)
            data = prepare_data(typed, tokenizer, objective)
            examples = data.train if split == "train" else data.valid
    model = objective.build_model(model_config_for(typed, tokenizer))
    ckpt.load_weights(model, path)
    job = TrainingJob(
        model=model,
        objective=objective,
        train_data=examples,
        valid_data=examples,
        collate=objective.collate,
        tokenizer=tokenizer,
        config_yaml=to_yaml(typed),
        run_dir=ctx.run_dir,
    )
    predictions = ctx.run_dir / "predictions.jsonl" if on_task else None
    # (under torchrun every rank evaluates everything; rank 0 writes)
    main = distributed.is_main_process()
    metrics = Trainer(typed.trainer, job, device).evaluate(predictions if main else None, split)
    result = {split: {k.split("/", 1)[1]: v for k, v in metrics.items()}, "checkpoint": str(path)}
    if main:
        (ctx.run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"{typed.task.name} on {split} ({path})" if on_task else f"Evaluation of {path}"
    console.print(metrics_table(title, {split: metrics}))
    wrote = f" and {predictions}" if predictions else ""
    console.print(f"Wrote {ctx.run_dir / 'eval.json'}{wrote}")
    return result


def objective_config(cfg: DictConfig, saved: DictConfig, ctx: RunContext) -> DictConfig:
    """A pretrained checkpoint: its model, tokenizer, data, objective and seed (the seed fixes
    the validation masks), each unless given on the command line."""
    if cfg.split not in ("valid", "train"):
        raise UserError(f"split={cfg.split!r}: expected valid or train")
    cfg = with_checkpoint_model(cfg, saved)
    for section in ("data", "objective"):
        if section not in ctx.overridden:
            cfg[section] = OmegaConf.merge(cfg[section], saved[section])
    if "trainer.seed" not in ctx.overridden:
        cfg.trainer.seed = saved.trainer.seed
    data = cfg.data
    if data.get("valid_files") and not data.get("train_files") and cfg.split == "valid":
        # Scoring text files (perplexity of a causal LM on any text): no training files needed.
        data.train_files = data.valid_files
    return cfg


def task_config(cfg: DictConfig, saved: DictConfig, path: Path, ctx: RunContext) -> DictConfig:
    """A fine-tuned checkpoint: the task as trained (its labels above all), with the task.* keys
    given on the command line."""
    if saved.get("task") is None:
        raise UserError(
            f"checkpoint={path} was pretrained, not fine-tuned on a task: evaluate it without "
            "task=..., or fine-tune it first (nlptool finetune task=... init=...)"
        )
    if cfg.split not in ("valid", "test", "train"):
        raise UserError(f"split={cfg.split!r}: expected valid, test or train")
    cfg = with_checkpoint_model(cfg, saved)
    task = saved.task.copy()
    if cfg.get("task") is not None:
        if cfg.task.kind != saved.task.kind:
            raise UserError(
                f"task={cfg.task.name} ({cfg.task.kind}) does not fit the checkpoint, "
                f"which was fine-tuned on {saved.task.name} ({saved.task.kind})"
            )
        for key in cfg.task:
            if f"task.{key}" in ctx.overridden:
                task[key] = cfg.task[key]
    cfg.task = OmegaConf.merge(OmegaConf.structured(TaskConfig), task)
    return cfg
