"""Typed configs of the `data` group (where pretraining text comes from) and the `tokenizer` group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nlptool.errors import check

DATA_SOURCES = ("builtin", "text", "hf")
TOKENIZER_KINDS = ("wordpiece", "bpe", "pretrained")


@dataclass
class DataConfig:
    """Where the pretraining text comes from and how it is cut into examples."""

    source: str = "builtin"
    """builtin (the embedded offline corpus), text (local files), hf (a Hugging Face data set)."""
    train_files: Any = None
    """data=text: paths or globs (a list, or one string; commas separate several)."""
    valid_files: Any = None
    """data=text: validation files; when unset a fraction of the training documents is held out."""
    text_column: str = "text"
    """Column holding the text in .jsonl/.json/.csv/.tsv/.parquet files and HF data sets."""
    name: str | None = None
    """data=hf: the data set's name on the hub (or a local path load_dataset accepts)."""
    config: str | None = None
    """data=hf: the data set's configuration (e.g. wikitext-103-raw-v1)."""
    train_split: str = "train"
    """data=hf: the split to train on."""
    valid_split: str | None = "validation"
    """data=hf: the validation split (null: hold out valid_fraction of the training split)."""
    max_seq_len: int = 128
    """Tokens per training example (packed block or sentence pair, special tokens included)."""
    valid_fraction: float = 0.05
    """Fraction of training documents held out for validation when no validation files are given."""
    max_valid_examples: int = 512
    """Cap on validation examples, so periodic evaluation stays cheap (0: no cap)."""
    num_proc: int | None = None
    """Processes for tokenization (datasets.map); null: one per CPU core, at most 8."""
    cache_dir: str | None = None
    """Where tokenized data and trained tokenizers are cached (default: $NLPTOOL_CACHE or ~/.cache/nlptool)."""
    encoding_errors: str = "strict"
    """Bytes that are not UTF-8 in any file read (corpus or task): strict (an error naming the
    file and line) or replace (U+FFFD, with a count of the lines affected)."""

    def validate(self) -> None:
        check(
            self.source in DATA_SOURCES,
            f"data.source={self.source!r}: expected one of {DATA_SOURCES}",
        )
        check(self.max_seq_len >= 8, f"data.max_seq_len={self.max_seq_len}: must be at least 8")
        check(
            0.0 <= self.valid_fraction < 1.0,
            f"data.valid_fraction={self.valid_fraction}: must be in [0, 1)",
        )
        check(self.max_valid_examples >= 0, "data.max_valid_examples must be >= 0")
        if self.source == "text":
            check(
                bool(self.train_files),
                "data=text needs data.train_files (paths or globs), e.g. "
                "data.train_files='corpus/*.txt.gz'",
            )
        if self.source == "hf":
            check(bool(self.name), "data=hf needs data.name, e.g. data.name=wikitext")
        if self.num_proc is not None:
            check(self.num_proc >= 1, f"data.num_proc={self.num_proc}: must be >= 1")
        check(
            self.encoding_errors in ("strict", "replace"),
            f"data.encoding_errors={self.encoding_errors!r}: expected strict or replace",
        )


@dataclass
class TokenizerConfig:
    """How text becomes token ids."""

    kind: str = "wordpiece"
    """wordpiece or bpe (trained on the corpus and cached), or pretrained (loaded from path)."""
    vocab_size: int = 8192
    """Vocabulary size of a trained tokenizer."""
    min_frequency: int = 2
    """A pair must occur this often to be merged when training."""
    lowercase: bool = True
    """wordpiece: lower-case and strip accents (uncased BERT)."""
    path: str | None = None
    """pretrained: a tokenizer.json, a folder holding one, or an nlptool checkpoint."""
    max_training_chars: int = 50_000_000
    """Train the tokenizer on at most this much text from the start of the corpus."""

    def validate(self) -> None:
        check(
            self.kind in TOKENIZER_KINDS,
            f"tokenizer.kind={self.kind!r}: expected one of {TOKENIZER_KINDS}",
        )
        if self.kind == "pretrained":
            check(
                bool(self.path),
                "tokenizer=pretrained needs tokenizer.path=<tokenizer.json or folder>",
            )
        else:
            check(
                self.vocab_size >= 300,
                f"tokenizer.vocab_size={self.vocab_size}: must be at least 300 (bytes and special tokens)",
            )
