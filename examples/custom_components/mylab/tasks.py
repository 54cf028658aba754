"""A toxicity classifier as an nlptool task: comments in JSON lines, {"comment": ..., "toxic":
true/false}. It subclasses nlptool's sequence classification and changes only how a split is
read; labels, encoding, head, metrics and predictions come with the base class."""

from __future__ import annotations

import json

import datasets

from nlptool.errors import UserError
from nlptool.tasks.base import split_path
from nlptool.tasks.classification import SequenceClassificationTask


class Toxicity(SequenceClassificationTask):
    def __init__(self, cfg, field: str = "comment") -> None:
        cfg.labels = ["ok", "toxic"]
        cfg.positive_label = "toxic"
        super().__init__(cfg)
        self.main_metric = "f1"  # of the "toxic" class: what matters when it is rare
        self.field = field

    def read(self, split: str) -> datasets.Dataset:
        path = split_path(self.cfg, split)
        rows: dict[str, list] = {"text": [], "text_pair": [], "label": [], "where": []}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if self.field not in record or "toxic" not in record:
                raise UserError(f"{path}, line {number}: needs {self.field!r} and 'toxic'")
            rows["text"].append(str(record[self.field]))
            rows["text_pair"].append("")
            rows["label"].append("toxic" if record["toxic"] else "ok")
            rows["where"].append(f"{path}, line {number}")
        ds = datasets.Dataset.from_dict(rows)
        self.raw[split] = ds
        return ds
