"""The typed config of the `objective` group: which pretraining loss, and its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlptool.errors import check


@dataclass
class ObjectiveConfig:
    """What the pretraining loss is."""

    _target_: str | None = None
    """Your own objective class (module.Class, see nlptool.objectives.base.CustomObjective); it is
    built with objective.params as keyword arguments. null: the built-in objective `name`."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a _target_ objective (+objective.params.span=3 on the command line)."""
    name: str = "mlm"
    """mlm (masked LM), mlm_nsp (masked LM + next-sentence prediction), sop (masked LM +
    sentence-order prediction, ALBERT), clm (causal LM)."""
    mask_rate: float = 0.15
    """Fraction of non-special tokens selected for prediction (mlm, mlm_nsp)."""
    mask_token_prob: float = 0.8
    """Of the selected tokens, the fraction replaced by the mask token."""
    random_token_prob: float = 0.1
    """Of the selected tokens, the fraction replaced by a random token (the rest stay unchanged)."""
    nsp_random_prob: float = 0.5
    """mlm_nsp: probability that segment B is taken from another document."""
    whole_word: bool = False
    """mlm, mlm_nsp, sop: mask whole words (a WordPiece token and its "##" pieces together; each
    CJK character is a word) instead of single tokens."""
    sop_swap_prob: float = 0.5
    """sop: probability that the two consecutive segments are swapped (the label to predict)."""

    def validate(self) -> None:
        # (that `name` is a built-in objective is checked with the registry: nlptool.schema)
        check(
            0.0 < self.mask_rate < 1.0, f"objective.mask_rate={self.mask_rate}: must be in (0, 1)"
        )
        for key in ("mask_token_prob", "random_token_prob", "nsp_random_prob", "sop_swap_prob"):
            value = getattr(self, key)
            check(0.0 <= value <= 1.0, f"objective.{key}={value}: must be in [0, 1]")
        check(
            self.mask_token_prob + self.random_token_prob <= 1.0,
            "objective.mask_token_prob + objective.random_token_prob must not exceed 1 "
            f"(got {self.mask_token_prob} + {self.random_token_prob})",
        )
