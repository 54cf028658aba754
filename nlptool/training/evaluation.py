"""What the loop reports. Validation: every term's mean loss over a split, the accuracies and perplexity the objective
asks for, and its own metrics; split over DDP ranks where the objective allows it. Training:
the log record of the steps since the last one (`LogWindow`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nlptool.objectives.base import Objective
from nlptool.training import distributed
from nlptool.training.distributed import Dist


def evaluate_split(
    objective: Objective,
    data: torch.utils.data.Dataset,
    collate: Callable[[list[dict]], dict[str, torch.Tensor]],
    forward: Callable[[dict[str, torch.Tensor]], dict[str, Any]],
    *,
    batch_size: int,
    max_batches: int,
    dist: Dist,
    split: str,
    predictions_path: Path | None = None,
) -> dict[str, float]:
    """`forward(batch)` runs the objective's `eval_batch` on the device; the metrics of this
    rank's evaluation (its share summed over the ranks when sharded), keyed `<split>/<name>`."""
    objective.start_eval(predictions_path if dist.is_main else None, split)
    keys = [(0, i) for i in range(len(data))]
    if max_batches:
        keys = keys[: max_batches * batch_size]
    # DDP: each rank scores its share and the sums are added up. Metrics that need every
    # prediction (F1, BLEU), and FSDP, which needs every rank in every forward, run it all.
    shard = dist.strategy == "ddp" and dist.world_size > 1 and objective.shard_eval
    if shard:
        keys = keys[dist.rank :: dist.world_size]
    loss_sums = dict.fromkeys(objective.terms, 0.0)
    correct = dict.fromkeys(objective.terms, 0.0)
    counts = dict.fromkeys(objective.terms, 0)
    for start in range(0, len(keys), batch_size):
        batch = collate([data[k] for k in keys[start : start + batch_size]])
        for term, n in objective.counts(batch).items():
            counts[term] += int(n)
        for term, result in forward(batch).items():
            loss_sums[term] += float(result.loss_sum)
            correct[term] += float(result.correct)
    if shard:
        names = list(objective.terms)
        totals = torch.tensor(
            [[loss_sums[t], correct[t], counts[t]] for t in names], dtype=torch.float64
        )
        totals = distributed.all_reduce_sum(totals).tolist()
        for t, (loss_sum, right, n) in zip(names, totals):
            loss_sums[t], correct[t], counts[t] = loss_sum, right, int(n)
    metrics: dict[str, float] = {}
    for term in objective.terms:
        n = max(counts[term], 1)
        metrics[f"{split}/{term}_loss"] = loss_sums[term] / n
        if term in objective.accuracy_terms:
            metrics[f"{split}/{term}_accuracy"] = correct[term] / n
    metrics[f"{split}/loss"] = sum(metrics[f"{split}/{t}_loss"] for t in objective.terms)
    metrics.update({f"{split}/{k}": v for k, v in objective.end_eval().items()})
    if objective.perplexity_term:
        ppl_loss = metrics[f"{split}/{objective.perplexity_term}_loss"]
        metrics[f"{split}/ppl"] = math.exp(min(ppl_loss, 50.0))
    return metrics


def describe_validation(metrics: dict[str, Any], main_metric: str | None, improved: bool) -> str:
    """The progress line of a validation: loss, perplexity, the main metric, (best)."""
    text = f"step {metrics['step']}: valid/loss {metrics['valid/loss']:.4f}"
    if "valid/ppl" in metrics:
        text += f"  ppl {metrics['valid/ppl']:.2f}"
        text += " (best)" if improved and main_metric == "ppl" else ""
    if main_metric not in (None, "ppl") and f"valid/{main_metric}" in metrics:
        text += f"  {main_metric} {metrics[f'valid/{main_metric}']:.4f}"
        text += " (best)" if improved else ""
    return text


class LogWindow:
    """The training steps since the last log record: their summed losses (kept on the device, no
    sync per step; a skipped non-finite step is left out), tokens, FLOPs and training time."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.steps: Any = 0  # (a device tensor once steps are added)
        self.tokens, self.flops = 0, 0.0
        self.sums: dict[str, torch.Tensor] = {}
        self.started = time.perf_counter()

    def add(self, out: dict[str, torch.Tensor], finite: torch.Tensor, tokens: int, flops: float):
        self.steps = self.steps + finite.long()
        self.tokens += tokens
        self.flops += flops
        for key, value in out.items():
            kept = torch.where(finite, value.detach(), 0.0)
            self.sums[key] = self.sums.get(key, 0.0) + kept

    def exclude(self, seconds: float) -> None:
        """Time spent on evaluation or saving, which is not training time."""
        self.started += seconds

    def record(
        self, step: int, lr: float, peak_flops: float | None
    ) -> tuple[dict[str, Any], float]:
        """The `train/...` record (mean losses, learning rate, tokens/s, MFU) and the seconds of
        training it covers."""
        elapsed = time.perf_counter() - self.started
        record: dict[str, Any] = {"step": step}
        steps = int(self.steps)
        for key, value in self.sums.items() if steps else ():
            record[f"train/{key}"] = float(value) / steps
        record["train/lr"] = lr
        record["train/tokens_per_s"] = self.tokens / max(elapsed, 1e-9)
        if peak_flops and self.flops:
            record["train/mfu"] = self.flops / max(elapsed, 1e-9) / peak_flops
        return record, elapsed
