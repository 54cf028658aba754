"""The verbs' top-level typed configs, composed from the configs that live beside their owners.

Each training verb's YAML (`configs/pretrain.yaml` ...) starts its defaults list with the schema
of that verb (registered by the CLI layer), so every group file and command-line override is
merged into a typed node: an unknown key or a value of the wrong type fails at composition,
naming the key. Range checks live in each part's `validate()`; the rules across parts (an
objective or task against the model's architecture, sequence lengths against positions) are
asked of the objective or task itself. No Hydra here: a plain dataclass tree and OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nlptool.data.config import DataConfig, TokenizerConfig
from nlptool.errors import UserError, check
from nlptool.models.config import ModelConfig
from nlptool.objectives import OBJECTIVES
from nlptool.objectives.config import ObjectiveConfig
from nlptool.tasks import task_class
from nlptool.tasks.config import TaskConfig
from nlptool.training.config import TrainerConfig

RESUME_HELP = "auto, never, or the path of a checkpoint folder"


@dataclass
class PretrainConfig:
    """`nlptool pretrain`: train a model from scratch with a self-supervised objective."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: str = "auto"
    """auto (continue from this run directory's last checkpoint if any), never, or a checkpoint."""


@dataclass
class FinetuneConfig(PretrainConfig):
    """`nlptool finetune`: continue training from `init` (a checkpoint)."""

    init: str | None = None
    """An nlptool checkpoint folder to start from (null: train from scratch)."""
    task: TaskConfig | None = None
    """The downstream task (config group `task`); null: continue the pretraining objective."""


@dataclass
class EvalConfig(PretrainConfig):
    """`nlptool eval`: evaluate a checkpoint on validation data."""

    checkpoint: str | None = None
    """The checkpoint folder to evaluate (required)."""
    split: str = "valid"
    """Which split to evaluate: valid, test (tasks), or train."""
    task: TaskConfig | None = None
    """The downstream task; null: the checkpoint's own (or its pretraining objective)."""


def check_config(cfg: DictConfig) -> Any:
    """Turn the composed config into typed objects and run every range and cross-field check.

    Returns the dataclass instance (PretrainConfig or a subclass). Raises UserError naming the key.
    """
    try:
        typed = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError) as err:
        raise UserError(f"Invalid config: {err}") from None
    try:
        for node in (typed.objective, typed.data, typed.tokenizer, typed.trainer):
            node.validate()
        if getattr(typed, "task", None) is not None:
            typed.task.validate()
        typed.model.validate()
        _check_combinations(typed)
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    return typed


def _check_combinations(cfg: PretrainConfig) -> None:
    task: TaskConfig | None = getattr(cfg, "task", None)
    if task is not None:
        if task._target_ is None:  # (a task of its own says in build_model what it needs)
            task_class(task).check_model(task, cfg.model)
        check(
            task.max_seq_len <= cfg.model.max_seq_len,
            f"task.max_seq_len={task.max_seq_len} exceeds model.max_seq_len="
            f"{cfg.model.max_seq_len}",
        )
    else:
        objective = cfg.objective
        if objective._target_ is None:  # (its own examples and loss: nothing to check here)
            check(
                objective.name in OBJECTIVES,
                f"objective.name={objective.name!r}: expected one of {tuple(OBJECTIVES)} "
                "(or objective._target_)",
            )
            OBJECTIVES[objective.name].check_model(cfg.model)
        check(
            cfg.data.max_seq_len <= cfg.model.max_seq_len,
            f"data.max_seq_len={cfg.data.max_seq_len} exceeds model.max_seq_len="
            f"{cfg.model.max_seq_len} (the model's number of positions)",
        )
        check(
            cfg.resume in ("auto", "never") or bool(cfg.resume),
            f"resume={cfg.resume!r}: expected {RESUME_HELP}",
        )
    if cfg.trainer.precision == "fp16":
        check(
            cfg.trainer.device != "cpu",
            "trainer.precision=fp16 needs a CUDA device (CPU has no fast fp16 kernels); "
            "use fp32 or bf16 on CPU",
        )


def to_yaml(cfg: Any) -> str:
    """A plain-YAML rendering of a config (DictConfig or dataclass), for checkpoints and logs."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_yaml(cfg, resolve=True)


def typed_section(saved: DictConfig, key: str, schema: type) -> Any:
    """A section of a checkpoint's saved config (`model`, `task`) as its typed dataclass; keys an
    older nlptool did not write take the schema's defaults."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), saved[key]))
