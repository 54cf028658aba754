"""Tokenizers: train WordPiece or byte-level BPE with `tokenizers`, or load a saved one.

Whatever its origin, a tokenizer is saved as `tokenizer.json` in every checkpoint, and wrapped in
`TextTokenizer`, which knows the ids of the special tokens the objectives need (pad, cls, sep,
mask, eos) by looking their usual spellings up in the vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import tokenizers
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from nlptool.data.config import TokenizerConfig
from nlptool.errors import UserError

WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BPE_SPECIALS = ["<|endoftext|>", "<pad>", "<s>", "</s>", "<mask>"]

# Each role's usual spellings, in order of preference (BERT, RoBERTa, GPT-2).
ROLE_SPELLINGS = {
    "pad": ["[PAD]", "<pad>"],
    "unk": ["[UNK]", "<unk>"],
    "cls": ["[CLS]", "<s>", "<|endoftext|>"],
    "sep": ["[SEP]", "</s>", "<|endoftext|>"],
    "mask": ["[MASK]", "<mask>"],
    "eos": ["<|endoftext|>", "</s>", "[SEP]"],
}


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the ids of its special tokens."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.ids: dict[str, int | None] = {}
        for role, spellings in ROLE_SPELLINGS.items():
            self.ids[role] = next((vocab[s] for s in spellings if s in vocab), None)
        if self.ids["pad"] is None:  # GPT-2 style: pad with the end-of-text token
            self.ids["pad"] = self.ids["eos"] if self.ids["eos"] is not None else 0
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = sorted(i for i, tok in added.items() if tok.special)

    @property
    def pad_id(self) -> int:
        return self.ids["pad"]  # type: ignore[return-value]

    def require(self, role: str, needed_by: str) -> int:
        """The id of a special token, or a UserError saying which objective needs it."""
        token_id = self.ids.get(role)
        if token_id is None:
            raise UserError(
                f"{needed_by} needs a {role} token (one of {', '.join(ROLE_SPELLINGS[role])}), "
                "but the tokenizer has none; use tokenizer=wordpiece or tokenizer=bpe, or a "
                "pretrained tokenizer that defines it"
            )
        return token_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def encode_words(self, sentences: list[list[str]]) -> list[tuple[list[int], list[int]]]:
        """Pre-split words (NER): (token ids, index of the word each token comes from)."""
        out = []
        for enc in self.tokenizer.encode_batch(
            sentences, is_pretokenized=True, add_special_tokens=False
        ):
            out.append((enc.ids, [w if w is not None else -1 for w in enc.word_ids]))
        return out

    def encode_with_offsets(
        self, texts: list[str]
    ) -> list[tuple[list[int], list[tuple[int, int]]]]:
        """Token ids with the (start, end) character span of each token in its text (QA)."""
        return [
            (enc.ids, enc.offsets)
            for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False)
        ]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Load `tokenizer.json`, or the one inside a folder (a checkpoint or a model folder)."""
        path = Path(path).expanduser()
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            where = f"the folder {path}" if path.is_dir() else f"{path}"
            raise UserError(
                f"tokenizer.path: no tokenizer.json in {where}; give a tokenizer.json file, a "
                "folder that holds one, or an nlptool checkpoint"
            )
        try:
            return cls(Tokenizer.from_file(str(file)))
        except Exception as err:  # tokenizers raises plain Exceptions on bad JSON
            raise UserError(
                f"tokenizer.path: {file} is not a valid tokenizer.json ({err})"
            ) from None


def build_wordpiece(vocab_size: int, min_frequency: int, lowercase: bool):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=WORDPIECE_SPECIALS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    return tok, trainer


def build_bpe(vocab_size: int, min_frequency: int):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=BPE_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def _add_post_processor(tok: Tokenizer, kind: str) -> None:
    """So that `encode(text)` / `encode(a, b)` add the model's special tokens like HF does."""
    if kind == "wordpiece":
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)


def train_tokenizer(
    kind: str, texts: Iterator[str], vocab_size: int, min_frequency: int, lowercase: bool
) -> TextTokenizer:
    if kind == "wordpiece":
        tok, trainer = build_wordpiece(vocab_size, min_frequency, lowercase)
    elif kind == "bpe":
        tok, trainer = build_bpe(vocab_size, min_frequency)
    else:
        raise ValueError(f"cannot train a tokenizer of kind {kind!r}")
    tok.train_from_iterator(texts, trainer=trainer)
    _add_post_processor(tok, kind)
    return TextTokenizer(tok)


def tokenizer_cache_key(cfg: TokenizerConfig, corpus_fingerprint: str) -> str:
    """Everything that changes a trained tokenizer, hashed."""
    parts = {
        "kind": cfg.kind,
        "vocab_size": cfg.vocab_size,
        "min_frequency": cfg.min_frequency,
        "lowercase": cfg.lowercase if cfg.kind == "wordpiece" else None,
        "max_training_chars": cfg.max_training_chars,
        "corpus": corpus_fingerprint,
        "tokenizers": tokenizers.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def get_tokenizer(
    cfg: TokenizerConfig, corpus_fingerprint: str, texts: Iterator[str], cache_dir: Path
) -> tuple[TextTokenizer, bool]:
    """Load the pretrained tokenizer, or a trained one from the cache, or train and cache it.

    Returns the tokenizer and whether it came from the cache (or a file) rather than training.
    `texts` is only consumed when training is needed.
    """
    if cfg.kind == "pretrained":
        return TextTokenizer.load(cfg.path), True
    folder = cache_dir / "tokenizers" / tokenizer_cache_key(cfg, corpus_fingerprint)
    file = folder / "tokenizer.json"
    if file.is_file():
        return TextTokenizer.load(file), True
    tokenizer = train_tokenizer(cfg.kind, texts, cfg.vocab_size, cfg.min_frequency, cfg.lowercase)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    tokenizer.save(Path(tmp))
    os.replace(tmp, file)
    return tokenizer, False
