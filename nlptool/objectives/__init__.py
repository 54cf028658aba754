"""Pretraining objectives: a batch and a model in, summed loss terms out.

An objective names its loss terms (`mlm`, `nsp`, `clm`). For each term it can count, from the
batch alone, how many predictions the batch holds; the training loop adds these counts up over
the whole global batch (every micro-batch and every process) and divides each term's summed
loss by its count, so the loss is the same however the batch is split.

The built-in objectives are found here by name: every `PretrainingObjective` subclass with a
`name` in a module of this package. A new one is one module plus `configs/objective/<name>.yaml`.
"""

from __future__ import annotations

import importlib
import pkgutil

from nlptool.objectives.base import LossTerm, Objective, PretrainingObjective, optional_parts
from nlptool.objectives.config import ObjectiveConfig
from nlptool.plugins import complete, instantiate


def _discover() -> dict[str, type[PretrainingObjective]]:
    found: dict[str, type[PretrainingObjective]] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name in ("base", "config"):
            continue
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        for value in vars(loaded).values():
            if (
                isinstance(value, type)
                and issubclass(value, PretrainingObjective)
                and value.__module__ == loaded.__name__
                and vars(value).get("name")  # (its own name: not a base it shares)
            ):
                found[value.name] = value
    return found


OBJECTIVES: dict[str, type[PretrainingObjective]] = _discover()

CUSTOM_CONTRACT = (
    "name", "terms", "perplexity_term", "counts", "__call__", "build_examples", "collate",
)  # fmt: skip


def build_objective(cfg: ObjectiveConfig | str) -> Objective:
    """The objective of an ObjectiveConfig (its `_target_` class, or the built-in `name`), or of
    a built-in name."""
    if isinstance(cfg, str):
        return OBJECTIVES[cfg]()
    if cfg._target_:
        custom = instantiate(
            cfg._target_, "objective", "nlptool.objectives.base.CustomObjective",
            CUSTOM_CONTRACT, **cfg.params,
        )  # fmt: skip
        return complete(custom, optional_parts(custom))
    return OBJECTIVES[cfg.name](cfg)


__all__ = ["LossTerm", "OBJECTIVES", "Objective", "PretrainingObjective", "build_objective"]
