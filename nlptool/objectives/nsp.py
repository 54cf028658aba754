"""Masked LM plus next-sentence prediction (BERT's original pretraining).

The pair is drawn by the data pipeline (`PretrainingExamples._nsp_pair`): label 0 when segment B
follows A in the document, 1 when B comes from another document. The NSP head reads the pooled
first token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.objectives.base import LossTerm
from nlptool.objectives.mlm import MaskedLM, masked_lm_term


class _MaskedLMWithPairTask(MaskedLM):
    """Masked LM plus a two-way prediction about the segment pair, made from the pooled first
    token: `pair_term` names the term and its labels in the batch (`<pair_term>_labels`)."""

    pair_term = "nsp"

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        counts = super().counts(batch)
        counts[self.pair_term] = torch.tensor(batch[f"{self.pair_term}_labels"].numel())
        return counts

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        hidden = model(batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"])
        pair_logits = model.nsp_logits(model.pool(hidden))  # (B, 2)
        labels = batch[f"{self.pair_term}_labels"]
        pair = LossTerm(
            F.cross_entropy(pair_logits.float(), labels, reduction="sum"),
            (pair_logits.argmax(dim=-1) == labels).sum(),
        )
        return {"mlm": masked_lm_term(model, hidden, batch["mlm_labels"]), self.pair_term: pair}


class MaskedLMWithNSP(_MaskedLMWithPairTask):
    name = "mlm_nsp"
    terms = ("mlm", "nsp")
    pair_term = "nsp"


class MaskedLMWithSOP(_MaskedLMWithPairTask):
    """Masked LM plus sentence-order prediction (ALBERT): the pair is two consecutive segments of
    one document, label 1 when the pipeline swapped them (`PretrainingExamples._sop_pair`). The
    two-way head on the pooled first token is the same shape as NSP's (and the same module)."""

    name = "sop"
    terms = ("mlm", "sop")
    pair_term = "sop"
