"""Downstream-task metrics, accumulated batch by batch and exact against the reference tools.

Every metric has `update(preds, golds)` for one batch, `compute() -> dict[str, float]` over all
the batches so far, and a class attribute `main` naming the key to select checkpoints on.
Counting metrics (classification, NER, SQuAD) keep only counts, so evaluation memory does not grow
with the data; correlations and BLEU need every pair and keep them compactly (float arrays,
strings).

The reference each one matches, checked on random cases by tests/tasks/test_metrics.py:

- `ClassificationMetrics`: scikit-learn `accuracy_score`, `f1_score(average="macro",
  labels=range(num_labels), zero_division=0)` and, for a positive label, `f1_score`,
  `precision_score`, `recall_score` with `pos_label`.
- `RegressionMetrics`: `scipy.stats.pearsonr` and `scipy.stats.spearmanr` (ties share their
  average rank).
- `EntityMetrics`: seqeval. IOB2 matches its default (lenient, conlleval) mode,
  `seqeval.metrics.f1_score(golds, preds)`; IOBES matches `mode="strict", scheme=IOBES`; BMES
  matches strict IOBES after renaming the M- tags to I-.
- `SquadMetrics`: the official SQuAD v1.1 `evaluate-v1.1.py` (exact match and token F1, the
  best over the gold answers, as percentages).
- `BleuMetrics`: sacrebleu corpus BLEU.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np


class Metric(Protocol):
    main: ClassVar[str]
    """The key of `compute()` that ranks checkpoints (higher is better)."""

    def update(self, preds: Any, golds: Any) -> None:
        """Add one batch of predictions and their gold answers."""
        ...

    def compute(self) -> dict[str, float]:
        """The metrics over every batch added so far."""
        ...


def _divide(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (the references' zero_division=0)."""
    return float(numerator / denominator) if denominator else 0.0


def _harmonic_mean(precision: float, recall: float) -> float:
    return _divide(2 * precision * recall, precision + recall)


