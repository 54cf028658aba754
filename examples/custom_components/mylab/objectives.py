"""Span masking (SpanBERT-style) as an nlptool pretraining objective.

Instead of single tokens, contiguous spans of `span` tokens are hidden behind [MASK] until about
`mask_rate` of the tokens are covered; the model predicts every hidden token. The class follows
`nlptool.objectives.base.CustomObjective`: it makes its own examples (from the tokenized
documents nlptool hands it) and computes its loss terms.
"""

from __future__ import annotations

import numpy as np
import torch

from nlptool.data.collate import pad_batch
from nlptool.data.pretraining import example_rng, pack_blocks
from nlptool.objectives.mlm import masked_lm_term

IGNORE = -100
STREAM = 41  # this objective's own random stream (nlptool's use 1 and 2)


class SpanExamples(torch.utils.data.Dataset):
    """[CLS] block [SEP] with spans masked; keyed by (epoch, index) like nlptool's examples, every
    random choice drawn from (seed, epoch, index)."""

    def __init__(self, blocks, cls_id, sep_id, mask_id, span, mask_rate, seed):
        self.blocks, self.cls_id, self.sep_id, self.mask_id = blocks, cls_id, sep_id, mask_id
        self.span, self.mask_rate, self.seed = span, mask_rate, seed

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        rng = example_rng(self.seed, STREAM, epoch, index)
        block = self.blocks[int(index)]["input_ids"]
        ids = np.asarray([self.cls_id, *block, self.sep_id], dtype=np.int64)
        labels = np.full_like(ids, IGNORE)
        inner = len(ids) - 2  # maskable positions 1 .. len-2
        budget = max(1, round(self.mask_rate * inner))
        for start in rng.permutation(max(1, inner - self.span + 1)) + 1:
            if (labels != IGNORE).sum() >= budget:
                break
            end = min(start + self.span, len(ids) - 1)
            labels[start:end] = ids[start:end]
        masked = ids.copy()
        masked[labels != IGNORE] = self.mask_id
        return {"input_ids": masked, "mlm_labels": labels}


class SpanMasking:
    name = "span_masking"
    terms = ("mlm",)
    perplexity_term = "mlm"

    def __init__(self, span: int = 3, mask_rate: float = 0.15) -> None:
        if span < 1 or not 0 < mask_rate < 1:
            raise ValueError(f"span={span} must be >= 1 and mask_rate={mask_rate} in (0, 1)")
        self.span, self.mask_rate = span, mask_rate

    def build_examples(self, docs, tokenizer, max_seq_len, seed, valid):
        self.pad_id = tokenizer.pad_id
        sep = tokenizer.require("sep", "span masking")
        blocks = pack_blocks(docs, max_seq_len - 2, sep)
        return SpanExamples(
            blocks, tokenizer.require("cls", "span masking"), sep,
            tokenizer.require("mask", "span masking"), self.span, self.mask_rate,
            seed + (7919 if valid else 0),
        )  # fmt: skip

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad_batch(items, {"input_ids": self.pad_id, "mlm_labels": IGNORE})

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mlm": (batch["mlm_labels"] != IGNORE).sum()}

    def __call__(self, model, batch):
        hidden = model(batch["input_ids"], batch.get("attention_mask"))  # (B, T, H)
        return {"mlm": masked_lm_term(model, hidden, batch["mlm_labels"])}
