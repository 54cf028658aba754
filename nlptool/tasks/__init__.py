"""Fine-tuning tasks: heads, data and metrics for downstream evaluation."""

from __future__ import annotations

import importlib

from nlptool.plugins import complete, instantiate
from nlptool.tasks.config import TaskConfig

# task.kind -> the module and class that implement it (see nlptool.tasks.base.Task)
TASKS = {
    "classification": ("nlptool.tasks.classification", "SequenceClassificationTask"),
    "pair_classification": ("nlptool.tasks.classification", "SequenceClassificationTask"),
    "regression": ("nlptool.tasks.classification", "SequenceClassificationTask"),
    "ner": ("nlptool.tasks.ner", "TokenClassificationTask"),
    "qa": ("nlptool.tasks.qa", "QuestionAnsweringTask"),
    "translation": ("nlptool.tasks.translation", "TranslationTask"),
    "lm": ("nlptool.tasks.lm", "LanguageModelingTask"),
}


TASK_CONTRACT = (
    "terms", "perplexity_term", "main_metric", "greater_is_better", "read", "training_texts",
    "set_tokenizer", "set_labels_from", "encode", "collate", "build_model", "counts",
    "start_eval", "eval_batch", "end_eval",
)  # fmt: skip


def head_flops(self, model_cfg, batch) -> float:
    """(a task of one's own that does not count its head: the blocks alone make its MFU)"""
    return 0.0


# What a task of one's own may leave out of the loop's protocol (nlptool.objectives.base.Objective)
OPTIONAL_PARTS = {"accuracy_terms": (), "shard_eval": False, "head_flops": head_flops}


def task_class(cfg: TaskConfig) -> type:
    """The built-in class that implements `task.kind`."""
    module, name = TASKS[cfg.kind]
    return getattr(importlib.import_module(module), name)


def build_task(cfg: TaskConfig, model_arch: str | None = None):
    """The task object for `task.kind`, or the user's class of `task._target_`, told the
    architecture of its model (`model.arch`) when given and when it has a `model_arch`."""
    if getattr(cfg, "_target_", None):
        task = instantiate(
            cfg._target_, "task", "nlptool.tasks.base.Task", TASK_CONTRACT, cfg, **cfg.params
        )
        complete(task, OPTIONAL_PARTS)
    else:
        task = task_class(cfg)(cfg)
    if model_arch is not None and hasattr(task, "model_arch"):
        task.model_arch = model_arch
    return task
