"""What every objective (and later every task) gives the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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


class CustomObjective(Objective, Protocol):
    """What an `objective._target_` class provides: the Objective above (name, terms,
    perplexity_term, counts, __call__) and the data it trains on. It is built as
    `Class(**objective.params)`; the model is the one of `model.arch` (or `model._target_`).

    The examples must be a map-style data set keyed by (epoch, index) whose random choices come
    from (seed, epoch, index) (`nlptool.data.pretraining.example_rng`): resuming and running on
    several ranks stay exact. The built-in objectives are written the same way (see
    `nlptool.data.pretraining.PretrainingExamples`)."""

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> Any:
        """Examples from tokenized documents (a datasets.Dataset with a "segments" column: per
        document, the token ids of each sentence, without special tokens; `pack_blocks` and
        `nsp_instances` of nlptool.data.pretraining take it as it is); `valid`: the validation
        split (draw its random choices apart)."""
        ...

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """A batch from examples (pad with `tokenizer.pad_id`, labels with -100)."""
        ...
