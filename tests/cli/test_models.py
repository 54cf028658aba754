"""`nlptool models`: every preset, with parameter counts that match the published models."""

from __future__ import annotations

import pytest
import torch

from nlptool.cli.models import preset_rows
from tests.test_cli import nlptool


def test_lists_every_preset(tmp_path):
    out = nlptool("models", cwd=tmp_path).stdout
    names = [line.split()[0] for line in out.splitlines()[4:] if line.strip()]
    assert {"bert-tiny", "bert-base", "bert-large", "gpt-tiny", "gpt2", "transformer-base"} <= set(
        names
    )
    assert "124.4M" in out  # gpt2
    assert "models" in nlptool("--help", cwd=tmp_path).stdout


@pytest.mark.parametrize(
    ("preset", "hf_class", "hf_kwargs"),
    [
        ("bert-base", "BertForPreTraining", {}),
        ("bert-large", "BertForPreTraining", {"num_hidden_layers": 24, "hidden_size": 1024,
                                              "num_attention_heads": 16, "intermediate_size": 4096}),
        ("gpt2", "GPT2LMHeadModel", {}),
        ("gpt2-medium", "GPT2LMHeadModel", {"n_layer": 24, "n_embd": 1024, "n_head": 16}),
    ],
)  # fmt: skip
def test_counts_match_hugging_face(preset, hf_class, hf_kwargs):
    transformers = pytest.importorskip("transformers")
    config_class = transformers.BertConfig if preset.startswith("bert") else transformers.GPT2Config
    with torch.device("meta"):
        model = getattr(transformers, hf_class)(config_class(**hf_kwargs))
    expected = sum(p.numel() for p in model.parameters())
    row = next(r for r in preset_rows() if r["name"] == preset)
    assert row["parameters"] == expected
