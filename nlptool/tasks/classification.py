"""Sequence classification and regression: one text (or a pair) in, a label (or a score) out.

Covers `classification` (sst2, chnsenticorp, your files), `pair_classification` (two texts as
segments A and B) and `regression` (stsb): [CLS] A [SEP] (B [SEP]) through the encoder, the pooled
first token through a linear head; cross-entropy, or mean squared error for a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import pad_batch
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.models.bert import BertForSequenceClassification
from nlptool.models.config import ModelConfig
from nlptool.models.gpt import GPTForSequenceClassification
from nlptool.objectives.base import LossTerm
from nlptool.tasks.base import TaskBase, TaskExamples, read_columns, text_field
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.metrics import ClassificationMetrics, RegressionMetrics


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drop tokens from the end of the longer sequence until both fit (longest first)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


class SequenceClassificationTask(TaskBase):
    architectures: ClassVar[tuple[str, ...]] = ("bert", "gpt")

    needs: ClassVar[str] = (
        "({kind}) needs an encoder (model=bert-*) or a decoder (model=gpt-*), not model={model}"
    )

    def head_flops(self, model_cfg: ModelConfig, batch: dict[str, torch.Tensor]) -> float:
        """The pooler and the classifier (counted for two labels) at one position a sequence."""
        h = model_cfg.hidden_size
        return float(2 * batch["input_ids"].shape[0] * (h * h + 2 * h))

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self.regression = cfg.kind == "regression"
        self.pair = cfg.text_pair_column is not None
        self.labels = list(cfg.labels) if cfg.labels else []
        self.main_metric = "pearson" if self.regression else "accuracy"
        self._metrics: Any = None

    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        """For a BERT: [CLS] a [SEP] (b [SEP]). For a GPT: a (end-of-text b), read at its last
        token, where the decoder has seen everything; the text as in pretraining (a GPT never saw
        [CLS]-like tokens there, even when its tokenizer has them, as a `tokenizer=bpe` does)."""
        self.tokenizer = tokenizer
        self.decoder = self.model_arch == "gpt"
        if self.decoder:
            self.cls_id = None
            self.sep_id = tokenizer.require("eos", f"task={self.cfg.name} with a GPT")
            return
        self.cls_id = tokenizer.require("cls", f"task={self.cfg.name}")
        self.sep_id = tokenizer.require("sep", f"task={self.cfg.name}")

    # -- reading and encoding -------------------------------------------------------------

    def read(self, split: str) -> datasets.Dataset:
        """The split's records: text, text_pair (pairs), label (the raw string or number)."""
        columns = {"text_column": self.cfg.text_column, "label_column": self.cfg.label_column}
        if self.pair:
            columns["text_pair_column"] = self.cfg.text_pair_column
        rows: dict[str, list] = {"text": [], "text_pair": [], "label": [], "where": []}
        for where, row in read_columns(self.cfg, split, columns):
            text = row["text_column"]
            if text is None:
                raise UserError(f"{where}: empty task.text_column ({self.cfg.text_column})")
            rows["text"].append(str(text))
            rows["text_pair"].append(str(row.get("text_pair_column") or ""))
            rows["label"].append("" if row["label_column"] is None else str(row["label_column"]))
            rows["where"].append(where)
        ds = datasets.Dataset.from_dict(rows)
        self.raw[split] = ds
        return ds

    def training_texts(self, train: datasets.Dataset):
        for start in range(0, len(train), 1000):
            rows = train[start : start + 1000]
            yield from rows["text"]
            if self.pair:
                yield from rows["text_pair"]

    def set_labels_from(self, train: datasets.Dataset) -> None:
        if self.regression or self.labels:
            return
        self.labels = sorted(set(train["label"]), key=lambda x: (len(x), x))
        if len(self.labels) < 2:
            raise UserError(
                f"task.label_column={self.cfg.label_column}: the training file has a single "
                f"label ({self.labels}); classification needs at least two"
            )

    def _label_value(self, label: str, where: str) -> float | int:
        if self.regression:
            try:
                return float(label)
            except ValueError:
                raise UserError(f"{where}: the score {label!r} is not a number") from None
        try:
            return self.labels.index(label)
        except ValueError:
            raise UserError(
                f"{where}: unknown label {label!r}; the known labels are "
                f"{', '.join(map(repr, self.labels))} (set task.labels to change them)"
            ) from None

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        placeholder = "0" if self.regression else self.labels[0]
        rows: dict[str, list] = {"text": [], "text_pair": [], "label": [], "where": []}
        for record, at in zip(records, where):
            rows["text"].append(text_field(record, at, "text"))
            rows["text_pair"].append(text_field(record, at, "text_pair") if self.pair else "")
            rows["label"].append(placeholder)
            rows["where"].append(at)
        return datasets.Dataset.from_dict(rows)

    def prediction_fields(
        self, evaluated: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        if self.regression:
            return {"score": evaluated["prediction"]}
        return {"label": evaluated["prediction"], "probabilities": evaluated["probabilities"]}

    def encode(self, ds: datasets.Dataset) -> TaskExamples:
        texts = self.tokenizer.encode_batch(ds["text"])
        pairs = self.tokenizer.encode_batch(ds["text_pair"]) if self.pair else [[]] * len(ds)
        specials = (1 if self.pair else 0) if self.decoder else (3 if self.pair else 2)
        budget = self.cfg.max_seq_len - specials
        columns: dict[str, list] = {"input_ids": [], "token_type_ids": [], "labels": []}
        truncated = 0
        for a, b, label, where in zip(texts, pairs, ds["label"], ds["where"]):
            truncated += len(a) + len(b) > budget
            a, b = truncate_pair(a, b, budget)
            if self.decoder:  # the last token, where the decoder has read everything, is text
                ids = [*a, self.sep_id, *b] if self.pair else (a or [self.sep_id])
                columns["input_ids"].append(ids)
                columns["token_type_ids"].append([0] * len(ids))
                columns["labels"].append(self._label_value(label, where))
                continue
            ids = [self.cls_id, *a, self.sep_id] + ([*b, self.sep_id] if self.pair else [])
            columns["input_ids"].append(ids)
            columns["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2))
            columns["labels"].append(self._label_value(label, where))
        self.report_truncated(ds, truncated)
        features = datasets.Dataset.from_dict(
            columns,
            features=datasets.Features(
                {
                    "input_ids": datasets.Sequence(datasets.Value("int64")),
                    "token_type_ids": datasets.Sequence(datasets.Value("int64")),
                    "labels": datasets.Value("float32" if self.regression else "int64"),
                }
            ),
        )
        return TaskExamples(features)

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad_batch(items, {"input_ids": self.tokenizer.pad_id})

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        num_labels = 1 if self.regression else len(self.labels)
        if model_cfg.arch == "gpt":
            return GPTForSequenceClassification(model_cfg, num_labels)
        return BertForSequenceClassification(model_cfg, num_labels)

    # -- the loss -------------------------------------------------------------------------

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": torch.tensor(batch["labels"].shape[0])}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        logits = model(batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"])
        labels = batch["labels"]
        if self.regression:
            scores = logits.squeeze(-1).float()
            loss = F.mse_loss(scores, labels.float(), reduction="sum")
            return LossTerm(loss, torch.zeros((), device=loss.device)), scores
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        return LossTerm(loss, (logits.argmax(-1) == labels).sum()), logits.float()

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        return {"task": self._forward(model, batch)[0]}

    # -- evaluation -----------------------------------------------------------------------

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        if self.regression:
            self._metrics = RegressionMetrics()
        else:
            positive = None
            if self.cfg.kind == "pair_classification" or len(self.labels) == 2:
                name = self.cfg.positive_label or self.labels[-1]
                positive = self.labels.index(name) if name in self.labels else len(self.labels) - 1
            self._metrics = ClassificationMetrics(len(self.labels), positive_label=positive)
        self.open_predictions(predictions_path, split)

    def eval_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        term, outputs = self._forward(model, batch)
        labels = batch["labels"].cpu().numpy()
        if self.regression:
            preds = outputs.cpu().numpy()
            self._metrics.update(preds, labels)
        else:
            probs = outputs.softmax(-1).cpu().numpy()
            preds = probs.argmax(-1)
            self._metrics.update(preds, labels)
        if self._sink is not None:
            raw = self.raw[self._split]
            for row, index in enumerate(batch["index"].tolist()):
                record = raw[index]
                out: dict[str, Any] = {"text": record["text"]}
                if self.pair:
                    out["text_pair"] = record["text_pair"]
                if self.regression:
                    out.update(gold=float(labels[row]), prediction=float(preds[row]))
                else:
                    out.update(
                        gold=self.labels[int(labels[row])],
                        prediction=self.labels[int(preds[row])],
                        probabilities={
                            label: round(float(p), 6) for label, p in zip(self.labels, probs[row])
                        },
                    )
                self.write_prediction(out)
        return {"task": term}

    def end_eval(self) -> dict[str, float]:
        self.close_predictions()
        return self._metrics.compute()
