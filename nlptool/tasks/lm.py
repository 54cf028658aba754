"""Causal language modelling as a fine-tuning task (`task=lm`), for `gpt*` models.

Two kinds of data:
- Plain text (a domain corpus): `.txt` files (a blank line between documents) or record files
  with `task.text_column`. The documents, each followed by end-of-text, are packed into blocks of
  `task.max_seq_len` tokens, and every next token is predicted.
- Prompt / response pairs (instruction data): `task.prompt_column` and `task.response_column` of a
  record file. Each example is prompt + response + end-of-text, and the loss covers the response
  and the end-of-text only: the model learns to answer, not to write prompts.

The metric is perplexity (lower is better; the best checkpoint is kept by it) with the accuracy
of the next-token guesses. Shape letters: B batch, T sequence length, C hidden, V vocabulary.
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
from nlptool.data.readers import iter_documents
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.models.config import ModelConfig
from nlptool.models.gpt import GPTForCausalLM
from nlptool.objectives.base import LossTerm
from nlptool.tasks.base import SPLIT_KEYS, TaskBase, TaskExamples, read_columns, split_path
from nlptool.tasks.config import TaskConfig

IGNORE = IGNORE_INDEX


class LanguageModelingTask(TaskBase):
    terms = ("lm",)
    perplexity_term = "lm"  # the loop reports valid/ppl from the lm term's mean loss
    main_metric = "ppl"
    greater_is_better = False
    architectures: ClassVar[tuple[str, ...]] = ("gpt",)

    needs: ClassVar[str] = (
        "trains a causal language model: it needs a decoder (model=gpt-*, or init= "
        "a GPT checkpoint), not model={model}"
    )

    def head_flops(self, model_cfg: ModelConfig, batch: dict[str, torch.Tensor]) -> float:
        """The output projection at the positions that have a target."""
        scored = int((batch["labels"][:, 1:] != IGNORE).sum())
        return float(2 * scored * model_cfg.hidden_size * model_cfg.vocab_size)

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self.instructions = bool(cfg.prompt_column or cfg.response_column)
        if self.instructions and not (cfg.prompt_column and cfg.response_column):
            raise UserError(
                "task=lm with prompts and responses needs both task.prompt_column and "
                "task.response_column"
            )

    # -- data -------------------------------------------------------------------------------

    def read(self, split: str) -> datasets.Dataset:
        """Plain text: one row per document (text). Instructions: prompt, response, where."""
        if self.instructions:
            columns = {
                "prompt_column": self.cfg.prompt_column,
                "response_column": self.cfg.response_column,
            }
            rows: dict[str, list] = {"prompt": [], "response": [], "where": []}
            for where, row in read_columns(self.cfg, split, columns):
                rows["prompt"].append(str(row["prompt_column"] or ""))
                rows["response"].append(str(row["response_column"] or ""))
                rows["where"].append(where)
        else:
            path = split_path(self.cfg, split)
            column = str(self.cfg.text_column)
            rows = {"text": ["\n".join(doc) for doc in iter_documents(path, column) if doc]}
            if not rows["text"]:
                raise UserError(f"{SPLIT_KEYS[split]}: {path} holds no text")
        ds = datasets.Dataset.from_dict(rows)
        self.raw[split] = ds
        return ds

    def training_texts(self, train: datasets.Dataset) -> Iterator[str]:
        for start in range(0, len(train), 1000):
            chunk = train[start : start + 1000]
            if self.instructions:
                yield from chunk["prompt"]
                yield from chunk["response"]
            else:
                yield from chunk["text"]

    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.require("eos", "task=lm (the end of each text)")

    def set_labels_from(self, train: datasets.Dataset) -> None:
        self.labels = []  # next-token prediction has no label set

    def encode(self, raw: datasets.Dataset) -> TaskExamples:
        limit = self.cfg.max_seq_len
        columns: dict[str, list] = {"input_ids": [], "labels": []}
        if self.instructions:
            prompts = self.tokenizer.encode_batch(raw["prompt"])
            responses = self.tokenizer.encode_batch(raw["response"])
            truncated = 0
            for prompt, response in zip(prompts, responses):
                ids = [*prompt, *response, self.eos_id]
                labels = [IGNORE] * len(prompt) + [*response, self.eos_id]
                truncated += len(ids) > limit
                columns["input_ids"].append(ids[:limit])
                columns["labels"].append(labels[:limit])
            self.report_truncated(raw, truncated)
        else:
            stream: list[int] = []
            for ids in self.tokenizer.encode_batch(raw["text"]):
                stream.extend(ids)
                stream.append(self.eos_id)
            for start in range(0, len(stream) - 1, limit):  # (a last block of 1 token: nothing)
                block = stream[start : start + limit]
                if len(block) > 1:
                    columns["input_ids"].append(block)
                    columns["labels"].append(block)
        sequence = datasets.Sequence(datasets.Value("int64"))
        features = datasets.Features({"input_ids": sequence, "labels": sequence})
        return TaskExamples(datasets.Dataset.from_dict(columns, features=features))

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad_batch(items, {"input_ids": self.tokenizer.pad_id, "labels": IGNORE})

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        if model_cfg.arch != "gpt":
            raise UserError(
                f"task=lm trains a causal language model: model={model_cfg.name} is a "
                f"{model_cfg.arch} model; use a gpt* model (model=gpt-tiny, or init= a GPT)"
            )
        return GPTForCausalLM(model_cfg)

    # -- loss -------------------------------------------------------------------------------

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"lm": (batch["labels"][:, 1:] != IGNORE).sum()}

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        hidden = model(batch["input_ids"], batch.get("attention_mask"))  # (B, T, C)
        targets = batch["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        scored = targets != IGNORE
        logits = model.lm_logits(hidden[:, :-1][scored])  # (N, V): only where there is a target
        wanted = targets[scored]
        loss_sum = F.cross_entropy(logits.float(), wanted, reduction="sum")
        correct = (logits.argmax(-1) == wanted).sum()
        return {"lm": LossTerm(loss_sum=loss_sum, correct=correct)}

    # -- evaluation -------------------------------------------------------------------------

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        self._correct, self._count = 0, 0
        self.open_predictions(predictions_path, split)

    def eval_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        terms = self(model, batch)
        self._correct += int(terms["lm"].correct)
        self._count += int(self.counts(batch)["lm"])
        return terms

    def end_eval(self) -> dict[str, float]:
        self.close_predictions()
        return {"token_accuracy": self._correct / max(self._count, 1)}

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        raise UserError(
            "nlptool predict does not apply to task=lm: continue text with nlptool generate "
            "checkpoint=... prompt=..."
        )
