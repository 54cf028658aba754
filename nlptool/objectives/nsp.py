"""Masked LM plus a sentence-pair task: next-sentence prediction (BERT) or sentence order (ALBERT).

The pair is drawn by the data pipeline from runs of whole segments (`nsp_instances`):
`PretrainingExamples._nsp_pair` gives label 0 when segment B follows A in the document, 1 when B
comes from another document; `_sop_pair` two consecutive segments, label 1 when swapped. The
two-way head reads the pooled first token.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.pretraining import PretrainingExamples, nsp_instances, split_seed
from nlptool.models.config import ModelConfig
from nlptool.objectives.base import Batch, LossTerm
from nlptool.objectives.mlm import MaskedLM, masked_lm_term


class _MaskedLMWithPairTask(MaskedLM):
    """Masked LM plus a two-way prediction about the segment pair, made from the pooled first
    token: `pair_term` names the term and its labels in the batch (`<pair_term>_labels`)."""

    pair_term = "nsp"

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> PretrainingExamples:
        self.pad_id = tokenizer.pad_id
        ids = self.special_ids(tokenizer)
        return PretrainingExamples(
            self.name,
            nsp_instances(docs, max_seq_len),
            split_seed(seed, valid),
            max_seq_len=max_seq_len,
            docs=docs,
            nsp_random_prob=self.cfg.nsp_random_prob,
            sop_swap_prob=self.cfg.sop_swap_prob,
            **ids,
        )

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        counts = super().counts(batch)
        counts[self.pair_term] = torch.tensor(batch[f"{self.pair_term}_labels"].numel())
        return counts

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        hidden = model(batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"])
        pair_logits = model.nsp_logits(model.pool(hidden))  # (B, 2)
        labels = batch[f"{self.pair_term}_labels"]
        pair = LossTerm(
            F.cross_entropy(pair_logits.float(), labels, reduction="sum"),
            (pair_logits.argmax(dim=-1) == labels).sum(),
        )
        return {"mlm": masked_lm_term(model, hidden, batch["mlm_labels"]), self.pair_term: pair}

    def head_flops(
        self, model_cfg: ModelConfig, batch: Batch, all_positions: bool = False
    ) -> float:
        h = model_cfg.hidden_size
        pooler_and_pair_head = 2 * batch["input_ids"].shape[0] * (h * h + 2 * h)
        return super().head_flops(model_cfg, batch, all_positions) + pooler_and_pair_head


class MaskedLMWithNSP(_MaskedLMWithPairTask):
    name = "mlm_nsp"
    terms = ("mlm", "nsp")
    pair_term = "nsp"


class MaskedLMWithSOP(_MaskedLMWithPairTask):
    """Masked LM plus sentence-order prediction (ALBERT): the pair is two consecutive segments of
    one document, label 1 when the pipeline swapped them. The two-way head on the pooled first
    token is the same shape as NSP's (and the same module)."""

    name = "sop"
    terms = ("mlm", "sop")
    pair_term = "sop"
