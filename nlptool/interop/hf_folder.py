"""Reading a Hugging Face model folder as `save_pretrained` writes it: `config.json`, the weights
(`model.safetensors` or `pytorch_model.bin`, sharded or not; pickles loaded with
`weights_only=True`) and the tokenizer (`tokenizer.json`, `vocab.txt`, or `vocab.json` +
`merges.txt`), or a model fetched from the hub (`hf:<name>`). No `transformers` needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.training import checkpoint as ckpt

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_folder(path: Path) -> bool:
    """A folder with a `config.json` and no nlptool manifest."""
    return (path / "config.json").is_file() and not (path / ckpt.MANIFEST).is_file()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read it ({err.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the folder's weights: safetensors preferred, then PyTorch pickles (loaded
    with `weights_only=True`); a sharded checkpoint through its index file."""
    from safetensors.torch import load_file

    def load(path: Path) -> dict[str, torch.Tensor]:
        try:
            if path.name.endswith(".safetensors"):
                return load_file(str(path))
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign files raise many kinds of errors
            raise UserError(f"{path}: cannot read the weights ({err})") from None

    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return load(folder / name)
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            if not shards:
                raise UserError(f"{index}: its weight_map names no files")
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(load(folder / shard))
            return tensors
    raise UserError(
        f"{folder}: no weights (expected {' or '.join(WEIGHT_FILES)}, or a sharded *.index.json)"
    )


def _token_text(value: Any) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(folder: Path) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            settings.update(read_json(folder / name))
    return settings


def hf_tokenizer(folder: Path) -> TextTokenizer:
    """The folder's tokenizer as a `tokenizers.Tokenizer`: `tokenizer.json` as it is, or built
    from `vocab.txt` (WordPiece) or `vocab.json` + `merges.txt` (GPT-2 byte-level BPE) with the
    settings of `tokenizer_config.json`, the way `transformers` converts them."""
    settings = _special_tokens(folder)
    if (folder / "tokenizer.json").is_file():
        return TextTokenizer.load(folder / "tokenizer.json")
    if (folder / "vocab.txt").is_file():
        tok = _wordpiece_from_vocab(folder / "vocab.txt", settings)
    elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        tok = _bpe_from_vocab(folder / "vocab.json", folder / "merges.txt", settings)
    else:
        raise UserError(
            f"{folder}: no tokenizer (expected tokenizer.json, vocab.txt for WordPiece, or "
            "vocab.json and merges.txt for GPT-2 BPE)"
        )
    return TextTokenizer(tok)


def _wordpiece_from_vocab(path: Path, settings: dict[str, Any]) -> Tokenizer:
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            token = line.rstrip("\n")
            if token and token not in vocab:
                vocab[token] = len(vocab)
    names = {
        role: _token_text(settings.get(f"{role}_token")) or default
        for role, default in (
            ("unk", "[UNK]"),
            ("sep", "[SEP]"),
            ("pad", "[PAD]"),
            ("cls", "[CLS]"),
            ("mask", "[MASK]"),
        )
    }
    missing = [name for name in (names["unk"], names["cls"], names["sep"]) if name not in vocab]
    if missing:
        raise UserError(
            f"{path}: the special tokens {', '.join(missing)} are not in the vocabulary"
        )
    lowercase = bool(settings.get("do_lower_case", True))
    strip_accents = settings.get("strip_accents")
    tok = Tokenizer(models.WordPiece(vocab, unk_token=names["unk"], max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(settings.get("tokenize_chinese_chars", True)),
        strip_accents=lowercase if strip_accents is None else bool(strip_accents),
        lowercase=lowercase,
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([name for name in names.values() if name in vocab])
    cls, sep = names["cls"], names["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return tok


def _bpe_from_vocab(vocab_path: Path, merges_path: Path, settings: dict[str, Any]) -> Tokenizer:
    vocab = read_json(vocab_path)
    merges = []
    with open(merges_path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise UserError(f"{merges_path}, line {number}: expected two tokens, got {line!r}")
            merges.append((parts[0], parts[1]))
    tok = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix=""))
    add_prefix_space = bool(settings.get("add_prefix_space", False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = {
        _token_text(settings.get(f"{role}_token")) or "<|endoftext|>"
        for role in ("bos", "eos", "unk")
    }
    pad = _token_text(settings.get("pad_token"))
    specials |= {pad} if pad else set()
    tok.add_special_tokens(sorted(token for token in specials if token in vocab))
    return tok


# ---------------------------------------------------------------------------------------------
# Import


def download_hf(name: str, key: str) -> Path:
    """`hf:<name>`: the hub's snapshot of the model (needs network, or the local HF cache)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency of datasets
        raise UserError(
            f"{key}=hf:{name} needs huggingface_hub (pip install huggingface_hub)"
        ) from None
    try:
        return Path(
            snapshot_download(
                name,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "pytorch_model*.bin",
                    "vocab.txt",
                    "merges.txt",
                ],
            )
        )
    except Exception as err:  # offline, unknown repository, gated model ...
        raise UserError(
            f"{key}=hf:{name}: could not fetch it from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no details'}); without network, download "
            "the model folder elsewhere and give its path"
        ) from None
