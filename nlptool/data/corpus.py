"""From the `data` config to tokenized documents: read, split, tokenize (cached by `datasets`).

A document is one row with a `text` column whose lines are its segments (sentences, for the
BERT convention). Tokenization keeps the segments apart (`segments`: a list of token-id lists),
so NSP can pair them and packing can join them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets

from nlptool.data.builtin import builtin_corpus
from nlptool.data.config import DataConfig
from nlptool.data.readers import (
    encoding_errors,
    files_fingerprint,
    iter_documents,
    resolve_files,
)
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError

# Held-out validation documents are chosen with a fixed seed, so runs with different training
# seeds are validated on the same text.
SPLIT_SEED = 0


@dataclass
class Corpus:
    train: datasets.Dataset  # column "text": one document per row, one segment per line
    valid: datasets.Dataset
    fingerprint: str  # identifies the raw text, for cache keys
    description: str

    def training_texts(self, max_chars: int) -> Iterator[str]:
        """Documents of the training split, up to about max_chars characters (tokenizer training)."""
        seen = 0
        for start in range(0, len(self.train), 1000):
            for text in self.train[start : start + 1000]["text"]:
                yield text
                seen += len(text)
                if seen >= max_chars:
                    return


def _documents_from_files(paths: list[str], text_column: str) -> Iterator[dict]:
    for path in paths:
        for segments in iter_documents(Path(path), text_column):
            yield {"text": "\n".join(segments)}


def _from_files(paths: list[Path], text_column: str, cache_dir: Path) -> datasets.Dataset:
    fingerprint = files_fingerprint(paths)
    if next(_documents_from_files([str(p) for p in paths], text_column), None) is None:
        # (datasets cannot build a data set from a generator that yields nothing)
        names = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
        raise UserError(f"No text found in {names}: the files are empty or hold only blank lines")
    features = datasets.Features({"text": datasets.Value("string")})
    try:
        ds = datasets.Dataset.from_generator(
            _documents_from_files,
            gen_kwargs={"paths": [str(p) for p in paths], "text_column": text_column},
            features=features,
            cache_dir=str(cache_dir / "datasets"),
            # The files' sizes and mtimes are part of the cache key, so edited files are re-read.
            fingerprint=hashlib.sha256(
                f"{fingerprint}:{text_column}:{encoding_errors()}".encode()
            ).hexdigest()[:16],
        )
    except datasets.exceptions.DatasetGenerationError as err:
        # A reader's UserError (bad line, missing column...) arrives wrapped: hand it on as is.
        cause = err.__cause__ or err.__context__
        if isinstance(cause, UserError):
            raise cause from None
        raise
    return ds


def _hold_out(ds: datasets.Dataset, fraction: float, key: str) -> tuple:
    if fraction <= 0:
        raise UserError(
            f"No validation data: give {key} or set data.valid_fraction above 0 "
            "(a fraction of the training documents is then held out)"
        )
    if len(ds) < 2:
        raise UserError(
            "The training data holds a single document, too little to hold out a validation "
            f"fraction; give {key}"
        )
    n_valid = max(1, round(len(ds) * fraction))
    if n_valid >= len(ds):
        raise UserError(
            f"data.valid_fraction={fraction} would hold out all {len(ds)} training documents; "
            f"lower it or give {key}"
        )
    split = ds.train_test_split(test_size=n_valid, seed=SPLIT_SEED, shuffle=True)
    return split["train"], split["test"]


def load_corpus(cfg: DataConfig, cache_dir: Path) -> Corpus:
    """Read the documents the `data` config names, with a validation split."""
    if cfg.source in ("builtin", "text"):
        if cfg.source == "builtin":
            train_paths = [builtin_corpus(cache_dir)]
            valid_paths: list[Path] = []
            description = f"builtin corpus ({train_paths[0].name})"
        else:
            train_paths = resolve_files(cfg.train_files, "data.train_files")
            valid_paths = (
                resolve_files(cfg.valid_files, "data.valid_files") if cfg.valid_files else []
            )
            description = ", ".join(str(p) for p in train_paths[:3])
            if len(train_paths) > 3:
                description += f" (+{len(train_paths) - 3} files)"
        train = _from_files(train_paths, cfg.text_column, cache_dir)
        if valid_paths:
            valid = _from_files(valid_paths, cfg.text_column, cache_dir)
        else:
            train, valid = _hold_out(train, cfg.valid_fraction, "data.valid_files")
        fingerprint = files_fingerprint(train_paths + valid_paths)
        return Corpus(train, valid, fingerprint, description)
    return _load_hub(cfg, cache_dir)


def _load_hub(cfg: DataConfig, cache_dir: Path) -> Corpus:
    """data=hf: a real `datasets.load_dataset` call by name (hub or local path)."""
    kwargs = {"cache_dir": os.environ.get("HF_DATASETS_CACHE")}
    try:
        train = datasets.load_dataset(cfg.name, cfg.config, split=cfg.train_split, **kwargs)
        valid = (
            datasets.load_dataset(cfg.name, cfg.config, split=cfg.valid_split, **kwargs)
            if cfg.valid_split
            else None
        )
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise UserError(
            f"data=hf could not load data.name={cfg.name!r} (config {cfg.config!r}, split "
            f"{cfg.train_split!r}): {err}. Check the name, config and split, and that this "
            "machine can reach the Hugging Face hub (or that data.name is a local path)"
        ) from None
    for split_name, ds in (("train", train), ("valid", valid)):
        if ds is not None and cfg.text_column not in ds.column_names:
            raise UserError(
                f"data.text_column={cfg.text_column!r} is not a column of {cfg.name} "
                f"({split_name}); its columns are {', '.join(ds.column_names)}"
            )

    def keep_text(ds: datasets.Dataset) -> datasets.Dataset:
        ds = ds.select_columns([cfg.text_column])
        if cfg.text_column != "text":
            ds = ds.rename_column(cfg.text_column, "text")
        return ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)

    train = keep_text(train)
    if valid is None:
        train, valid = _hold_out(train, cfg.valid_fraction, "data.valid_split")
    else:
        valid = keep_text(valid)
    fingerprint = f"hf:{cfg.name}:{cfg.config}:{train._fingerprint}"
    return Corpus(train, valid, fingerprint, f"{cfg.name} ({cfg.config or 'default'})")


class _Tokenize:
    """A picklable `datasets.map` function: documents -> lists of token-id segments."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: dict) -> dict:
        lines_per_doc = [[s for s in text.split("\n") if s.strip()] for text in batch["text"]]
        flat = [s for lines in lines_per_doc for s in lines]
        ids = self.tokenizer.encode_batch(flat) if flat else []
        segments, start = [], 0
        for lines in lines_per_doc:
            doc = [seg for seg in ids[start : start + len(lines)] if seg]
            segments.append(doc)
            start += len(lines)
        return {"segments": segments, "num_tokens": [sum(len(s) for s in d) for d in segments]}


def tokenize_documents(
    ds: datasets.Dataset, tokenizer: TextTokenizer, num_proc: int | None
) -> datasets.Dataset:
    """Tokenize every document's segments, batched and cached by `datasets`."""
    procs = num_proc or min(os.cpu_count() or 1, 8)
    if len(ds) < 20_000:  # spawning workers costs more than it saves on small corpora
        procs = 1
    if procs > 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    out = ds.map(
        _Tokenize(tokenizer),
        batched=True,
        batch_size=1000,
        num_proc=procs if procs > 1 else None,
        remove_columns=ds.column_names,
        desc="Tokenizing",
    )
    return out.filter(lambda batch: [n > 0 for n in batch["num_tokens"]], batched=True)
