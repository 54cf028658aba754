"""BERT: shapes, padding invariance, weight tying, initialisation and bert-base's size."""

from __future__ import annotations

import pytest
import torch

from nlptool.models import BertForPreTraining, ModelConfig, count_parameters

VOCAB = 50


def tiny(**overrides) -> ModelConfig:
    fields = dict(arch="bert", num_layers=2, hidden_size=32, num_heads=4, max_seq_len=16)
    fields.update(vocab_size=VOCAB, dropout=0.1, attention_dropout=0.1)
    return ModelConfig(**(fields | overrides))


@pytest.fixture
def model() -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(tiny()).eval()


def test_shapes(model: BertForPreTraining) -> None:
    ids = torch.randint(1, VOCAB, (3, 7))
    hidden = model(ids)
    assert hidden.shape == (3, 7, 32)
    assert model.pool(hidden).shape == (3, 32)
    assert model.nsp_logits(model.pool(hidden)).shape == (3, 2)
    assert model.mlm_logits(hidden).shape == (3, 7, VOCAB)
    # the MLM objective gathers the masked positions first: (N, C) -> (N, V)
    masked = hidden[ids % 2 == 0]
    torch.testing.assert_close(model.mlm_logits(masked), model.mlm_logits(hidden)[ids % 2 == 0])


def test_padding_does_not_change_real_positions(model: BertForPreTraining) -> None:
    ids = torch.randint(1, VOCAB, (2, 6))
    types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    plain = model(ids, token_type_ids=types)
    padded_ids = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded_types = torch.cat([types, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1)
    padded = model(padded_ids, attention_mask=mask, token_type_ids=padded_types)
    torch.testing.assert_close(padded[:, :6], plain, atol=1e-5, rtol=0)


def test_all_padding_row_is_finite(model: BertForPreTraining) -> None:
    ids = torch.randint(1, VOCAB, (2, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    assert torch.isfinite(model(ids, attention_mask=mask)).all()


def test_token_type_ids_default_to_zero(model: BertForPreTraining) -> None:
    ids = torch.randint(1, VOCAB, (2, 5))
    torch.testing.assert_close(model(ids), model(ids, token_type_ids=torch.zeros_like(ids)))


def test_decoder_is_tied_to_word_embeddings(model: BertForPreTraining) -> None:
    assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight
    untied = BertForPreTraining(tiny(tie_word_embeddings=False))
    assert untied.mlm_head.decoder.weight is not untied.bert.embeddings.word_embeddings.weight
    assert count_parameters(untied) == count_parameters(model) + VOCAB * 32


def test_init_matches_hf_conventions(model: BertForPreTraining) -> None:
    words = model.bert.embeddings.word_embeddings.weight
    assert torch.count_nonzero(words[0]) == 0  # pad_token_id row, also after tying
    assert torch.count_nonzero(words[1]) == 32
    layer = model.bert.encoder[0]
    assert torch.all(layer.attn_norm.weight == 1) and torch.all(layer.attn_norm.bias == 0)
    assert torch.all(layer.attn.qkv.bias == 0) and torch.all(model.mlm_head.bias == 0)


def test_backward_reaches_every_parameter() -> None:
    model = BertForPreTraining(tiny()).train()
    ids = torch.randint(1, VOCAB, (2, 5))
    hidden = model(ids, token_type_ids=torch.ones_like(ids))
    loss = model.mlm_logits(hidden).sum() + model.nsp_logits(model.pool(hidden)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bert_base_parameter_count() -> None:
    cfg = ModelConfig(arch="bert", num_layers=12, hidden_size=768, num_heads=12, vocab_size=30522)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = BertForPreTraining(cfg)
    # HF BertForPreTraining(BertConfig()) and BertModel(BertConfig()); checked against HF below
    assert count_parameters(model) == 110_106_428
    assert count_parameters(model.bert) == 109_482_240

    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        hf_pretraining = transformers.BertForPreTraining(transformers.BertConfig())
        hf_backbone = transformers.BertModel(transformers.BertConfig())
    assert count_parameters(hf_pretraining) == count_parameters(model)
    assert count_parameters(hf_backbone) == count_parameters(model.bert)
