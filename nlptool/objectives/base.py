"""What every objective (and later every task) gives the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass
class LossTerm:
    """One term of the loss over one micro-batch."""

    loss_sum: torch.Tensor  # () summed over the term's predictions
    correct: torch.Tensor  # () number of correct predictions (for accuracy)


class Objective(Protocol):
    name: str
    terms: tuple[str, ...]
    """Names of the loss terms, e.g. ("mlm", "nsp")."""
    perplexity_term: str | None
    """The language-modelling term whose mean loss gives the perplexity."""

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions per term in this batch, computed from the batch alone (no model)."""
        ...

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        """Run the model on the batch; the summed loss and correct count of every term."""
        ...
