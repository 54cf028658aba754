"""`nlptool models`: the model presets with their shapes and parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nlptool.cli.store import config_dir
from nlptool.models import build_model, count_parameters
from nlptool.models.config import ModelConfig

# Vocabulary sizes the presets are counted at: the originals' (BERT's WordPiece, GPT-2's BPE, the
# shared BPE of "Attention Is All You Need"). nlptool takes the vocabulary from the tokenizer.
PRESET_VOCAB = {"bert": 30522, "gpt": 50257, "seq2seq": 37000}


def preset_rows() -> list[dict[str, Any]]:
    """Each preset of the model group: its shape and parameter count (at PRESET_VOCAB)."""
    rows = []
    for path in sorted(Path(config_dir(), "model").glob("*.yaml")):
        merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
        cfg: ModelConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
        cfg.vocab_size = PRESET_VOCAB[cfg.arch]
        with torch.device("meta"):  # shapes only: no memory for the weights
            parameters = count_parameters(build_model(cfg))
        layers = str(cfg.num_layers)
        if cfg.arch == "seq2seq":
            layers += f"+{cfg.num_decoder_layers or cfg.num_layers}"
        rows.append(
            {
                "name": path.stem,
                "arch": cfg.arch,
                "layers": layers,
                "hidden": cfg.hidden_size,
                "heads": cfg.num_heads,
                "ffn": cfg.ffn_size,
                "positions": cfg.max_seq_len,
                "parameters": parameters,
            }
        )
    return sorted(rows, key=lambda r: (r["arch"], r["parameters"]))


def list_models(args: list[str] | None = None) -> None:
    """`nlptool models`: the presets as an aligned plain-text table (fits 80 columns)."""
    columns = ("name", "arch", "layers", "hidden", "heads", "ffn", "positions", "params")
    rows = [
        [*(str(row[k]) for k in columns[:-1]), f"{row['parameters'] / 1e6:,.1f}M"]
        for row in preset_rows()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        )

    print("Model presets (model=<name>)\n")
    print(line(list(columns)))
    print(line(["-" * w for w in widths]))
    for cells in rows:
        print(line(cells))
    vocab = ", ".join(f"{arch} {size:,}" for arch, size in PRESET_VOCAB.items())
    print(
        f"\nParameters at the original vocabulary sizes ({vocab}).\n"
        "A run takes its vocabulary from the tokenizer (tokenizer.vocab_size), which sizes the\n"
        "embedding and output layers."
    )
