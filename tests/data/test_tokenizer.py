"""Tokenizers: training, special-token roles, round trips, the training cache and loading."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from nlptool.data.config import TokenizerConfig
from nlptool.data.tokenizer import TextTokenizer, get_tokenizer, train_tokenizer
from nlptool.errors import UserError

WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "to", "red", "tree", "quickly"]


def corpus(lines: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "."
        for _ in range(lines)
    ]


@pytest.fixture(scope="module")
def wordpiece() -> TextTokenizer:
    return train_tokenizer("wordpiece", iter(corpus()), 200, 1, lowercase=True)


@pytest.fixture(scope="module")
def bpe() -> TextTokenizer:
    return train_tokenizer("bpe", iter(corpus()), 400, 1, lowercase=False)


def test_wordpiece_roles(wordpiece: TextTokenizer) -> None:
    vocab = wordpiece.tokenizer.get_vocab()
    assert wordpiece.pad_id == vocab["[PAD]"] == 0
    assert wordpiece.ids["cls"] == vocab["[CLS]"]
    assert wordpiece.ids["sep"] == vocab["[SEP]"]
    assert wordpiece.ids["mask"] == vocab["[MASK]"]
    assert wordpiece.ids["unk"] == vocab["[UNK]"]
    assert wordpiece.ids["eos"] == vocab["[SEP]"]  # BERT has no end-of-text token of its own
    assert wordpiece.special_ids == sorted(
        vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    )
    assert wordpiece.vocab_size == len(vocab) <= 200
    # lower-cased; the post-processor adds [CLS] ... [SEP] like BERT
    encoding = wordpiece.tokenizer.encode("The Cat")
    assert encoding.tokens == ["[CLS]", "the", "cat", "[SEP]"]
    assert wordpiece.encode_batch(["The Cat"]) == [encoding.ids[1:-1]]


def test_bpe_roles(bpe: TextTokenizer) -> None:
    vocab = bpe.tokenizer.get_vocab()
    assert bpe.ids["eos"] == vocab["<|endoftext|>"]
    assert bpe.pad_id == vocab["<pad>"]
    assert bpe.ids["mask"] == vocab["<mask>"]
    assert bpe.ids["cls"] == vocab["<s>"] and bpe.ids["sep"] == vocab["</s>"]
    assert len(bpe.special_ids) == 5
    assert bpe.vocab_size == len(vocab) <= 400


@pytest.mark.parametrize(
    "text",
    ["The cat sat on the mat.", "  two  spaces, tabs\tand\nnewlines!", "zebra? 1234 #@$%^&*()~"],
)
def test_bpe_round_trip(bpe: TextTokenizer, text: str) -> None:
    ids = bpe.encode_batch([text])[0]
    assert not set(ids) & set(bpe.special_ids)
    assert bpe.decode(ids) == text


def test_wordpiece_decodes_words(wordpiece: TextTokenizer) -> None:
    ids = wordpiece.encode_batch(["The red tree ran quickly."])[0]
    assert wordpiece.decode(ids) == "the red tree ran quickly."


class CountingTexts:
    """An iterator of training texts that records whether anyone read from it."""

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.consumed = iter(texts), 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        self.consumed += 1
        return next(self.texts)


def test_get_tokenizer_caches_trained_tokenizers(tmp_path: Path) -> None:
    cfg = TokenizerConfig(kind="bpe", vocab_size=290, min_frequency=1)
    first, cached = get_tokenizer(cfg, "corpus-a", iter(corpus()), tmp_path)
    assert not cached
    texts = CountingTexts(corpus())
    again, cached = get_tokenizer(cfg, "corpus-a", texts, tmp_path)
    assert cached and texts.consumed == 0
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert again.ids == first.ids

    # anything that changes the trained tokenizer is a new cache entry
    bigger = TokenizerConfig(kind="bpe", vocab_size=310, min_frequency=1)
    other, cached = get_tokenizer(bigger, "corpus-a", iter(corpus()), tmp_path)
    assert not cached and other.vocab_size > first.vocab_size
    _, cached = get_tokenizer(cfg, "corpus-b", iter(corpus()), tmp_path)
    assert not cached
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(entries) == 3
    assert all(sorted(p.name for p in entry.iterdir()) == ["tokenizer.json"] for entry in entries)


def test_pretrained_loads_a_file_or_a_folder(tmp_path: Path, wordpiece: TextTokenizer) -> None:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    wordpiece.save(folder / "tokenizer.json")
    for path in (folder / "tokenizer.json", folder):
        cfg = TokenizerConfig(kind="pretrained", path=str(path))
        loaded, cached = get_tokenizer(cfg, "unused", iter(()), tmp_path / "cache")
        assert cached
        assert loaded.ids == wordpiece.ids
        assert loaded.encode_batch(["the cat"]) == wordpiece.encode_batch(["the cat"])
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["missing.json", "empty_folder"])
def test_pretrained_missing_path_names_the_key(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty_folder").mkdir()
    cfg = TokenizerConfig(kind="pretrained", path=str(tmp_path / name))
    with pytest.raises(UserError, match=r"tokenizer\.path"):
        get_tokenizer(cfg, "unused", iter(()), tmp_path)


def test_pretrained_invalid_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match=r"tokenizer\.path"):
        TextTokenizer.load(tmp_path)


def test_require_names_the_missing_role() -> None:
    plain = TextTokenizer(Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, "<unk>")))
    assert plain.ids["unk"] == 2
    assert plain.pad_id == 0  # no pad nor end-of-text token: pad with id 0
    with pytest.raises(UserError, match="objective=mlm needs a mask token"):
        plain.require("mask", "objective=mlm")
    with pytest.raises(UserError, match="eos"):
        plain.require("eos", "objective=clm")
    assert plain.require("unk", "anything") == 2
