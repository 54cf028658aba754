"""Batching with dynamic padding, shared by the pretraining objectives and the tasks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # the label of positions no loss is computed on (F.cross_entropy's default)


def pad_batch(items: list[dict[str, np.ndarray]], pad_values: dict[str, Any]) -> dict[str, Any]:
    """Stack examples, padding sequences to the longest; adds attention_mask when padding."""
    lengths = [len(item["input_ids"]) for item in items]
    longest = max(lengths)
    batch: dict[str, torch.Tensor] = {}
    for key, first in items[0].items():
        if np.ndim(first) == 0:
            batch[key] = torch.as_tensor(np.stack([item[key] for item in items]))
            continue
        out = np.full((len(items), longest), pad_values.get(key, 0), dtype=first.dtype)
        for row, item in enumerate(items):
            out[row, : len(item[key])] = item[key]
        batch[key] = torch.from_numpy(out)
    if min(lengths) < longest:
        mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        batch["attention_mask"] = torch.from_numpy(mask)
    return batch
