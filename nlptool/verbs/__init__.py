"""The verbs: one Hydra-free module each, a function from the composed config and a `RunContext`
to a result. The CLI layer (nlptool.cli) composes the config and builds the context; anything else
(a script, a test, a notebook) can call a verb the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class RunContext:
    """What a verb needs to know of its run beyond the config."""

    run_dir: Path
    """Where the run writes (metrics.jsonl, checkpoints/, eval.json ...)."""
    overridden: frozenset[str] = field(default_factory=frozenset)
    """The config keys, and their top-level sections, the user set on the command line
    (`trainer.seed`, `trainer`): eval keeps the checkpoint's settings for the others."""

    def __post_init__(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)  # (Hydra makes it; a caller may not)
