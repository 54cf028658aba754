"""From the config to examples: corpus or task files, the tokenizer (given, cached or trained),
the encoded splits, and the model config sized to the tokenizer."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from nlptool.cache import nlptool_cache_dir
from nlptool.console import console
from nlptool.data.corpus import load_corpus, tokenize_documents
from nlptool.data.pretraining import FirstExamples
from nlptool.data.readers import decoding, describe_replaced
from nlptool.data.tokenizer import TextTokenizer, get_tokenizer
from nlptool.errors import UserError
from nlptool.models.config import ModelConfig
from nlptool.objectives import Objective, build_objective
from nlptool.schema import FinetuneConfig, PretrainConfig
from nlptool.tasks import build_task


@dataclass
class PreparedData:
    tokenizer: TextTokenizer
    train: Any  # examples keyed by (epoch, index)
    valid: Any
    description: str
    seconds: float


def cache_dir_for(cfg: PretrainConfig) -> Path:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else nlptool_cache_dir()


@contextlib.contextmanager
def reading(cfg: PretrainConfig) -> Iterator[None]:
    """Read files under the data.encoding_errors policy; say afterwards what was replaced."""
    with decoding(cfg.data.encoding_errors) as replaced:
        yield
    if replaced:
        console.print(f"[yellow]{describe_replaced(replaced)}[/]")


def prepare_data(
    cfg: PretrainConfig, tokenizer: TextTokenizer | None = None, objective: Any = None
) -> PreparedData:
    """Corpus -> tokenizer (given, cached or trained) -> tokenized documents -> the objective's
    examples (`build_examples`; one objective instance makes the examples and the batches)."""
    start = time.perf_counter()
    datasets.disable_progress_bars()  # the console status lines say what is happening
    cache_dir = cache_dir_for(cfg)
    objective = objective if objective is not None else build_objective(cfg.objective)
    with console.status("Reading the corpus"), reading(cfg):
        corpus = load_corpus(cfg.data, cache_dir)
    if tokenizer is None:
        with console.status(f"Preparing the {cfg.tokenizer.kind} tokenizer"):
            tokenizer, cached = get_tokenizer(
                cfg.tokenizer,
                corpus.fingerprint,
                corpus.training_texts(cfg.tokenizer.max_training_chars),
                cache_dir,
            )
        if not cached and not cfg.trainer.quiet:
            console.print(
                f"Trained a {cfg.tokenizer.kind} tokenizer: {tokenizer.vocab_size:,} tokens"
            )
    with console.status("Tokenizing"):
        train_docs = tokenize_documents(corpus.train, tokenizer, cfg.data.num_proc)
        valid_docs = tokenize_documents(corpus.valid, tokenizer, cfg.data.num_proc)
    train = build_examples(cfg, objective, tokenizer, train_docs, valid=False)
    valid = build_examples(cfg, objective, tokenizer, valid_docs, valid=True)
    if len(train) == 0:
        raise UserError(
            f"The training data ({corpus.description}) are too small for one example of "
            f"data.max_seq_len={cfg.data.max_seq_len} tokens; add text or lower data.max_seq_len"
        )
    if len(valid) == 0:
        raise UserError(
            f"The validation data of {corpus.description} are too small for one example of "
            f"data.max_seq_len={cfg.data.max_seq_len} tokens; give more validation text "
            "(data.valid_files or a larger data.valid_fraction) or lower data.max_seq_len"
        )
    return PreparedData(tokenizer, train, valid, corpus.description, time.perf_counter() - start)


def build_examples(
    cfg: PretrainConfig,
    objective: Objective,
    tokenizer: TextTokenizer,
    docs: datasets.Dataset,
    valid: bool,
) -> Any:
    """The objective's examples of one split; validation capped at data.max_valid_examples."""
    examples = objective.build_examples(
        docs, tokenizer, cfg.data.max_seq_len, cfg.trainer.seed, valid
    )
    limit = cfg.data.max_valid_examples
    if valid and limit and len(examples) > limit:
        examples = FirstExamples(examples, limit)
    return examples


def model_config_for(cfg: PretrainConfig, tokenizer: TextTokenizer) -> ModelConfig:
    """The model config with its vocabulary and padding id from the tokenizer."""
    model_cfg = cfg.model
    if model_cfg.vocab_size == 0:
        multiple = model_cfg.vocab_multiple
        model_cfg.vocab_size = -(-tokenizer.vocab_size // multiple) * multiple
    elif model_cfg.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens; leave it at 0 to take the tokenizer's size"
        )
    model_cfg.pad_token_id = tokenizer.pad_id
    return model_cfg


def prepare_task(cfg: FinetuneConfig, tokenizer: TextTokenizer | None, splits: tuple[str, ...]):
    """Read the splits; the tokenizer given, or one trained on the task's training text (from
    scratch); the labels; the encoded splits. Returns (tokenizer, task, {split: examples})."""
    datasets.disable_progress_bars()
    task = build_task(cfg.task, cfg.model.arch)
    with console.status(f"Reading {cfg.task.name}"), reading(cfg):
        raw = {split: task.read(split) for split in splits}
    if tokenizer is None:
        texts = list(task.training_texts(raw["train"]))
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode("utf-8", "replace") + b"\n")
        with console.status(f"Training a {cfg.tokenizer.kind} tokenizer on {cfg.task.name}"):
            tokenizer, _ = get_tokenizer(
                cfg.tokenizer, f"task:{digest.hexdigest()}", iter(texts), cache_dir_for(cfg)
            )
    task.set_tokenizer(tokenizer)
    if "train" in raw:
        task.set_labels_from(raw["train"])
        cfg.task.labels = list(task.labels) or None
    with console.status("Encoding"):
        encoded = {split: task.encode(raw[split]) for split in splits}
    return tokenizer, task, encoded
