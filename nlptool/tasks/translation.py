"""Machine translation with the encoder-decoder Transformer (`model=transformer-*`).

Data: line-aligned parallel files `<split file>.<lang>` (optionally `.gz`) in task.data_dir, as
Multi30k ships them (`train.en.gz` / `train.de.gz`), or record files (CSV, TSV, JSONL, ...) with
task.source_column and task.target_column. One byte-level BPE vocabulary is shared by both sides
(`tokenizer=bpe`, trained on the training pairs), so decoding gives back plain text and BLEU is
computed by sacreBLEU on it, as the WMT convention asks. Training is teacher forcing with label
smoothing; evaluation decodes with beam search (task.beam_size, 1 = greedy) over the KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import IGNORE_INDEX, pad_batch
from nlptool.data.readers import iter_lines
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.models import build_model
from nlptool.models.config import ModelConfig
from nlptool.models.decoding import beam_search, greedy_decode
from nlptool.objectives.base import LossTerm
from nlptool.tasks.base import SPLIT_KEYS, TaskBase, TaskExamples, read_columns, text_field
from nlptool.tasks.metrics import BleuMetrics


def _read_lines(path: Path) -> list[str]:
    """The stripped lines of a text file (.gz too), with file:line errors for bad UTF-8."""
    return [line.strip() for _, line in iter_lines(path)]


class TranslationTask(TaskBase):
    main_metric = "bleu"
    architectures: ClassVar[tuple[str, ...]] = ("seq2seq",)

    needs: ClassVar[str] = "needs an encoder-decoder (model=transformer-*)"

    def head_flops(self, model_cfg: ModelConfig, batch: dict[str, torch.Tensor]) -> float:
        """The output projection at every decoder position."""
        b, t = batch["decoder_input_ids"].shape
        return float(2 * b * t * model_cfg.hidden_size * model_cfg.vocab_size)

    # -- reading --------------------------------------------------------------------------

    def _parallel_files(self, split: str) -> tuple[Path, Path]:
        cfg = self.cfg
        if split == "train" and cfg.source_file and cfg.target_file:
            names = [cfg.source_file, cfg.target_file]
        else:
            key = SPLIT_KEYS[split]
            stem = getattr(cfg, key.split(".", 1)[1])
            if not stem:
                raise UserError(f"task={cfg.name} has no {split} files: set {key}=<file stem>")
            names = [f"{stem}.{cfg.source_lang}", f"{stem}.{cfg.target_lang}"]
        paths = []
        for name in names:
            path = Path(name).expanduser()
            if not path.is_absolute() and cfg.data_dir:
                path = Path(cfg.data_dir).expanduser() / path
            if not path.is_file() and path.with_name(path.name + ".gz").is_file():
                path = path.with_name(path.name + ".gz")
            if not path.is_file():
                raise UserError(f"task={cfg.name}, {split} split: no such file: {path}(.gz)")
            paths.append(path)
        return paths[0], paths[1]

    def read(self, split: str) -> datasets.Dataset:
        if self.cfg.source_column:
            rows = {"source": [], "target": []}
            columns = {
                "source_column": self.cfg.source_column,
                "target_column": self.cfg.target_column,
            }
            for _, row in read_columns(self.cfg, split, columns):
                rows["source"].append(str(row["source_column"] or ""))
                rows["target"].append(str(row["target_column"] or ""))
        else:
            src_path, tgt_path = self._parallel_files(split)
            source, target = _read_lines(src_path), _read_lines(tgt_path)
            if len(source) != len(target):
                raise UserError(
                    f"{src_path} has {len(source)} lines but {tgt_path} has {len(target)}: "
                    "parallel files must be line-aligned"
                )
            if not source:
                raise UserError(f"{src_path} is empty")
            rows = {"source": source, "target": target}
        ds = datasets.Dataset.from_dict(rows)
        self.raw[split] = ds
        return ds

    def training_texts(self, train: datasets.Dataset) -> Iterator[str]:
        for start in range(0, len(train), 1000):
            rows = train[start : start + 1000]
            yield from rows["source"]
            yield from rows["target"]

    def set_labels_from(self, train: datasets.Dataset) -> None:
        pass

    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.bos_id = tokenizer.require("cls", f"task={self.cfg.name} (start of sentence)")
        self.eos_id = tokenizer.require("eos", f"task={self.cfg.name} (end of sentence)")

    # -- encoding -------------------------------------------------------------------------

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        sources = [text_field(r, at, "text", "source") for r, at in zip(records, where)]
        return datasets.Dataset.from_dict({"source": sources, "target": [""] * len(sources)})

    def prediction_fields(
        self, evaluated: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        return {"translation": evaluated["prediction"]}

    def encode(self, raw: datasets.Dataset) -> TaskExamples:
        limit = self.cfg.max_seq_len - 1
        sources = self.tokenizer.encode_batch(raw["source"])
        targets = self.tokenizer.encode_batch(raw["target"])
        columns: dict[str, list] = {"input_ids": [], "decoder_input_ids": [], "labels": []}
        truncated = 0
        for src, tgt in zip(sources, targets):
            truncated += len(src) > limit or len(tgt) > limit
            src, tgt = src[:limit], tgt[:limit]
            columns["input_ids"].append([*src, self.eos_id])
            columns["decoder_input_ids"].append([self.bos_id, *tgt])
            columns["labels"].append([*tgt, self.eos_id])
        self.report_truncated(raw, truncated, " (source or target)")
        sequence = datasets.Sequence(datasets.Value("int64"))
        features = datasets.Features(
            {"input_ids": sequence, "decoder_input_ids": sequence, "labels": sequence}
        )
        return TaskExamples(datasets.Dataset.from_dict(columns, features=features))

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_id
        sources = pad_batch(
            [{"input_ids": i["input_ids"], "index": i["index"]} for i in items], {"input_ids": pad}
        )
        targets = pad_batch(
            [{"input_ids": i["decoder_input_ids"], "labels": i["labels"]} for i in items],
            {"input_ids": pad, "labels": IGNORE_INDEX},
        )
        batch = {"input_ids": sources["input_ids"], "index": sources["index"]}
        batch["attention_mask"] = sources.get(
            "attention_mask", torch.ones_like(sources["input_ids"])
        )
        batch["decoder_input_ids"] = targets["input_ids"]
        batch["labels"] = targets["labels"]
        if "attention_mask" in targets:
            batch["decoder_attention_mask"] = targets["attention_mask"]
        return batch

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return build_model(model_cfg)

    # -- the loss -------------------------------------------------------------------------

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": (batch["labels"] != IGNORE_INDEX).sum()}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        hidden = model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch.get("decoder_attention_mask"),
        )  # (B, T, C)
        labels = batch["labels"]
        selected = labels != IGNORE_INDEX  # (B, T)
        logits = model.lm_logits(hidden[selected]).float()  # (N, V)
        targets = labels[selected]
        loss = F.cross_entropy(
            logits, targets, reduction="sum", label_smoothing=self.cfg.label_smoothing
        )
        return {"task": LossTerm(loss, (logits.argmax(-1) == targets).sum())}

    # -- evaluation -----------------------------------------------------------------------

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        self._metrics = BleuMetrics()
        self.open_predictions(predictions_path, split)

    def decode(self, model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Translations of a padded batch of sources."""
        if self.cfg.beam_size > 1:
            outputs = beam_search(
                model, input_ids, mask, self.bos_id, self.eos_id, self.cfg.max_decode_len,
                beam_size=self.cfg.beam_size, length_penalty=self.cfg.length_penalty,
            )  # fmt: skip
        else:
            outputs = greedy_decode(
                model, input_ids, mask, self.bos_id, self.eos_id, self.cfg.max_decode_len
            )
        return [self.tokenizer.decode(ids).strip() for ids in outputs]

    def eval_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        terms = self(model, batch)
        base = getattr(model, "_orig_mod", model)  # decoding runs eagerly
        hypotheses = self.decode(base, batch["input_ids"], batch["attention_mask"])
        raw = self.raw[self._split]
        rows = raw[batch["index"].tolist()]
        self._metrics.update(hypotheses, rows["target"])
        if self._sink is not None:
            for source, reference, hypothesis in zip(rows["source"], rows["target"], hypotheses):
                record: dict[str, Any] = {
                    "source": source, "reference": reference, "prediction": hypothesis,
                }  # fmt: skip
                self.write_prediction(record)
        return terms

    def end_eval(self) -> dict[str, float]:
        self.close_predictions()
        return self._metrics.compute()
