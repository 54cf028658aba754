"""Masked language modelling: predict the selected tokens from both sides' context.

The masking itself is a data-pipeline choice (`nlptool.data.pretraining.mask_tokens`); here the
MLM head runs only on the selected positions, about 15% of the tokens, which saves most of the
vocabulary projection's cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.pretraining import IGNORE_INDEX
from nlptool.objectives.base import LossTerm


def masked_lm_term(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> LossTerm:
    """hidden (B, T, H), labels (B, T) with IGNORE_INDEX where nothing is predicted."""
    selected = labels != IGNORE_INDEX  # (B, T)
    logits = model.mlm_logits(hidden[selected])  # (N, V)
    targets = labels[selected]  # (N,)
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(dim=-1) == targets).sum()
    return LossTerm(loss_sum, correct)


class MaskedLM:
    name = "mlm"
    terms = ("mlm",)
    perplexity_term = "mlm"

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mlm": (batch["mlm_labels"] != IGNORE_INDEX).sum()}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        hidden = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return {"mlm": masked_lm_term(model, hidden, batch["mlm_labels"])}
