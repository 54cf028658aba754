"""Fine-tuning tasks: heads, data and metrics for downstream evaluation."""

from __future__ import annotations

from nlptool.errors import UserError

SEQUENCE_KINDS = ("classification", "pair_classification", "regression")


def build_task(cfg):
    """The task object for `task.kind` (see nlptool.tasks.base for what a task provides)."""
    if cfg.kind in SEQUENCE_KINDS:
        from nlptool.tasks.classification import SequenceClassificationTask

        return SequenceClassificationTask(cfg)
    raise UserError(
        f"task.kind={cfg.kind} (task={cfg.name}) is not available yet; available kinds: "
        f"{', '.join(SEQUENCE_KINDS)}"
    )
