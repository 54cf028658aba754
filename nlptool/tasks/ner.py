"""Named-entity recognition: one tag per word, scored by entity-level precision, recall and F1.

Files are CoNLL columns: one word per line with its tag (and anything else) in columns separated by
spaces or tabs, a blank line between sentences, `-DOCSTART-` lines ignored. Languages written
without spaces come as one character per line and need nothing special. Only ASCII spaces and tabs
separate columns: other Unicode spaces (U+3000, U+00A0) belong to the word.

The words are tokenized as they are ([CLS] subwords [SEP]); the first subword of each word carries
its tag, the later subwords and the specials are ignored by the loss (-100), as in the original
BERT. At evaluation the first subword's prediction is the word's, and the word-level tags go to
`EntityMetrics` in the scheme of the label set (IOB2, IOBES or BMES, detected or set).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nlptool.data.collate import IGNORE_INDEX, pad_batch
from nlptool.data.readers import iter_lines
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.models.bert import BertForTokenClassification
from nlptool.models.config import ModelConfig
from nlptool.objectives.base import LossTerm
from nlptool.tasks.base import SPLIT_KEYS, TaskBase, TaskExamples, split_path, text_field
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.metrics import EntityMetrics, detect_scheme, get_entities

IGNORE = IGNORE_INDEX  # the label of positions the loss skips
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
_LINE_SPACE = " \t\r\n"


def read_conll(
    path: Path, token_column: int, tag_column: int
) -> list[tuple[str, list[str], list[str]]]:
    """The sentences of a CoNLL file as (where, words, tags); `where` names the first word's line.

    A line with too few columns for `token_column` and `tag_column` (negative: from the end) is a
    UserError naming the file and line.
    """
    sentences: list[tuple[str, list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    where = ""
    for number, line in iter_lines(path):
        line = line.strip(_LINE_SPACE)
        columns = _COLUMN_SEPARATOR.split(line) if line else []
        if not columns or columns[0] == "-DOCSTART-":
            if words:
                sentences.append((where, words, tags))
                words, tags = [], []
            continue
        tag_index = tag_column if tag_column >= 0 else len(columns) + tag_column
        if not (token_column < len(columns) and 0 <= tag_index < len(columns)) or (
            tag_index == token_column
        ):
            need = max(token_column + 1, tag_column + 1 if tag_column >= 0 else -tag_column)
            raise UserError(
                f"{path}, line {number}: {len(columns)} column(s) in {line!r}, but "
                f"task.token_column={token_column} and task.tag_column={tag_column} need "
                f"{max(need, 2)} distinct ones. A CoNLL file has a word and its tag on each "
                "line, separated by spaces or tabs, and a blank line between sentences."
            )
        if not words:
            where = f"{path}, line {number}"
        words.append(columns[token_column])
        tags.append(columns[tag_index])
    if words:
        sentences.append((where, words, tags))
    return sentences


_UNSPACED = (  # scripts written without spaces between words: CJK, kana, full-width forms
    (0x3000, 0x30FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
)


def _unspaced(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in _UNSPACED)


def join_words(words: list[str]) -> str:
    """The words of an entity as text: a space between two words unless both sides are CJK."""
    text = words[0] if words else ""
    for word in words[1:]:
        text += word if _unspaced(text[-1]) and _unspaced(word[0]) else " " + word
    return text


class TokenClassificationTask(TaskBase):
    main_metric = "f1"

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self.scheme = ""
        if cfg.labels:
            self._fix_labels(list(cfg.labels), "task.labels")
        self._metrics: EntityMetrics | None = None

    def set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.cls_id = tokenizer.require("cls", f"task={self.cfg.name}")
        self.sep_id = tokenizer.require("sep", f"task={self.cfg.name}")

    # -- reading, labels and encoding -----------------------------------------------------

    def read(self, split: str) -> datasets.Dataset:
        """The split's sentences: tokens (words), tags, where (file and line)."""
        path = split_path(self.cfg, split)
        sentences = read_conll(path, self.cfg.token_column, self.cfg.tag_column)
        if not sentences:
            raise UserError(f"{SPLIT_KEYS[split]}: {path} holds no sentences")
        where, tokens, tags = zip(*sentences)
        ds = datasets.Dataset.from_dict(
            {"tokens": list(tokens), "tags": list(tags), "where": list(where)}
        )
        self.raw[split] = ds
        return ds

    def training_texts(self, train: datasets.Dataset):
        for start in range(0, len(train), 1000):
            yield from (" ".join(words) for words in train[start : start + 1000]["tokens"])

    def set_labels_from(self, train: datasets.Dataset) -> None:
        if self.labels:
            return
        tags = {tag for sentence in train["tags"] for tag in sentence}
        labels = ["O", *sorted(tags - {"O"})] if "O" in tags else sorted(tags)
        if len(labels) < 2:
            raise UserError(
                f"task.tag_column={self.cfg.tag_column}: the training file has a single tag "
                f"({labels[0]!r}); NER needs entity tags besides O"
            )
        self._fix_labels(labels, f"the tags of {SPLIT_KEYS['train']}")

    def _fix_labels(self, labels: list[str], source: str) -> None:
        """Set the labels and their scheme; the detected scheme is written back to the config,
        so the checkpoint (and `eval`) uses the same one."""
        scheme = self.cfg.tag_scheme
        if scheme == "auto":
            scheme = detect_scheme(labels)
        for label in labels:
            try:
                get_entities([label], scheme)
            except ValueError as err:
                raise UserError(
                    f"{source}: {err}; set task.tag_scheme (IOB2, IOBES or BMES) to the scheme "
                    "of the data"
                ) from None
        self.labels, self.scheme = labels, scheme
        self.cfg.tag_scheme = scheme
        self._label_ids = {label: i for i, label in enumerate(labels)}

    def _tag_ids(self, tags: list[str], where: str) -> list[int]:
        """The label ids of a sentence's tags; `where` is "<file>, line <N>" of its first word."""
        try:
            return [self._label_ids[tag] for tag in tags]
        except KeyError as err:
            file, _, line = where.rpartition(", line ")
            tag = err.args[0]
            raise UserError(
                f"{file}, line {int(line) + tags.index(tag)}: unknown tag {tag!r}; the known "
                f"tags are {', '.join(map(repr, self.labels))} (set task.labels to change them)"
            ) from None

    def encode(self, ds: datasets.Dataset) -> TaskExamples:
        if not self.labels:
            raise UserError(f"task={self.cfg.name}: no label set (set task.labels)")
        budget = self.cfg.max_seq_len - 2  # room for [CLS] and [SEP]
        columns: dict[str, list] = {"input_ids": [], "labels": [], "word_index": []}
        truncated_sentences = unpredicted_words = 0
        encoded = self.tokenizer.encode_words(ds["tokens"])
        for (ids, word_ids), tags, where in zip(encoded, ds["tags"], ds["where"]):
            tag_ids = self._tag_ids(tags, where)  # every tag checked, kept words or not
            truncated_sentences += len(ids) > budget
            labels = [IGNORE] * min(len(ids), budget)
            word_index = [-1] * len(labels)
            previous = -1
            for position, word in enumerate(word_ids[:budget]):
                if word >= 0 and word != previous:  # the first subword of a word
                    labels[position], word_index[position] = tag_ids[word], word
                previous = word
            # Words cut off by truncation (or that tokenize to nothing) get no position; at
            # evaluation they are predicted "O", so their gold entities still count as missed.
            unpredicted_words += len(tags) - (len(labels) - labels.count(IGNORE))
            columns["input_ids"].append([self.cls_id, *ids[:budget], self.sep_id])
            columns["labels"].append([IGNORE, *labels, IGNORE])
            columns["word_index"].append([-1, *word_index, -1])
        self.report_truncated(
            ds,
            truncated_sentences,
            f"; {unpredicted_words:,} words without a token count as O at evaluation",
        )
        sequence = datasets.Sequence(datasets.Value("int64"))
        features = datasets.Dataset.from_dict(
            columns,
            features=datasets.Features(
                {"input_ids": sequence, "labels": sequence, "word_index": sequence}
            ),
        )
        return TaskExamples(features)

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad_batch(
            items, {"input_ids": self.tokenizer.pad_id, "labels": IGNORE, "word_index": -1}
        )

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return BertForTokenClassification(model_cfg, len(self.labels))

    # -- the loss -------------------------------------------------------------------------

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"task": (batch["labels"] != IGNORE).sum()}

    def _forward(self, model: nn.Module, batch: dict[str, torch.Tensor]):
        logits = model(batch["input_ids"], batch.get("attention_mask")).float()  # (B, T, L)
        labels = batch["labels"]  # (B, T), IGNORE where not the first subword of a word
        loss = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum"
        )
        predicted = logits.argmax(-1)  # (B, T)
        return LossTerm(loss, (predicted == labels).sum()), predicted

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        return {"task": self._forward(model, batch)[0]}

    # -- evaluation -----------------------------------------------------------------------

    def start_eval(self, predictions_path: Path | None = None, split: str = "valid") -> None:
        self._metrics = EntityMetrics(self.scheme)
        self.open_predictions(predictions_path, split)

    def eval_batch(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        term, predicted = self._forward(model, batch)
        predicted = predicted.cpu().numpy()
        word_index = batch["word_index"].cpu().numpy()
        records = self.raw[self._split][batch["index"].tolist()]
        preds, golds = [], []
        for row, (words, gold) in enumerate(zip(records["tokens"], records["tags"])):
            pred = ["O"] * len(words)  # words with no position (truncated) stay O
            positions = np.flatnonzero(word_index[row] >= 0)
            for word, label in zip(word_index[row, positions], predicted[row, positions]):
                pred[word] = self.labels[label]
            preds.append(pred)
            golds.append(gold)
        self._metrics.update(preds, golds)
        if self._sink is not None:
            for words, gold, pred in zip(records["tokens"], golds, preds):
                out = {
                    "tokens": words,
                    "gold": gold,
                    "prediction": pred,
                    "entities": self._entities(words, pred),
                    "gold_entities": self._entities(words, gold),
                }
                self.write_prediction(out)
        return {"task": term}

    def inputs_to_raw(self, records: list[dict[str, Any]], where: list[str]) -> datasets.Dataset:
        """A record's words: its "tokens" list, or its "text" split at whitespace."""
        rows: dict[str, list] = {"tokens": [], "tags": [], "where": []}
        for record, at in zip(records, where):
            words = record.get("tokens")
            if not (isinstance(words, list) and all(isinstance(w, str) for w in words)):
                words = text_field(record, at, "text", "tokens").split()
            rows["tokens"].append(words)
            rows["tags"].append(["O"] * len(words))
            rows["where"].append(at)
        return datasets.Dataset.from_dict(rows)

    def prediction_fields(
        self, evaluated: dict[str, Any], record: dict[str, Any]
    ) -> dict[str, Any]:
        """The tags, and the entities with character spans in "text" ([start, end) offsets), or
        word spans (start_word, end_word inclusive) for pre-split "tokens"."""
        entities = []
        text = record.get("text") if not isinstance(record.get("tokens"), list) else None
        spans = [m.span() for m in re.finditer(r"\S+", text)] if isinstance(text, str) else None
        for entity in evaluated["entities"]:
            first, last = entity["start"], entity["end"]
            if spans is not None:
                start, end = spans[first][0], spans[last][1]
                entities.append(
                    {"type": entity["type"], "text": text[start:end], "start": start, "end": end}
                )
            else:
                entities.append(
                    {"type": entity["type"], "text": entity["text"], "start_word": first,
                     "end_word": last}
                )  # fmt: skip
        return {"tags": evaluated["prediction"], "entities": entities}

    def _entities(self, words: list[str], tags: list[str]) -> list[dict[str, Any]]:
        """Entities as {type, start, end, text}; start and end are word indices, end inclusive
        (as seqeval's get_entities)."""
        return [
            {"type": kind, "start": start, "end": end, "text": join_words(words[start : end + 1])}
            for kind, start, end in get_entities(tags, self.scheme)
        ]

    def end_eval(self) -> dict[str, float]:
        self.close_predictions()
        return self._metrics.compute()
