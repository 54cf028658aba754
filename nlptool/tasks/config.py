"""The typed config of the `task` group: a downstream task's files, columns and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nlptool.errors import check

TASK_KINDS = (
    "classification", "pair_classification", "regression", "ner", "qa", "translation", "lm",
)  # fmt: skip


@dataclass
class TaskConfig:
    """A downstream task: what its files hold and how it is scored."""

    name: str = "classification"
    """Preset name, for logs and checkpoints."""
    kind: str = "classification"
    """classification, pair_classification, regression, ner, qa, translation or lm."""
    _target_: str | None = None
    """Your own task class (module.Class implementing nlptool.tasks.base.Task, for instance a
    subclass of a built-in task); built as Class(task config, **task.params)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a _target_ task."""
    data_dir: str | None = None
    """Folder the split files are read from (they may also be absolute paths)."""
    train_file: str | None = None
    """Training file (.csv, .tsv, .jsonl, .json, .parquet; .gz too)."""
    valid_file: str | None = None
    """Validation file: best-checkpoint selection and `eval split=valid`."""
    test_file: str | None = None
    """Test file, for `eval split=test`."""
    header: bool = True
    """CSV/TSV files start with a header row; with false, columns are 0-based indices."""
    text_column: Any = "text"
    """Column of the text (a name, or a 0-based index)."""
    text_pair_column: Any = None
    """pair_classification and regression: column of the second text (segment B)."""
    label_column: Any = "label"
    """Column of the label (classification) or score (regression)."""
    labels: list[str] | None = None
    """The label set, in order; null: the sorted labels seen in the training file."""
    positive_label: str | None = None
    """pair_classification: the label whose F1 is reported (default: the second label)."""
    max_seq_len: int = 128
    """Tokens per example (longer inputs are truncated; QA contexts are split with a stride)."""
    early_stopping_patience: int = 0
    """Stop after this many validations without improvement of the main metric (0: never)."""
    token_column: int = 0
    """ner: the column of the word in CoNLL files (0-based, whitespace-separated)."""
    tag_column: int = -1
    """ner: the column of the tag in CoNLL files (-1: the last one)."""
    tag_scheme: str = "auto"
    """ner: auto (detected from the tags), IOB2 (BIO), IOBES or BMES."""
    train_articles: int | None = None
    """qa: a single SQuAD file split by article: the first N articles train, the rest evaluate."""
    doc_stride: int = 128
    """qa: tokens of overlap between the windows of a long context."""
    max_answer_len: int = 30
    """qa: the longest answer span, in tokens."""
    n_best: int = 20
    """qa: start and end candidates considered when decoding a span."""
    source_file: str | None = None
    """translation (line-aligned files): the training source file; valid/test by suffix."""
    target_file: str | None = None
    """translation: the training target file."""
    source_column: str | None = None
    """translation (record files): the source column."""
    target_column: str | None = None
    """translation (record files): the target column."""
    prompt_column: str | None = None
    """lm: the prompt of each record (with task.response_column: the loss is on the response)."""
    response_column: str | None = None
    """lm: the response the model learns to give to the prompt."""
    source_lang: str = "en"
    target_lang: str = "de"
    label_smoothing: float = 0.1
    """translation: label smoothing of the teacher-forced cross-entropy."""
    beam_size: int = 4
    """translation: beam size at evaluation (1: greedy)."""
    length_penalty: float = 0.6
    """translation: exponent alpha of the length normalisation log P / len**alpha."""
    max_decode_len: int = 128
    """translation: the longest output, in tokens."""

    def validate(self) -> None:
        check(
            self.kind in TASK_KINDS or self._target_ is not None,
            f"task.kind={self.kind!r}: expected one of {TASK_KINDS} (or task._target_)",
        )
        check(
            self.tag_scheme in ("auto", "IOB2", "IOBES", "BMES"),
            f"task.tag_scheme={self.tag_scheme!r}: expected auto, IOB2, IOBES or BMES",
        )
        check(0 <= self.label_smoothing < 1, "task.label_smoothing must be in [0, 1)")
        if self.kind == "ner":
            check(
                self.token_column != self.tag_column,
                f"task.token_column and task.tag_column are both {self.tag_column}",
            )
        check(self.beam_size >= 1, "task.beam_size must be >= 1")
        check(self.n_best >= 1, f"task.n_best={self.n_best}: must be >= 1")
        check(
            self.doc_stride >= 1 and self.max_answer_len >= 1,
            "task.doc_stride and task.max_answer_len must be >= 1",
        )
        check(self.max_seq_len >= 8, f"task.max_seq_len={self.max_seq_len}: must be at least 8")
        check(self.early_stopping_patience >= 0, "task.early_stopping_patience must be >= 0")
        if self.kind == "pair_classification":
            check(
                self.text_pair_column is not None,
                f"task.kind={self.kind} needs task.text_pair_column (the second text's column)",
            )
