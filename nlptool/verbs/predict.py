"""`nlptool predict checkpoint=... input=file.jsonl|- output=preds.jsonl|-`: a fine-tuned model's
answers for new text, whatever its task.

JSON lines in, JSON lines out: each output line is the input record with the task's answer
added. Input fields by task: `text` (and `text_pair` for pair tasks) for classification and
regression; `text` (split at whitespace) or a `tokens` list for NER; `question` and `context`
(or `text` and `text_pair`) for QA; `text` for translation. Added fields: `label` and
`probabilities` (classification), `score` (regression), `tags` and `entities` with character
spans (NER), `answer` with `start`, `end` and `score` (QA), `translation`.

The records go through the same encoding, batching and decoding as `nlptool eval` (the task's
own `eval_batch`), with placeholder gold fields that are dropped, so predict and eval agree.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from nlptool.cache import nlptool_cache_dir
from nlptool.console import console
from nlptool.errors import UserError, check
from nlptool.interop.sources import resolve_model_source
from nlptool.training.config import DEVICES, PRECISIONS
from nlptool.training.runtime import autocast_context, resolve_device
from nlptool.verbs import RunContext
from nlptool.verbs.loading import task_model_from_checkpoint


@dataclass
class PredictConfig:
    """`nlptool predict`: a fine-tuned checkpoint's predictions for new records."""

    checkpoint: str | None = None
    """A fine-tuned checkpoint folder (checkpoints/best), or a run folder (its checkpoints/last)."""
    input: str | None = None
    """A JSON-lines file of records, or - for stdin."""
    output: str = "-"
    """Where the records with the predictions go: a file, or - for stdout."""
    batch_size: int = 64
    device: str = "auto"
    precision: str = "fp32"

    def validate(self) -> None:
        check(bool(self.checkpoint), "nlptool predict needs checkpoint=<a fine-tuned checkpoint>")
        check(bool(self.input), "nlptool predict needs input=<a .jsonl file, or - for stdin>")
        check(self.batch_size >= 1, "batch_size must be >= 1")
        check(self.device in DEVICES, f"device={self.device!r}: expected one of {DEVICES}")
        check(
            self.precision in PRECISIONS,
            f"precision={self.precision!r}: expected one of {PRECISIONS}",
        )


def read_records(source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON objects of a JSON-lines file (or stdin), with where each one is (file, line)."""
    name = "stdin" if source == "-" else source
    if source == "-":
        lines: Iterator[str] = iter(sys.stdin)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"input={source}: no such file")
        lines = iter(path.read_text(encoding="utf-8").splitlines())
    records, where = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{name}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{name}, line {number}: expected a JSON object, got {line[:60]!r}")
        records.append(record)
        where.append(f"{name}, line {number}")
    if not records:
        raise UserError(f"input={source}: no records")
    return records, where


def predict(cfg_dict: DictConfig, ctx: RunContext | None = None) -> list[dict[str, Any]]:
    try:
        cfg: PredictConfig = OmegaConf.to_object(cfg_dict)  # type: ignore[assignment]
        cfg.validate()
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    if cfg.output == "-":
        console.stderr = True  # stdout carries the records alone
    path = resolve_model_source(str(cfg.checkpoint), "checkpoint", nlptool_cache_dir())
    task, model, _ = task_model_from_checkpoint(path)
    records, where = read_records(str(cfg.input))
    raw = task.inputs_to_raw(records, where)
    task.raw["predict"] = raw
    examples = task.encode(raw)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    task.start_eval(None, "predict")
    evaluated = task.collect_predictions()
    started = time.perf_counter()
    batches = range(0, len(examples), cfg.batch_size)
    with (
        torch.inference_mode(),
        Progress(
            "predicting", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console, disable=len(batches) < 5 or not console.is_terminal,
        ) as bar,
    ):  # fmt: skip
        progress = bar.add_task("predict", total=len(examples))
        for start in batches:
            keys = [(0, i) for i in range(start, min(start + cfg.batch_size, len(examples)))]
            batch = task.collate([examples[k] for k in keys])
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast_context(device, cfg.precision):
                task.eval_batch(model, batch)
            bar.update(progress, advance=len(keys))
    task.end_eval()
    if len(evaluated) != len(records):
        raise RuntimeError(f"{len(evaluated)} predictions for {len(records)} records")
    results = [
        {**record, **task.prediction_fields(answer, record)}
        for record, answer in zip(records, evaluated)
    ]
    out = sys.stdout if cfg.output == "-" else open(cfg.output, "w", encoding="utf-8")  # noqa: SIM115
    try:
        for result in results:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    seconds = time.perf_counter() - started
    console.print(
        f"{len(results):,} records in {seconds:.1f}s ({len(results) / max(seconds, 1e-9):,.0f}/s)"
        + ("" if cfg.output == "-" else f" -> {cfg.output}")
    )
    return results
