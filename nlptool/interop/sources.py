"""`init=` / `checkpoint=` take either format: an nlptool checkpoint as it is, a Hugging Face
folder or `hf:<name>` imported into the cache once per content."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nlptool.console import console
from nlptool.interop.convert import import_hf
from nlptool.interop.hf_folder import download_hf, is_hf_folder
from nlptool.training import checkpoint as ckpt


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def resolve_model_source(value: str, key: str, cache_dir: Path) -> Path:
    """An nlptool checkpoint for `init=` or `checkpoint=`: an nlptool checkpoint (or run folder)
    as it is; a Hugging Face folder or `hf:<name>` imported into the cache (once per content)."""
    text = str(value)
    if text.startswith("hf:"):
        folder = download_hf(text[3:], key)
    else:
        folder = Path(text).expanduser()
        if not is_hf_folder(folder):
            return ckpt.resolve_checkpoint(text, key)
    target = cache_dir / "hf-imports" / _fingerprint(folder)
    if not ckpt.is_complete(target):
        report = import_hf(folder, target)
        fresh = f"; new, untrained: {', '.join(report.fresh)}" if report.fresh else ""
        console.print(f"Imported {folder} ({report.architecture}) -> {target}{fresh}")
    return target.resolve()
