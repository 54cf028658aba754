"""HF <-> nlptool mapping: our models give Hugging Face's logits with Hugging Face's weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from nlptool.interop.hf import (
    bert_from_hf,
    bert_to_hf,
    config_from_hf_bert,
    config_from_hf_gpt2,
    gpt2_from_hf,
    gpt2_to_hf,
)
from nlptool.models import BertForPreTraining, GPTForCausalLM

transformers = pytest.importorskip("transformers")

VOCAB = 100


def randomize(model: torch.nn.Module) -> None:
    """Non-trivial values everywhere (HF's init leaves biases 0, LayerNorm 1/0: a swap of those
    would go unnoticed)."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)


def batch(vocab_size: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B=3, T=9) with pad id 0, their attention mask and two segments."""
    ids = torch.randint(1, vocab_size, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    return ids, mask, types


def assert_close_where(ours: torch.Tensor, theirs: torch.Tensor, where: torch.Tensor) -> None:
    torch.testing.assert_close(ours[where], theirs[where], atol=1e-5, rtol=1e-5)


@pytest.fixture
def hf_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    model = transformers.BertForPreTraining(config).eval()
    randomize(model)
    return model


@pytest.fixture
def hf_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    randomize(model)
    return model


def compare_bert(ours: BertForPreTraining, hf_model) -> None:
    ids, mask, types = batch()
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
        hidden = ours(ids, attention_mask=mask, token_type_ids=types)
        mlm, nsp = ours.mlm_logits(hidden), ours.nsp_logits(ours.pool(hidden))
    assert_close_where(mlm, expected.prediction_logits, mask.bool())
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, atol=1e-5, rtol=1e-5)


def compare_gpt2(ours: GPTForCausalLM, hf_model) -> None:
    ids, mask, _ = batch()
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask).logits
        logits = ours.lm_logits(ours(ids, attention_mask=mask))
    assert_close_where(logits, expected, mask.bool())


@dataclass(frozen=True)
class Arch:
    """What differs between the two architectures in the tests that apply to both."""

    hf_fixture: str
    model_class: type[torch.nn.Module]
    from_hf: Callable[[dict], dict]
    to_hf: Callable[[dict], dict]
    config_from_hf: Callable[[object], object]
    compare: Callable[[torch.nn.Module, torch.nn.Module], None]


ARCHS = {
    "bert": Arch(
        "hf_bert", BertForPreTraining, bert_from_hf, bert_to_hf, config_from_hf_bert, compare_bert
    ),
    "gpt2": Arch(
        "hf_gpt2", GPTForCausalLM, gpt2_from_hf, gpt2_to_hf, config_from_hf_gpt2, compare_gpt2
    ),
}


@pytest.fixture(params=list(ARCHS))
def arch_and_hf(request) -> tuple[Arch, torch.nn.Module]:
    arch = ARCHS[request.param]
    return arch, request.getfixturevalue(arch.hf_fixture)


def test_from_hf_gives_hf_logits(arch_and_hf) -> None:
    arch, hf_model = arch_and_hf
    ours = arch.model_class(arch.config_from_hf(hf_model.config)).eval()
    ours.load_state_dict(arch.from_hf(hf_model.state_dict()), strict=True)
    arch.compare(ours, hf_model)


def test_to_hf_gives_our_logits(arch_and_hf) -> None:
    arch, hf_model = arch_and_hf
    torch.manual_seed(1)
    ours = arch.model_class(arch.config_from_hf(hf_model.config)).eval()
    randomize(ours)
    hf_model.load_state_dict(arch.to_hf(ours.state_dict()), strict=True)
    arch.compare(ours, hf_model)


def test_round_trip_is_exact(arch_and_hf) -> None:
    arch, hf_model = arch_and_hf
    hf_sd = hf_model.state_dict()
    back = arch.to_hf(arch.from_hf(hf_sd))
    assert back.keys() == hf_sd.keys()
    for key, tensor in hf_sd.items():
        assert torch.equal(back[key], tensor), key


def test_tied_weights_stay_tied_after_loading(arch_and_hf) -> None:
    arch, hf_model = arch_and_hf
    ours = arch.model_class(arch.config_from_hf(hf_model.config))
    ours.load_state_dict(arch.from_hf(hf_model.state_dict()), strict=True)
    # the embedding matrix is one Parameter under two state-dict keys (embeddings and LM head)
    assert len(list(ours.parameters())) == len(ours.state_dict()) - 1


def test_bert_model_checkpoint_without_prefix(hf_bert) -> None:
    backbone = hf_bert.bert.state_dict()  # BertModel keys: "embeddings.…", "encoder.layer.…"
    backbone = {k.replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in backbone.items()}
    converted = bert_from_hf(backbone)
    assert all(key.startswith("bert.") for key in converted)
    ours = BertForPreTraining(config_from_hf_bert(hf_bert.config))
    result = ours.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert all(not key.startswith("bert.") for key in result.missing_keys)


def test_unknown_key_is_rejected(hf_bert) -> None:
    hf_sd = dict(hf_bert.state_dict(), **{"bert.encoder.layer.0.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="extra.weight"):
        bert_from_hf(hf_sd)


def test_gpt2_original_checkpoint_layout(hf_gpt2) -> None:
    """The original `gpt2` files: GPT2Model keys, mask buffers, no lm_head."""
    backbone = dict(hf_gpt2.transformer.state_dict())
    backbone["h.0.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
    backbone["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    ours = GPTForCausalLM(config_from_hf_gpt2(hf_gpt2.config)).eval()
    ours.load_state_dict(gpt2_from_hf(backbone), strict=True)
    compare_gpt2(ours, hf_gpt2)


def test_configs_from_dicts() -> None:
    bert = config_from_hf_bert(transformers.BertConfig().to_dict())
    assert (bert.num_layers, bert.hidden_size, bert.num_heads, bert.ffn_size) == (12, 768, 12, 3072)
    assert (bert.vocab_size, bert.max_seq_len, bert.activation) == (30522, 512, "gelu")
    gpt2 = config_from_hf_gpt2(transformers.GPT2Config().to_dict())
    assert (gpt2.arch, gpt2.ffn_size, gpt2.max_seq_len, gpt2.vocab_size) == (
        "gpt",
        3072,
        1024,
        50257,
    )
    assert (gpt2.activation, gpt2.layer_norm_eps) == ("gelu_tanh", 1e-5)
    with pytest.raises(ValueError, match="silu"):
        config_from_hf_bert(dict(transformers.BertConfig().to_dict(), hidden_act="silu"))
