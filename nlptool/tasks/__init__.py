"""Fine-tuning tasks: heads, data and metrics for downstream evaluation."""

from __future__ import annotations

import importlib

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


def build_task(cfg, model_arch: str | None = None):
    """The task object for `task.kind`, or the user's class of `task._target_`, told the
    architecture of its model (`model.arch`) when given and when it has a `model_arch`."""
    task = _new_task(cfg)
    if model_arch is not None and hasattr(task, "model_arch"):
        task.model_arch = model_arch
    return task


def _new_task(cfg):
    if getattr(cfg, "_target_", None):
        from nlptool.plugins import instantiate

        return instantiate(
            cfg._target_, "task", "nlptool.tasks.base.Task", TASK_CONTRACT, cfg, **cfg.params
        )
    module, name = TASKS[cfg.kind]
    return getattr(importlib.import_module(module), name)(cfg)
