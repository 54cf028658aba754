"""Extractive question answering (`qa`, `squad`): find the answer span in a context.

Data: SQuAD JSON (`data[].paragraphs[].qas[].answers[]`, optionally `.gz`), one example per
question. The shared SQuAD file is the dev set only, so one file can be split by article
(task.train_articles: the first N train, the rest evaluate).

Encoding: [CLS] question [SEP] context window [SEP], segments 0 and 1. A context longer than the
window is cut into windows that overlap by task.doc_stride tokens; each window is a feature that
remembers its example and the character span of each of its context tokens, so a predicted span
maps back to the original text. A training answer outside a window points at [CLS] (0, 0).

Model and loss: BERT with a start/end head; (CE(start) + CE(end)) / 2 per feature.

Evaluation: in every window the task.n_best best starts and ends make candidate spans (inside the
context, end >= start, at most task.max_answer_len tokens), scored start_logit + end_logit; the
best span over all windows of a question is its answer. Exact match and F1 use the official SQuAD
v1.1 normalisation, best over all gold answers.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import pad_batch
from nlptool.data.readers import iter_lines
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.models.bert import BertForQuestionAnswering
from nlptool.models.config import ModelConfig
from nlptool.objectives.base import LossTerm
from nlptool.tasks.base import TaskBase, TaskExamples, split_path, text_field
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.metrics import SquadMetrics

NOT_CONTEXT = -1  # char_start / char_end of a token outside the context ([CLS], question, [SEP])


# -- reading ------------------------------------------------------------------------------------


def load_articles(path: Path) -> list[dict]:
    """The `data` list of a SQuAD JSON file (optionally gzip-compressed)."""
    # Line by line through the shared reader: bad UTF-8 is named by line (or replaced under
    # data.encoding_errors=replace), a BOM dropped, a corrupt .gz reported.
    text = "".join(line for _, line in iter_lines(path))
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}, line {err.lineno}: not valid JSON ({err.msg}, at column {err.colno}); "
            "expected a SQuAD file"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise UserError(
            f"{path}: no top-level 'data' list; expected SQuAD JSON "
            "(data[].paragraphs[].qas[].answers[])"
        )
    return document["data"]


def _answer_start(context: str, text: str, start: int, where: str) -> int:
    """The given start if the answer is there, else the nearest occurrence of the answer."""
    if context[start : start + len(text)] == text:
        return start
    found, i = [], context.find(text) if text else -1
    while i >= 0:
        found.append(i)
        i = context.find(text, i + 1)
    if not found:
        raise UserError(f"{where}: the answer {text!r} is not in the context")
    return min(found, key=lambda i: abs(i - start))


def squad_rows(path: Path, articles: list[dict], first_article: int) -> dict[str, list]:
    """One row per question: id, title, question, context, answers, answer_start, where."""
    rows: dict[str, list] = {
        k: [] for k in ("id", "title", "question", "context", "answers", "answer_start", "where")
    }
    where = f"{path}, article {first_article}"
    try:
        for a, article in enumerate(articles, start=first_article):
            where = f"{path}, article {a}"
            for p, paragraph in enumerate(article["paragraphs"]):
                where = f"{path}, article {a}, paragraph {p}"
                context = paragraph["context"]
                for q, qa in enumerate(paragraph["qas"]):
                    where = f"{path}, article {a}, paragraph {p}, question {qa.get('id', q)}"
                    answers = [str(answer["text"]) for answer in qa["answers"]]
                    if not answers:
                        raise UserError(
                            f"{where}: no answers (unanswerable SQuAD 2.0 questions are not "
                            "supported)"
                        )
                    start = int(qa["answers"][0]["answer_start"])
                    rows["id"].append(str(qa.get("id", f"{a}-{p}-{q}")))
                    rows["title"].append(str(article.get("title", "")))
                    rows["question"].append(str(qa["question"]))
                    rows["context"].append(str(context))
                    rows["answers"].append(answers)
                    rows["answer_start"].append(_answer_start(context, answers[0], start, where))
                    rows["where"].append(where)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise UserError(
            f"{where}: missing or malformed {err}; expected SQuAD JSON "
            "(data[].paragraphs[].context and .qas[].question/.answers[].text/answer_start)"
        ) from None
    return rows


# -- span decoding ------------------------------------------------------------------------------


def best_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    in_context: torch.Tensor,
    n_best: int,
    max_answer_len: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best span of each feature: (score, start, end) token positions, each (B,).

    Candidates pair the n_best best starts with the n_best best ends among context tokens, with
    start <= end < start + max_answer_len; score = start_logit + end_logit (-inf: no valid span).
    """
    k = min(n_best, start_logits.shape[-1])
    start_scores, starts = start_logits.masked_fill(~in_context, -math.inf).topk(k, -1)  # (B, k)
    end_scores, ends = end_logits.masked_fill(~in_context, -math.inf).topk(k, -1)  # (B, k)
    scores = start_scores[:, :, None] + end_scores[:, None, :]  # (B, k starts, k ends)
    length = ends[:, None, :] - starts[:, :, None]  # (B, k, k): end - start
    valid = (length >= 0) & (length < max_answer_len) & scores.isfinite()
    best_score, best = scores.masked_fill(~valid, -math.inf).flatten(1).max(-1)  # (B,)
    rows = torch.arange(len(best), device=best.device)
    return best_score, starts[rows, best // k], ends[rows, best % k]


def span_text(context: str, char_start: int, char_end: int) -> str:
    """The answer text of a character span (byte-level tokens carry their leading space)."""
    return context[char_start:char_end].strip()


# -- the task -----------------------------------------------------------------------------------


class QuestionAnsweringTask(TaskBase):
    main_metric = "f1"

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)  # labels stay empty: the answers are spans
        self._best: dict[int, tuple[float, int, int]] = {}  # example -> (score, char span)

    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.cls_id = tokenizer.require("cls", f"task={self.cfg.name}")
        self.sep_id = tokenizer.require("sep", f"task={self.cfg.name}")

    def set_labels_from(self, train: datasets.Dataset) -> None:
        pass

    # -- reading and encoding -------------------------------------------------------------

    def _source(self, split: str) -> tuple[Path, int, int | None]:
        """The split's file and its article range [first, last): with task.train_articles=N,
        training reads the first N articles, and a split from the same file (or valid with no
        file of its own) the rest."""
        cfg, n = self.cfg, self.cfg.train_articles
        if n is not None and n < 1:
            raise UserError(f"task.train_articles={n}: must be at least 1 (or null: whole files)")
        if split == "train":
            return split_path(cfg, "train"), 0, n
        own_file = getattr(cfg, f"{split}_file")
        if n is not None and (own_file == cfg.train_file or (split == "valid" and not own_file)):
            return split_path(cfg, "train"), n, None
        return split_path(cfg, split), 0, None

    def read(self, split: str) -> datasets.Dataset:
        path, first, last = self._source(split)
        articles = load_articles(path)
        if first >= len(articles):
            raise UserError(
                f"task.train_articles={first}: {path} has only {len(articles)} articles, which "
                f"leaves none for {split}; lower task.train_articles"
            )
        rows = squad_rows(path, articles[first:last], first)
        if not rows["id"]:
            raise UserError(f"task.{split}_file: {path} holds no questions")
        ds = datasets.Dataset.from_dict(rows)
        self.raw[split] = ds
        return ds

    def training_texts(self, train: datasets.Dataset) -> Iterator[str]:
        previous = None
        for start in range(0, len(train), 1000):
            rows = train[start : start + 1000]
            for context, question in zip(rows["context"], rows["question"]):
                if context != previous:  # questions of a paragraph are consecutive
                    yield context
                    previous = context
                yield question

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        """A question ("question" or "text") about a passage ("context" or "text_pair")."""
        rows: dict[str, list] = {
            k: []
            for k in ("id", "title", "question", "context", "answers", "answer_start", "where")
        }
        for n, (record, at) in enumerate(zip(records, where)):
            rows["id"].append(str(record.get("id", n)))
            rows["title"].append("")
            rows["question"].append(text_field(record, at, "question", "text"))
            rows["context"].append(text_field(record, at, "context", "text_pair"))
            rows["answers"].append([""])  # (no gold answer)
            rows["answer_start"].append(0)
            rows["where"].append(at)
        return datasets.Dataset.from_dict(rows)

    def prediction_fields(
        self, evaluated: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """The answer span: its text, [start, end) character offsets in the context, score."""
        return {key: evaluated[key] for key in ("answer", "start", "end", "score")}

    def encode(self, ds: datasets.Dataset) -> TaskExamples:
        max_len, pad = self.cfg.max_seq_len, NOT_CONTEXT
        max_question = (max_len - 3) // 2
        questions = self.tokenizer.encode_batch(ds["question"])
        unique: dict[str, int] = {}
        for context in ds["context"]:
            unique.setdefault(context, len(unique))
        encoded_contexts = self.tokenizer.encode_with_offsets(list(unique))
        columns: dict[str, list] = {
            k: []
            for k in (
                "input_ids",
                "token_type_ids",
                "char_start",
                "char_end",
                "start_positions",
                "end_positions",
                "example",
            )
        }
        rows = zip(questions, ds["context"], ds["answers"], ds["answer_start"])
        for example, (question, context, answers, answer_start) in enumerate(rows):
            question = question[:max_question]
            ids, offsets = encoded_contexts[unique[context]]
            starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
            # The answer's first token ends after its first character; its last token starts
            # before its end.
            first = bisect.bisect_right(ends, answer_start)
            last = bisect.bisect_left(starts, answer_start + len(answers[0])) - 1
            budget = max_len - 3 - len(question)  # context tokens per window
            step = budget - min(self.cfg.doc_stride, budget // 2)
            head = [self.cls_id, *question, self.sep_id]
            window = 0
            while True:
                stop = min(window + budget, len(ids))
                columns["input_ids"].append([*head, *ids[window:stop], self.sep_id])
                columns["token_type_ids"].append([0] * len(head) + [1] * (stop - window + 1))
                columns["char_start"].append([pad] * len(head) + starts[window:stop] + [pad])
                columns["char_end"].append([pad] * len(head) + ends[window:stop] + [pad])
                inside = window <= first <= last < stop
                shift = len(head) - window
                columns["start_positions"].append(first + shift if inside else 0)
                columns["end_positions"].append(last + shift if inside else 0)
                columns["example"].append(example)
                if stop >= len(ids):
                    break
                window += step
        sequence = datasets.Sequence(datasets.Value("int64"))
        scalar = datasets.Value("int64")
        features = datasets.Dataset.from_dict(
            columns,
            features=datasets.Features(
                {
                    "input_ids": sequence,
                    "token_type_ids": sequence,
                    "char_start": sequence,
                    "char_end": sequence,
                    "start_positions": scalar,
                    "end_positions": scalar,
                    "example": scalar,
                }
            ),
        )
        return TaskExamples(features)

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad_batch(
            items,
            {
                "input_ids": self.tokenizer.pad_id,
                "char_start": NOT_CONTEXT,
                "char_end": NOT_CONTEXT,
            },
        )

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return BertForQuestionAnswering(model_cfg)

    # -- the loss -------------------------------------------------------------------------

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": torch.tensor(batch["start_positions"].shape[0])}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        mask = batch.get("attention_mask")
        start, end = model(batch["input_ids"], mask, batch["token_type_ids"])  # 2 x (B, T)
        start, end = start.float(), end.float()
        if mask is not None:  # padding is never an answer
            start = start.masked_fill(mask == 0, -math.inf)
            end = end.masked_fill(mask == 0, -math.inf)
        gold_start, gold_end = batch["start_positions"], batch["end_positions"]
        loss = (
            F.cross_entropy(start, gold_start, reduction="sum")
            + F.cross_entropy(end, gold_end, reduction="sum")
        ) / 2
        correct = ((start.argmax(-1) == gold_start) & (end.argmax(-1) == gold_end)).sum()
        return LossTerm(loss, correct), start, end

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        return {"task": self._forward(model, batch)[0]}

    # -- evaluation -----------------------------------------------------------------------

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        self._best = {}
        self.open_predictions(predictions_path, split)

    def eval_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        term, start, end = self._forward(model, batch)
        scores, starts, ends = best_spans(
            start, end, batch["char_start"] >= 0, self.cfg.n_best, self.cfg.max_answer_len
        )
        rows = torch.arange(len(starts), device=starts.device)
        char_start = batch["char_start"][rows, starts].tolist()
        char_end = batch["char_end"][rows, ends].tolist()
        # One question's windows may fall in different batches: keep its best span so far.
        for example, score, s, e in zip(
            batch["example"].tolist(), scores.tolist(), char_start, char_end
        ):
            if example not in self._best or score > self._best[example][0]:
                self._best[example] = (score, s, e)
        return {"task": term}

    def end_eval(self) -> dict[str, float]:
        metrics = SquadMetrics()
        raw = self.raw[self._split]
        for first in range(0, len(raw), 1000):
            chunk = raw[first : first + 1000]
            preds, golds = [], []
            for offset, (qid, question, context, answers) in enumerate(
                zip(chunk["id"], chunk["question"], chunk["context"], chunk["answers"])
            ):
                found = self._best.get(first + offset)
                if found is None:  # not evaluated (trainer.eval_batches)
                    continue
                score, s, e = found
                text = span_text(context, s, e) if math.isfinite(score) else ""
                preds.append(text)
                golds.append(answers)
                if self._sink is not None:
                    found_span = math.isfinite(score)
                    record = {
                        "id": qid,
                        "question": question,
                        "gold": answers,
                        "prediction": text,
                        "score": round(score, 4) if found_span else None,
                        "answer": text,
                        "start": int(s) if found_span else None,
                        "end": int(e) if found_span else None,
                    }
                    self.write_prediction(record)
            if preds:
                metrics.update(preds, golds)
        self.close_predictions()
        self._best = {}
        return metrics.compute()
