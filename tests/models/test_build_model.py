"""`build_model` dispatch and `count_parameters`."""

from __future__ import annotations

import pytest
import torch

from nlptool.errors import UserError
from nlptool.models import (
    BertForPreTraining,
    GPTForCausalLM,
    ModelConfig,
    build_model,
    count_parameters,
)
from nlptool.models.layers import sdpa_mask
from nlptool.models.seq2seq import Seq2SeqTransformer


def cfg(arch: str, **overrides) -> ModelConfig:
    fields = dict(arch=arch, num_layers=1, hidden_size=16, num_heads=2, vocab_size=20)
    return ModelConfig(**(fields | overrides))


def test_dispatch_on_arch() -> None:
    assert isinstance(build_model(cfg("bert")), BertForPreTraining)
    assert isinstance(build_model(cfg("gpt")), GPTForCausalLM)
    assert isinstance(build_model(cfg("seq2seq")), Seq2SeqTransformer)
    with pytest.raises(UserError, match="model.arch"):
        _bad_arch()


def _bad_arch() -> None:
    bad = cfg("bert")
    bad.arch = "rnn"  # past the dataclass check, as a hand-edited checkpoint config could be
    build_model(bad)


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_too_long_input_raises(arch: str) -> None:
    model = build_model(cfg(arch, max_seq_len=8))
    with pytest.raises(ValueError, match="model.max_seq_len=8"):
        model(torch.ones(1, 9, dtype=torch.long))


@pytest.mark.parametrize("arch", ["bert", "gpt"])
def test_vocab_size_required(arch: str) -> None:
    with pytest.raises(ValueError, match="model.vocab_size=0"):
        build_model(cfg(arch, vocab_size=0))


def test_count_parameters_counts_tied_weights_once() -> None:
    model = torch.nn.Linear(4, 4, bias=False)
    shared = torch.nn.Sequential(model, torch.nn.Linear(4, 4, bias=False))
    shared[1].weight = model.weight
    assert count_parameters(shared) == 16


def test_sdpa_mask_shapes_and_values() -> None:
    assert sdpa_mask(None, causal=True) is None
    padding = torch.tensor([[1, 1, 0], [1, 1, 1]])
    bidirectional = sdpa_mask(padding, causal=False)
    assert bidirectional.shape == (2, 1, 1, 3) and bidirectional.dtype == torch.bool
    assert bidirectional[0, 0, 0].tolist() == [True, True, False]
    causal = sdpa_mask(padding, causal=True)
    assert causal.shape == (2, 1, 3, 3)
    assert causal[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    assert causal[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
