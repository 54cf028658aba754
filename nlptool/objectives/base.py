"""What every objective (and every task) gives the training loop, and the built-ins' base class.

The loop knows objectives and tasks only through `Objective` below: the loss terms of a batch and
their prediction counts, the evaluation hooks, and the FLOPs of the head. A built-in objective is
one file of this package (a `PretrainingObjective` subclass with its `name`) plus one YAML in
configs/objective/: the registry (`nlptool.objectives.OBJECTIVES`) finds it by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from nlptool.data.pretraining import collate as pad_examples
from nlptool.models import build_model as build_architecture
from nlptool.models.config import ModelConfig
from nlptool.objectives.config import ObjectiveConfig

Batch = dict[str, torch.Tensor]


@dataclass
class LossTerm:
    """One term of the loss over one micro-batch."""

    loss_sum: torch.Tensor  # () summed over the term's predictions
    correct: torch.Tensor  # () number of correct predictions (for accuracy)


class Objective(Protocol):
    """What the training loop needs of an objective or a task (tasks add reading and encoding,
    `nlptool.tasks.base.Task`)."""

    name: str
    terms: tuple[str, ...]
    """Names of the loss terms, e.g. ("mlm", "nsp")."""
    perplexity_term: str | None
    """The language-modelling term whose mean loss gives the perplexity."""
    accuracy_terms: tuple[str, ...]
    """Terms whose accuracy (correct / predictions) validation reports as `<term>_accuracy`."""
    main_metric: str | None
    """The validation metric that picks checkpoints/best (None: no best checkpoint)."""
    greater_is_better: bool
    shard_eval: bool
    """Validation may be split over DDP ranks and the sums added up (False: the metrics need
    every prediction, as F1 or BLEU do, so every rank evaluates everything)."""

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Predictions per term in this batch, computed from the batch alone (no model)."""
        ...

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        """Run the model on the batch; the summed loss and correct count of every term."""
        ...

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None: ...

    def eval_batch(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        """The loss terms of a validation batch, while the objective keeps what its metrics need."""
        ...

    def end_eval(self) -> dict[str, float]:
        """The metrics of the evaluation since start_eval (beyond losses and accuracies)."""
        ...

    def head_flops(self, model_cfg: ModelConfig, batch: Batch) -> float:
        """Forward FLOPs of what runs after the model's blocks (heads, output projections)."""
        ...

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """The model, with the heads this objective or task uses."""
        ...


class CustomObjective(Protocol):
    """What an `objective._target_` class provides: `name`, `terms`, `perplexity_term`, `counts`,
    `__call__` (as in `Objective`) and the data it trains on. It is built as
    `Class(**objective.params)`; the model is the one of `model.arch` (or `model._target_`). The
    rest of `Objective` is optional: what it lacks is filled in as `PretrainingObjective` has it
    (accuracy of every term, no best checkpoint, no head FLOPs).

    The examples must be a map-style data set keyed by (epoch, index) whose random choices come
    from (seed, epoch, index) (`nlptool.data.pretraining.example_rng`): resuming and running on
    several ranks stay exact. The built-in objectives are written the same way (this package)."""

    name: str
    terms: tuple[str, ...]
    perplexity_term: str | None

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]: ...

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> Any:
        """Examples from tokenized documents (a datasets.Dataset with a "segments" column: per
        document, the token ids of each sentence, without special tokens; `pack_blocks` and
        `nsp_instances` of nlptool.data.pretraining take it as it is); `valid`: the validation
        split (draw its random choices apart)."""
        ...

    def collate(self, items: list[dict]) -> Batch:
        """A batch from examples (pad with `tokenizer.pad_id`, labels with -100)."""
        ...


class PretrainingObjective:
    """The built-in objectives' shared parts: the evaluation hooks (loss and accuracy per term),
    dynamic-padding collate, and the model-architecture rule of `check_model`."""

    name: ClassVar[str] = ""
    terms: tuple[str, ...] = ()
    perplexity_term: str | None = None
    main_metric: str | None = None
    greater_is_better = True
    shard_eval = True
    architectures: ClassVar[tuple[str, ...]] = ("bert",)
    """The `model.arch` values this objective trains ..."""
    needs: ClassVar[str] = "a bidirectional encoder (model=bert-*)"
    """... in words, and what to use instead, for the error."""
    instead: ClassVar[str] = "; use objective=clm with gpt models"

    def __init__(self, cfg: ObjectiveConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else ObjectiveConfig(name=self.name)
        self.pad_id = 0  # (the tokenizer's, set by build_examples)

    @property
    def accuracy_terms(self) -> tuple[str, ...]:
        return self.terms

    @classmethod
    def check_model(cls, model_cfg: ModelConfig) -> None:
        """Raise ValueError naming the keys when this objective cannot train that model."""
        if model_cfg.arch not in cls.architectures:
            raise ValueError(
                f"objective={cls.name} needs {cls.needs}, but model={model_cfg.name} is a "
                f"{model_cfg.arch} model{cls.instead}"
            )

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, items: list[dict]) -> Batch:
        return pad_examples(items, pad_id=self.pad_id)

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """The model it trains: the one of `model.arch` (or `model._target_`)."""
        return build_architecture(model_cfg)

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        pass

    def eval_batch(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        return self(model, batch)

    def end_eval(self) -> dict[str, float]:
        return {}

    def head_flops(self, model_cfg: ModelConfig, batch: Batch) -> float:
        return 0.0


def optional_parts(obj: Any) -> dict[str, Any]:
    """What a custom objective may leave out of `Objective`, as the built-ins have it."""
    return {
        "accuracy_terms": tuple(obj.terms),
        "main_metric": None,
        "greater_is_better": True,
        "shard_eval": True,
        "start_eval": PretrainingObjective.start_eval,
        "eval_batch": PretrainingObjective.eval_batch,
        "end_eval": PretrainingObjective.end_eval,
        "head_flops": PretrainingObjective.head_flops,
        "build_model": PretrainingObjective.build_model,
    }
