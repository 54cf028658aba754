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


def build_task(cfg):
    """The task object for `task.kind`."""
    module, name = TASKS[cfg.kind]
    return getattr(importlib.import_module(module), name)(cfg)
