"""Causal language modelling: predict each token from the ones before it.

Examples are packed blocks (documents joined with the end-of-text token), so a block of T tokens
gives T - 1 predictions; padded positions, if any, are not predicted.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import IGNORE_INDEX
from nlptool.data.pretraining import PretrainingExamples, pack_blocks, split_seed
from nlptool.models.config import ModelConfig
from nlptool.objectives.base import Batch, LossTerm, PretrainingObjective


def lm_head_flops(model_cfg: ModelConfig, batch: Batch) -> float:
    """The output projection at every position that has a next token."""
    b, t = batch["input_ids"].shape
    return float(2 * b * (t - 1) * model_cfg.hidden_size * model_cfg.vocab_size)


class CausalLM(PretrainingObjective):
    name = "clm"
    terms = ("clm",)
    perplexity_term = "clm"
    architectures: ClassVar[tuple[str, ...]] = ("gpt",)

    needs: ClassVar[str] = "a causal decoder (model=gpt-*)"
    instead: ClassVar[str] = "; use objective=mlm or mlm_nsp with bert models"

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> PretrainingExamples:
        self.pad_id = tokenizer.pad_id
        eos = tokenizer.require("eos", "objective=clm")
        return PretrainingExamples(
            "clm", pack_blocks(docs, max_seq_len, eos), split_seed(seed, valid)
        )

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        mask = batch.get("attention_mask")
        if mask is None:
            ids = batch["input_ids"]
            return {"clm": torch.tensor(ids.shape[0] * (ids.shape[1] - 1))}
        return {"clm": mask[:, 1:].sum()}

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        hidden = model(ids, mask)  # (B, T, H)
        logits = model.lm_logits(hidden[:, :-1])  # (B, T-1, V): position t predicts token t+1
        targets = ids[:, 1:]
        if mask is not None:
            targets = targets.masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        loss_sum = F.cross_entropy(flat_logits, targets.reshape(-1), reduction="sum")
        correct = ((logits.argmax(dim=-1) == targets) & (targets != IGNORE_INDEX)).sum()
        return {"clm": LossTerm(loss_sum, correct)}

    def head_flops(self, model_cfg: ModelConfig, batch: Batch) -> float:
        return lm_head_flops(model_cfg, batch)
