"""Checkpoints in: where `init=` / `checkpoint=` point, the config sections a checkpoint fixes,
and a fine-tuned checkpoint's task and model, loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from nlptool.cache import nlptool_cache_dir
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.interop.sources import resolve_model_source
from nlptool.models.config import ModelConfig
from nlptool.schema import typed_section
from nlptool.tasks import build_task
from nlptool.tasks.config import TaskConfig
from nlptool.training import checkpoint as ckpt


def model_source(cfg: DictConfig, key: str) -> Path:
    """`init=` / `checkpoint=`: an nlptool checkpoint, a Hugging Face model folder or hf:<name>
    (imported into the cache once)."""
    cache = cfg.data.get("cache_dir") if "data" in cfg else None
    cache_dir = Path(cache).expanduser() if cache else nlptool_cache_dir()
    return resolve_model_source(cfg[key], key, cache_dir)


def with_checkpoint_model(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """A copy of the config whose model and tokenizer are the checkpoint's (the architecture and
    vocabulary are fixed by the weights); everything else stays as composed."""
    cfg = cfg.copy()
    cfg.model = OmegaConf.merge(cfg.model, saved.model)
    cfg.tokenizer = OmegaConf.merge(cfg.tokenizer, saved.tokenizer)
    return cfg


def task_model_from_checkpoint(path: Path) -> tuple[Any, torch.nn.Module, DictConfig]:
    """A fine-tuned checkpoint's task (with its labels and tokenizer) and its model, loaded."""
    saved = ckpt.saved_config(path)
    if saved.get("task") is None:
        raise UserError(
            f"checkpoint={path} was pretrained, not fine-tuned on a task: predictions need a "
            "fine-tuned checkpoint (nlptool finetune task=... init=...)"
        )
    task_cfg = typed_section(saved, "task", TaskConfig)
    task = build_task(task_cfg, saved.model.arch)
    task.set_tokenizer(TextTokenizer.load(path))
    task.labels = list(task_cfg.labels or [])
    model = task.build_model(typed_section(saved, "model", ModelConfig))
    ckpt.load_weights(model, path)
    return task, model, saved
