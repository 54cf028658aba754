"""Corpora from local files: reading, the held-out validation split, errors, tokenization."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from nlptool.data.config import DataConfig
from nlptool.data.corpus import load_corpus, tokenize_documents
from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError


def write_corpus(folder: Path) -> list[str]:
    """12 documents in a .txt file and 8 in a .jsonl file; returns the documents' texts."""
    folder.mkdir(parents=True, exist_ok=True)
    txt_docs = [f"Text doc {i} first line.\nText doc {i} second line." for i in range(12)]
    # blank lines separate documents; stray whitespace is stripped
    (folder / "a.txt").write_text("\n\n".join(f"  {doc}\n" for doc in txt_docs))
    json_docs = [f"Json doc {i}.\nIts second segment.\n\nAnd a third." for i in range(8)]
    with open(folder / "b.jsonl", "w") as f:
        for doc in json_docs:
            f.write(json.dumps({"text": doc, "id": doc[:10]}) + "\n")
    json_texts = [doc.replace("\n\n", "\n") for doc in json_docs]  # blank segments dropped
    return txt_docs + json_texts


def text_config(tmp_path: Path, **fields) -> DataConfig:
    fields.setdefault(
        "train_files", [str(tmp_path / "data" / "*.txt"), str(tmp_path / "data" / "*.jsonl")]
    )
    return DataConfig(source="text", **fields)


def test_held_out_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "data")
    cfg = text_config(tmp_path, valid_fraction=0.25)
    corpus = load_corpus(cfg, tmp_path / "cache")
    train, valid = list(corpus.train["text"]), list(corpus.valid["text"])
    assert len(valid) == 5 and len(train) == 15
    assert not set(train) & set(valid)
    assert sorted(train + valid) == sorted(docs)
    # a second load (from the datasets cache this time) holds out the same documents
    again = load_corpus(cfg, tmp_path / "cache")
    assert list(again.valid["text"]) == valid and list(again.train["text"]) == train
    assert again.fingerprint == corpus.fingerprint
    # a fresh cache too: the split does not depend on what was cached
    fresh = load_corpus(cfg, tmp_path / "other_cache")
    assert list(fresh.valid["text"]) == valid


def test_valid_files_are_used_when_given(tmp_path: Path) -> None:
    docs = write_corpus(tmp_path / "data")
    (tmp_path / "valid.txt").write_text("Held out one.\nSecond line.\n\nHeld out two.\n")
    cfg = text_config(tmp_path, valid_files=str(tmp_path / "valid.txt"), valid_fraction=0.25)
    corpus = load_corpus(cfg, tmp_path / "cache")
    assert sorted(corpus.train["text"]) == sorted(docs)  # nothing held out of the training data
    assert list(corpus.valid["text"]) == ["Held out one.\nSecond line.", "Held out two."]


def test_glob_matching_nothing_names_the_key(tmp_path: Path) -> None:
    cfg = DataConfig(source="text", train_files=str(tmp_path / "nothing" / "*.txt"))
    with pytest.raises(UserError, match=r"data\.train_files"):
        load_corpus(cfg, tmp_path / "cache")


def test_no_validation_data_names_the_keys(tmp_path: Path) -> None:
    write_corpus(tmp_path / "data")
    with pytest.raises(UserError, match=r"data\.valid_files.*data\.valid_fraction"):
        load_corpus(text_config(tmp_path, valid_fraction=0.0), tmp_path / "cache")


def test_holding_out_every_document_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("One.\n\nTwo.\n\nThree.\n")
    cfg = DataConfig(source="text", train_files=str(tmp_path / "a.txt"), valid_fraction=0.9)
    with pytest.raises(UserError, match=r"data\.valid_fraction"):
        load_corpus(cfg, tmp_path / "cache")


def word_tokenizer() -> TextTokenizer:
    """A word-level tokenizer over a fixed vocabulary: one id per word, easy to predict."""
    words = ["[PAD]", "[UNK]", "one", "two", "three", "four", "five"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return TextTokenizer(tok)


def test_tokenize_documents_keeps_segments() -> None:
    texts = ["one two\nthree\n\nfour five five", "   \n  ", "five\n \none one"]
    ds = datasets.Dataset.from_dict({"text": texts})
    out = tokenize_documents(ds, word_tokenizer(), num_proc=1)
    assert list(out["segments"]) == [
        [[2, 3], [4], [5, 6, 6]],
        [[6], [2, 2]],
    ]  # the blank document is gone
    assert list(out["num_tokens"]) == [6, 3]
