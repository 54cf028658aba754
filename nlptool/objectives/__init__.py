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


def build_objective(name: str) -> Objective:
    return OBJECTIVES[name]()


__all__ = ["LossTerm", "Objective", "OBJECTIVES", "build_objective"]
