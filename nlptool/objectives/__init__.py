"""Pretraining objectives: a batch and a model in, summed loss terms out.

An objective names its loss terms (`mlm`, `nsp`, `clm`). For each term it can count, from the
batch alone, how many predictions the batch holds; the training loop adds these counts up over
the whole global batch (every micro-batch and every process) and divides each term's summed
loss by its count, so the loss is the same however the batch is split.
"""

from __future__ import annotations

from nlptool.objectives.base import LossTerm, Objective
from nlptool.objectives.clm import CausalLM
from nlptool.objectives.mlm import MaskedLM
from nlptool.objectives.nsp import MaskedLMWithNSP, MaskedLMWithSOP

OBJECTIVES: dict[str, type[Objective]] = {
    "mlm": MaskedLM,
    "mlm_nsp": MaskedLMWithNSP,
    "clm": CausalLM,
    "sop": MaskedLMWithSOP,
}


CUSTOM_CONTRACT = (
    "name", "terms", "perplexity_term", "counts", "__call__", "build_examples", "collate",
)  # fmt: skip


def build_objective(cfg) -> Objective:
    """The objective of an ObjectiveConfig (its `_target_` class, or the built-in `name`), or of
    a built-in name."""
    if isinstance(cfg, str):
        return OBJECTIVES[cfg]()
    if cfg._target_:
        from nlptool.plugins import instantiate

        return instantiate(
            cfg._target_, "objective", "nlptool.objectives.base.CustomObjective",
            CUSTOM_CONTRACT, **cfg.params,
        )  # fmt: skip
    return OBJECTIVES[cfg.name]()


__all__ = ["LossTerm", "Objective", "OBJECTIVES", "build_objective"]