def _flat_pair(preds: Any, golds: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Both as flat numpy arrays of the same size; `kind` "int" also checks they hold integers."""
    preds, golds = np.ravel(np.asarray(preds)), np.ravel(np.asarray(golds))
    if preds.size != golds.size:
        raise ValueError(f"{preds.size} predictions but {golds.size} gold values")
    if kind == "int":
        for name, values in (("predictions", preds), ("gold labels", golds)):
            if values.size and values.dtype.kind not in "iub":
                raise TypeError(f"{name} must be integer labels, got dtype {values.dtype}")
        return preds.astype(np.int64), golds.astype(np.int64)
    return preds.astype(np.float64), golds.astype(np.float64)


def _check_no_data(count: int, metric: object) -> None:
    if count == 0:
        raise ValueError(f"{type(metric).__name__}.compute() was called before any example")


# --- classification ---------------------------------------------------------------------------


class ClassificationMetrics:
    """Accuracy and macro F1 over `num_labels` classes, from a streamed confusion matrix.

    With `positive_label` (binary and sentence-pair tasks such as MRPC or QQP) it also gives the
    F1, precision and recall of that class.
    """

    main: ClassVar[str] = "accuracy"

    def __init__(self, num_labels: int, positive_label: int | None = None) -> None:
        if num_labels < 2:
            raise ValueError(f"num_labels must be at least 2, got {num_labels}")
        if positive_label is not None and not 0 <= positive_label < num_labels:
            raise ValueError(f"positive_label must be in [0, {num_labels}), got {positive_label}")
        self.num_labels = num_labels
        self.positive_label = positive_label
        self.confusion = np.zeros((num_labels, num_labels), dtype=np.int64)  # [gold, pred]

    def update(self, preds: Any, golds: Any) -> None:
        preds, golds = _flat_pair(preds, golds, "int")
        for name, values in (("prediction", preds), ("gold label", golds)):
            if values.size and (values.min() < 0 or values.max() >= self.num_labels):
                raise ValueError(f"a {name} is outside [0, {self.num_labels})")
        cells = np.bincount(golds * self.num_labels + preds, minlength=self.num_labels**2)
        self.confusion += cells.reshape(self.num_labels, self.num_labels)

    def compute(self) -> dict[str, float]:
        _check_no_data(int(self.confusion.sum()), self)
        true_positives = np.diag(self.confusion)
        predicted = self.confusion.sum(axis=0)
        gold = self.confusion.sum(axis=1)
        # Per-class F1 = 2 tp / (gold + predicted); a class neither predicted nor gold scores 0
        # and still counts in the macro average, as sklearn with labels=range(num_labels).
        denominator = (gold + predicted).astype(np.float64)
        f1 = np.divide(
            2.0 * true_positives, denominator, out=np.zeros(self.num_labels), where=denominator > 0
        )
        result = {
            "accuracy": float(true_positives.sum() / self.confusion.sum()),
            "macro_f1": float(f1.mean()),
        }
        if self.positive_label is not None:
            label = self.positive_label
            result["f1"] = float(f1[label])
            result["precision"] = _divide(true_positives[label], predicted[label])
            result["recall"] = _divide(true_positives[label], gold[label])
        return result


# --- regression -------------------------------------------------------------------------------


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r as scipy.stats.pearsonr computes it; NaN when either input is constant."""
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    x_centred, y_centred = x - x.mean(), y - y.mean()
    r = np.dot(x_centred / np.linalg.norm(x_centred), y_centred / np.linalg.norm(y_centred))
    return float(np.clip(r, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks (scipy.stats.rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)  # 0-based position where each group of ties starts
    last = np.append(first[1:], values.size) - 1
    ranks = np.empty(values.size)
    ranks[order] = ((first + last) / 2 + 1)[group]
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")  # scipy's default nan_policy="propagate"
    return _pearson(_average_ranks(x), _average_ranks(y))


class RegressionMetrics:
    """Pearson and Spearman correlations and mean squared error (STS-B and similar).

    Correlations need every pair at once, so the predictions are kept as float64 arrays.
    """

    main: ClassVar[str] = "pearson"

    def __init__(self) -> None:
        self._preds: list[np.ndarray] = []
        self._golds: list[np.ndarray] = []

    def update(self, preds: Any, golds: Any) -> None:
        preds, golds = _flat_pair(preds, golds, "float")
        self._preds.append(preds)
        self._golds.append(golds)

    def compute(self) -> dict[str, float]:
        preds = np.concatenate(self._preds) if self._preds else np.zeros(0)
        golds = np.concatenate(self._golds) if self._golds else np.zeros(0)
        _check_no_data(preds.size, self)
        return {
            "pearson": _pearson(preds, golds),
            "spearman": _spearman(preds, golds),
            "mse": float(np.mean((preds - golds) ** 2)),
        }


# --- named entities ---------------------------------------------------------------------------

SCHEMES: dict[str, str] = {"IOB2": "BI", "IOBES": "BIES", "BMES": "BMES"}
"""Tagging scheme -> the prefixes its entity tags may carry (besides the plain `O`)."""


def _parse_tag(tag: str, scheme: str) -> tuple[str, str]:
    """`B-PER` -> ("B", "PER"). An untyped tag such as `B` gets seqeval's type "_"; BMES's M-
    becomes I- so that BMES can share the IOBES rules."""
    if tag == "O":
        return "O", ""
    prefix, _, entity_type = tag.partition("-")
    if prefix not in SCHEMES[scheme]:
        allowed = ", ".join(f"{p}-" for p in SCHEMES[scheme])
        raise ValueError(f"{tag!r} is not a {scheme} tag: expected O or {allowed} and a type")
    return ("I" if prefix == "M" else prefix), entity_type or "_"


def _lenient_entities(tags: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """seqeval's default (conlleval) chunking of B/I/O tags: an I- that follows O or a different
    type starts an entity instead of being dropped, and any change of type ends one."""
    entities = []
    start, prev_prefix, prev_type = 0, "O", ""
    for i, (prefix, entity_type) in enumerate([*tags, ("O", "")]):
        if prev_prefix != "O" and (prefix != "I" or entity_type != prev_type):
            entities.append((prev_type, start, i - 1))
        if prefix == "B" or (prefix == "I" and (prev_prefix == "O" or entity_type != prev_type)):
            start = i
        prev_prefix, prev_type = prefix, entity_type
    return entities


def _strict_entities(tags: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """seqeval's strict IOBES chunking: only `S-x` or `B-x (I-x)* E-x` is an entity; anything
    ill-formed (a B- never closed, an I- or E- with no B-, a type change) yields none."""
    entities = []
    i = 0
    while i < len(tags):
        prefix, entity_type = tags[i]
        if prefix == "S":
            entities.append((entity_type, i, i))
            i += 1
        elif prefix == "B":
            end = i + 1
            while end < len(tags) and tags[end] == ("I", entity_type):
                end += 1
            if end < len(tags) and tags[end] == ("E", entity_type):
                entities.append((entity_type, i, end))
                end += 1
            i = end  # an unclosed run resumes at the tag that broke it: it may start an entity
        else:
            i += 1
    return entities


def get_entities(tags: Sequence[str], scheme: str) -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as (type, start, end), `end` inclusive like seqeval's
    `get_entities`. IOB2 chunks leniently (seqeval default mode), IOBES and BMES strictly."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tagging scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    parsed = [_parse_tag(tag, scheme) for tag in tags]
    return _lenient_entities(parsed) if scheme == "IOB2" else _strict_entities(parsed)


def detect_scheme(tags: Iterable[str]) -> str:
    """The scheme of a tag set (a label vocabulary or the tags of a corpus): BMES if any tag is
    M-, else IOBES if any is E- or S-, else IOB2."""
    prefixes = {tag.partition("-")[0] for tag in tags if tag != "O"}
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S"}:
        return "IOBES"
    return "IOB2"


class EntityMetrics:
    """Entity-level precision, recall and F1 (micro over entities), plus F1 per entity type.

    `update` takes word-level tag strings, one list per sentence (positions a model does not
    predict, such as later sub-words, already dropped). Only per-type counts are kept.
    """

    main: ClassVar[str] = "f1"

    def __init__(self, scheme: str) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown tagging scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
        self.scheme = scheme
        self.true_positives: Counter[str] = Counter()
        self.predicted: Counter[str] = Counter()
        self.gold: Counter[str] = Counter()
        self.sentences = 0

    def update(self, preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]) -> None:
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predicted sentences but {len(golds)} gold sentences")
        for index, (pred_tags, gold_tags) in enumerate(zip(preds, golds)):
            if len(pred_tags) != len(gold_tags):
                raise ValueError(
                    f"sentence {index} of the batch has {len(pred_tags)} predicted tags "
                    f"but {len(gold_tags)} gold tags"
                )
            predicted = set(get_entities(pred_tags, self.scheme))
            gold = set(get_entities(gold_tags, self.scheme))
            self.predicted.update(entity[0] for entity in predicted)
            self.gold.update(entity[0] for entity in gold)
            self.true_positives.update(entity[0] for entity in predicted & gold)
        self.sentences += len(preds)

    def compute(self) -> dict[str, float]:
        _check_no_data(self.sentences, self)
        precision = _divide(self.true_positives.total(), self.predicted.total())
        recall = _divide(self.true_positives.total(), self.gold.total())
        result = {"precision": precision, "recall": recall, "f1": _harmonic_mean(precision, recall)}
        for entity_type in sorted(self.predicted.keys() | self.gold.keys()):
            type_precision = _divide(self.true_positives[entity_type], self.predicted[entity_type])
            type_recall = _divide(self.true_positives[entity_type], self.gold[entity_type])
            result[f"f1/{entity_type}"] = _harmonic_mean(type_precision, type_recall)
        return result


# --- extractive question answering ------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as in the official script


def normalize_answer(text: str) -> str:
    """The official SQuAD v1.1 normalisation, in its order: lower-case, drop ASCII punctuation,
    drop the articles a/an/the, then collapse whitespace."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_answers(golds: str | Sequence[str]) -> Sequence[str]:
    answers = [golds] if isinstance(golds, str) else golds
    if not answers:
        raise ValueError("a question needs at least one gold answer")
    return answers


def squad_exact_match(pred: str, golds: str | Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    pred = normalize_answer(pred)
    return max(float(pred == normalize_answer(gold)) for gold in _as_answers(golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0  # also when both are empty: the v1.1 script gives 0, not 1
    return _harmonic_mean(common / len(pred_tokens), common / len(gold_tokens))


def squad_f1(pred: str, golds: str | Sequence[str]) -> float:
    """The best bag-of-tokens F1 between the normalised prediction and any gold answer."""
    pred_tokens = normalize_answer(pred).split()
    return max(
        _token_f1(pred_tokens, normalize_answer(gold).split()) for gold in _as_answers(golds)
    )


class SquadMetrics:
    """SQuAD v1.1 exact match and F1, as percentages (0-100) like the official script."""

    main: ClassVar[str] = "f1"

    def __init__(self) -> None:
        self.exact_match_sum = 0.0
        self.f1_sum = 0.0
        self.questions = 0

    def update(self, preds: Sequence[str], golds: Sequence[str | Sequence[str]]) -> None:
        """`preds`: one answer text per question; `golds`: the gold answer texts of each."""
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} predicted answers but {len(golds)} questions")
        for pred, answers in zip(preds, golds):
            self.exact_match_sum += squad_exact_match(pred, answers)
            self.f1_sum += squad_f1(pred, answers)
        self.questions += len(preds)

    def compute(self) -> dict[str, float]:
        _check_no_data(self.questions, self)
        return {
            "exact_match": 100.0 * self.exact_match_sum / self.questions,
            "f1": 100.0 * self.f1_sum / self.questions,
        }


# --- translation ------------------------------------------------------------------------------


class BleuMetrics:
    """sacrebleu corpus BLEU (0-100) over detokenised hypothesis and reference strings, one
    reference per hypothesis; `bleu_bp` is its brevity penalty.

    `tokenize` is sacrebleu's tokenizer name ("13a", "intl", "zh", "char", ...); it is checked
    when the metric is built, so a bad name fails before training starts.
    """

    main: ClassVar[str] = "bleu"

    def __init__(self, tokenize: str = "13a") -> None:
        try:
            from sacrebleu.metrics import BLEU
        except ImportError as error:
            raise ImportError(
                "BleuMetrics needs the sacrebleu package: pip install 'sacrebleu>=2.0'"
            ) from error
        self.tokenize = tokenize
        self._bleu = BLEU(tokenize=tokenize)
        self._hypotheses: list[str] = []
        self._references: list[str] = []

    def update(self, preds: Sequence[str], golds: Sequence[str]) -> None:
        if len(preds) != len(golds):
            raise ValueError(f"{len(preds)} hypotheses but {len(golds)} references")
        self._hypotheses.extend(preds)
        self._references.extend(golds)

    def compute(self) -> dict[str, float]:
        _check_no_data(len(self._hypotheses), self)
        score = self._bleu.corpus_score(self._hypotheses, [self._references])
        return {"bleu": float(score.score), "bleu_bp": float(score.bp)}
