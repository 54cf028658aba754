"""GPT-2: shapes, causality, padding invariance, weight tying, init and gpt2's size."""

from __future__ import annotations

import math

import pytest
import torch

from nlptool.models import GPTForCausalLM, ModelConfig, count_parameters

VOCAB = 50


def tiny(**overrides) -> ModelConfig:
    fields = dict(arch="gpt", num_layers=2, hidden_size=32, num_heads=4, max_seq_len=16)
    fields.update(vocab_size=VOCAB, activation="gelu_tanh", layer_norm_eps=1e-5)
    return ModelConfig(**(fields | overrides))


@pytest.fixture
def model() -> GPTForCausalLM:
    torch.manual_seed(0)
    return GPTForCausalLM(tiny()).eval()


def test_shapes(model: GPTForCausalLM) -> None:
    hidden = model(torch.randint(0, VOCAB, (3, 7)))
    assert hidden.shape == (3, 7, 32)
    assert model.lm_logits(hidden).shape == (3, 7, VOCAB)
    assert model.lm_logits(hidden.reshape(-1, 32)).shape == (21, VOCAB)


def test_causal(model: GPTForCausalLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 8))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    before, after = model(ids), model(changed)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 5:], before[:, 5:])


def test_causal_with_padding_mask(model: GPTForCausalLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 8))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % VOCAB
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 7] = 0
    before, after = model(ids, attention_mask=mask), model(changed, attention_mask=mask)
    torch.testing.assert_close(after[:, :5], before[:, :5], atol=1e-6, rtol=0)


def test_padding_does_not_change_real_positions(model: GPTForCausalLM) -> None:
    ids = torch.randint(0, VOCAB, (2, 6))
    plain = model(ids)
    padded_ids = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3] * 2)
    padded = model(padded_ids, attention_mask=mask)
    torch.testing.assert_close(padded[:, :6], plain, atol=1e-5, rtol=0)
    assert torch.isfinite(model(padded_ids, attention_mask=torch.zeros_like(mask))).all()


def test_lm_head_is_tied(model: GPTForCausalLM) -> None:
    assert model.lm_head.weight is model.token_embeddings.weight
    assert model.lm_head.bias is None
    untied = GPTForCausalLM(tiny(tie_word_embeddings=False))
    assert untied.lm_head.weight is not untied.token_embeddings.weight


def test_residual_projections_use_scaled_init() -> None:
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny(num_layers=8, hidden_size=128, num_heads=4))
    residual_std = 0.02 / math.sqrt(2 * 8)
    assert model.layers[0].attn.proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert model.layers[0].mlp.proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
    assert model.layers[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_gpt2_parameter_count() -> None:
    cfg = tiny(num_layers=12, hidden_size=768, num_heads=12, vocab_size=50257, max_seq_len=1024)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = GPTForCausalLM(cfg)
    assert count_parameters(model) == 124_439_808  # HF GPT2LMHeadModel(GPT2Config())

    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert count_parameters(hf_model) == count_parameters(model)
