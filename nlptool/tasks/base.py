"""What every downstream task shares: the protocol, reading split files, the examples data set.

A task is an `Objective` for the training loop (`terms`, `counts`, `__call__`) plus evaluation
hooks the loop calls when present: `start_eval`, `eval_batch` (loss terms of a batch, while the
task accumulates its metrics and predictions), `end_eval` (the metrics), and `main_metric`. The
verbs (nlptool/verbs/) drive it through `Task` below.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import datasets
import numpy as np
import torch

from nlptool.console import console
from nlptool.data.readers import iter_records
from nlptool.errors import UserError
from nlptool.tasks.config import TaskConfig


class Task(Protocol):
    """What `nlptool finetune task=...` and `nlptool eval` need from a task. The training loop
    speaks to it as to an objective (`nlptool.objectives.base.Objective`); of that protocol a
    task of one's own may leave out `accuracy_terms`, `shard_eval` and `head_flops` (filled in as
    no accuracy, unsharded evaluation, no head FLOPs), or subclass `TaskBase`, which has them."""

    terms: tuple[str, ...]  # loss terms, e.g. ("task",)
    perplexity_term: str | None  # None for tasks
    main_metric: str  # key of end_eval()'s result that picks the best checkpoint
    greater_is_better: bool
    labels: list[str]  # the label set (classification, NER); stored in the checkpoint config

    def read(self, split: str) -> datasets.Dataset:
        """The raw examples of "train", "valid" or "test" (kept for predictions.jsonl)."""
        ...

    def training_texts(self, train: datasets.Dataset) -> Iterator[str]:
        """Texts to train a tokenizer on when there is no pretrained one."""
        ...

    def set_tokenizer(self, tokenizer: Any) -> None: ...

    def set_labels_from(self, train: datasets.Dataset) -> None:
        """Fix the label set from the training data unless task.labels gives it."""
        ...

    def encode(self, raw: datasets.Dataset) -> torch.utils.data.Dataset:
        """Examples keyed by (epoch, index) (see TaskExamples); index must be in the batch."""
        ...

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]: ...

    def build_model(self, model_cfg: Any) -> torch.nn.Module: ...

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict: ...

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None: ...

    def eval_batch(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict: ...

    def end_eval(self) -> dict[str, float]: ...


class TaskBase:
    """What the tasks share: the loss term, the raw splits, the predictions.jsonl sink, and the
    parts of the loop's protocol (`nlptool.objectives.base.Objective`) tasks have alike."""

    terms = ("task",)
    perplexity_term = None
    greater_is_better = True
    accuracy_terms: tuple[str, ...] = ()  # a task reports its own metrics (end_eval)
    shard_eval = False  # its metrics (F1, BLEU ...) need every prediction
    architectures: ClassVar[tuple[str, ...]] = ("bert",)
    """The `model.arch` values the task's heads are built for ..."""
    needs: ClassVar[str] = "({kind}) needs an encoder (model=bert-*), not model={model}"
    """... in words, for the error (after "task=<name> ")."""
    # The architecture of the model the task feeds (`build_task` sets it): a GPT reads its text
    # without [CLS]/[SEP], even when its tokenizer has such tokens.
    model_arch = "bert"

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg
        self.labels: list[str] = []
        self.raw: dict[str, datasets.Dataset] = {}
        self._sink = None
        self._split = "valid"

    @classmethod
    def check_model(cls, task_cfg: Any, model_cfg: Any) -> None:
        """Raise ValueError naming the keys when the task has no head for that model."""
        if model_cfg.arch not in cls.architectures:
            needs = cls.needs.format(kind=task_cfg.kind, model=model_cfg.name)
            raise ValueError(f"task={task_cfg.name} {needs}")

    def head_flops(self, model_cfg: Any, batch: dict[str, torch.Tensor]) -> float:
        """Forward FLOPs after the model's blocks: a small per-token classifier by default."""
        b, t = batch["input_ids"].shape
        return float(2 * b * t * model_cfg.hidden_size * 16)

    def open_predictions(self, path: Path | None, split: str) -> None:
        """Start an evaluation of `split`; predictions go to `path` (JSON lines) when given."""
        self._split = split
        self._sink = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

    def report_truncated(self, ds: datasets.Dataset, truncated: int, what: str = "") -> None:
        """Say how many examples of a split were longer than task.max_seq_len and were cut."""
        if not truncated:
            return
        split = next((name for name, raw in self.raw.items() if raw is ds), None)
        where = f"task={self.cfg.name}" + (f", {split} split" if split else "")
        console.print(
            f"{where}: {truncated:,} of {len(ds):,} examples longer than task.max_seq_len="
            f"{self.cfg.max_seq_len} tokens were truncated{what}"
        )

    def write_prediction(self, record: dict[str, Any]) -> None:
        if self._sink is not None:
            self._sink.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close_predictions(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def collect_predictions(self) -> list[dict[str, Any]]:
        """After start_eval: keep the prediction records in a list (returned) instead of a file."""
        records: list[dict[str, Any]] = []

        class Collector:
            def write(self, line: str) -> None:
                records.append(json.loads(line))

            def close(self) -> None:
                pass

        self._sink = Collector()
        return records

    # -- nlptool predict: the user's records in, the task's answers out ---------------------

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        """The user's input records (JSON objects) as this task's raw split, gold fields filled
        with placeholders (predict runs the evaluation path and drops them)."""
        raise UserError(f"nlptool predict does not support task kind {self.cfg.kind}")

    def prediction_fields(
        self, evaluated: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """From one evaluation record (as in predictions.jsonl) the fields predict adds to the
        user's input record."""
        raise NotImplementedError


def text_field(record: dict[str, Any], where: str, *names: str) -> str:
    """The first of `names` the record has as a string; a UserError naming them otherwise."""
    for name in names:
        value = record.get(name)
        if isinstance(value, str):
            return value
    wanted = " or ".join(f'"{n}"' for n in names)
    raise UserError(f"{where}: expected a {wanted} string field, found keys {sorted(record)}")


SPLIT_KEYS = {"train": "task.train_file", "valid": "task.valid_file", "test": "task.test_file"}


def split_path(cfg: TaskConfig, split: str) -> Path:
    """The file of a split, relative to task.data_dir; UserError when unset or missing."""
    key = SPLIT_KEYS[split]
    name = getattr(cfg, key.split(".", 1)[1])
    if not name:
        raise UserError(f"task={cfg.name} has no {split} file: set {key}=<file>")
    path = Path(name).expanduser()
    if not path.is_absolute() and cfg.data_dir:
        path = Path(cfg.data_dir).expanduser() / path
    if not path.is_file():
        hint = "" if cfg.data_dir else " (set task.data_dir to the folder that holds it)"
        raise UserError(f"{key}: no such file: {path}{hint}")
    return path


def read_columns(
    cfg: TaskConfig, split: str, columns: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, {field: value}) for each record of a split; `columns` maps task.<key> -> column.

    A column is a name, or a 0-based index: the position in the header row, or in the row
    itself with task.header=false (where every column must be an index).
    """
    path = split_path(cfg, split)
    wanted = {key: value for key, value in columns.items() if value is not None}
    if not cfg.header:
        for key, value in wanted.items():
            if not str(value).isdigit():
                raise UserError(
                    f"task.{key}={value!r}: with task.header=false columns are 0-based indices"
                )
        wanted = {key: str(value) for key, value in wanted.items()}
    required = {f"task.{k}": v for k, v in wanted.items() if not isinstance(v, int)}
    count = 0
    for where, record in iter_records(path, required, header=cfg.header):
        names = list(record)
        row = {}
        for key, column in wanted.items():
            if isinstance(column, int):
                if column >= len(names):
                    raise UserError(
                        f"{path}, {where}: task.{key}={column}, but the file has only "
                        f"{len(names)} columns ({', '.join(names)})"
                    )
                column = names[column]
            row[key] = record[column]
        count += 1
        yield f"{path}, {where}", row
    if count == 0:
        raise UserError(f"{SPLIT_KEYS[split]}: {path} holds no records")


class TaskExamples(torch.utils.data.Dataset):
    """Encoded examples keyed like the pretraining ones, (epoch, index); no randomness."""

    def __init__(self, features: datasets.Dataset) -> None:
        self.features = features.with_format("numpy")

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> np.ndarray:
        """Tokens per example (the longest sequence of the example), for length grouping."""
        columns = [c for c in ("input_ids", "decoder_input_ids") if c in self.features.column_names]
        raw = self.features.with_format(None)
        per_column = [np.fromiter(map(len, raw[c]), dtype=np.int64) for c in columns]
        return np.maximum.reduce(per_column)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        _, index = key
        row = self.features[int(index)]
        row["index"] = np.int64(index)
        return row
