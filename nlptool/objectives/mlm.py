"""Masked language modelling: predict the selected tokens from both sides' context.

Examples are packed blocks wrapped in [CLS] ... [SEP], masked per example from (seed, epoch,
index) (`nlptool.data.pretraining.mask_tokens`; whole words with objective.whole_word). The MLM
head runs only on the selected positions, about 15% of the tokens, which saves most of the
vocabulary projection's cost.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import IGNORE_INDEX
from nlptool.data.pretraining import MaskingConfig, PretrainingExamples, pack_blocks, split_seed
from nlptool.errors import UserError
from nlptool.models.config import ModelConfig
from nlptool.objectives.base import Batch, LossTerm, PretrainingObjective


def masked_lm_term(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> LossTerm:
    """hidden (B, T, H), labels (B, T) with IGNORE_INDEX where nothing is predicted."""
    selected = labels != IGNORE_INDEX  # (B, T)
    logits = model.mlm_logits(hidden[selected])  # (N, V)
    targets = labels[selected]  # (N,)
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    correct = (logits.argmax(dim=-1) == targets).sum()
    return LossTerm(loss_sum, correct)


def mlm_head_flops(model_cfg: ModelConfig, rows: int) -> float:
    """The MLM head (transform and decoder) over `rows` positions."""
    h, v = model_cfg.hidden_size, model_cfg.vocab_size
    return float(2 * rows * (h * h + h * v))


def continuation_pieces(tokenizer: Any) -> np.ndarray:
    """objective.whole_word: which ids continue a word (WordPiece's "##" pieces)."""
    continuation = np.zeros(tokenizer.vocab_size, dtype=bool)
    for token, index in tokenizer.tokenizer.get_vocab(with_added_tokens=True).items():
        continuation[index] = token.startswith("##") and len(token) > 2
    if not continuation.any():
        raise UserError(
            "objective.whole_word=true groups WordPiece pieces into words ('##' continuations), "
            "but this tokenizer has none: use tokenizer=wordpiece (or wordpiece-cased)"
        )
    return continuation


class MaskedLM(PretrainingObjective):
    name = "mlm"
    terms = ("mlm",)
    perplexity_term = "mlm"
    architectures: ClassVar[tuple[str, ...]] = ("bert",)

    def masking(self, tokenizer: Any) -> MaskingConfig:
        cfg = self.cfg
        return MaskingConfig(
            mask_rate=cfg.mask_rate,
            mask_token_prob=cfg.mask_token_prob,
            random_token_prob=cfg.random_token_prob,
            mask_id=tokenizer.require("mask", f"objective={self.name}"),
            vocab_size=tokenizer.vocab_size,
            special_ids=np.asarray(tokenizer.special_ids, dtype=np.int64),
            continuation=continuation_pieces(tokenizer) if cfg.whole_word else None,
        )

    def special_ids(self, tokenizer: Any) -> dict[str, Any]:
        """The masking and the [CLS] / [SEP] ids every masked-LM example is made with."""
        return {
            "masking": self.masking(tokenizer),
            "cls_id": tokenizer.require("cls", f"objective={self.name}"),
            "sep_id": tokenizer.require("sep", f"objective={self.name}"),
        }

    def build_examples(
        self, docs: Any, tokenizer: Any, max_seq_len: int, seed: int, valid: bool
    ) -> PretrainingExamples:
        self.pad_id = tokenizer.pad_id
        ids = self.special_ids(tokenizer)
        blocks = pack_blocks(docs, max_seq_len - 2, ids["sep_id"])
        return PretrainingExamples(
            "mlm", blocks, split_seed(seed, valid), max_seq_len=max_seq_len, **ids
        )

    def counts(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"mlm": (batch["mlm_labels"] != IGNORE_INDEX).sum()}

    def __call__(self, model: nn.Module, batch: Batch) -> dict[str, LossTerm]:
        hidden = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        return {"mlm": masked_lm_term(model, hidden, batch["mlm_labels"])}

    def head_flops(
        self, model_cfg: ModelConfig, batch: Batch, all_positions: bool = False
    ) -> float:
        """The head at the masked positions (`all_positions`: at every position, as
        `transformers`' BertForMaskedLM / BertForPreTraining run it)."""
        labels = batch["mlm_labels"]
        rows = labels.numel() if all_positions else int((labels != IGNORE_INDEX).sum())
        return mlm_head_flops(model_cfg, rows)
