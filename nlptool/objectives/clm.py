"""Causal language modelling: predict each token from the ones before it.

Examples are packed blocks (documents joined with the end-of-text token), so a block of T tokens
gives T - 1 predictions; padded positions, if any, are not predicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.objectives.base import LossTerm


class CausalLM:
    name = "clm"
    terms = ("clm",)
    perplexity_term = "clm"

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch.get("attention_mask")
        if mask is None:
            ids = batch["input_ids"]
            return {"clm": torch.tensor(ids.shape[0] * (ids.shape[1] - 1))}
        return {"clm": mask[:, 1:].sum()}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        hidden = model(ids, mask)  # (B, T, H)
        logits = model.lm_logits(hidden[:, :-1])  # (B, T-1, V): position t predicts token t+1
        targets = ids[:, 1:]
        if mask is not None:
            targets = targets.masked_fill(mask[:, 1:] == 0, -100)
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        loss_sum = F.cross_entropy(flat_logits, targets.reshape(-1), reduction="sum")
        correct = ((logits.argmax(dim=-1) == targets) & (targets != -100)).sum()
        return {"clm": LossTerm(loss_sum, correct)}
