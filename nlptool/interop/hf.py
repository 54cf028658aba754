"""Hugging Face <-> nlptool: state-dict key and shape mapping, and configs.

Pure functions on dicts of tensors; `transformers` itself is not needed. The mapping is one table
of rules per architecture, read in either direction:

- BERT: HF keeps separate query/key/value Linears; nlptool fuses them into one `qkv` Linear
  (stacked along the output dimension in that order).
- GPT-2: HF uses `Conv1D`, whose weight is (in, out), the transpose of `nn.Linear`'s (out, in);
  `c_attn` is already fused in q, k, v order.

Tied weights appear under both names in a state dict (torch's convention, and HF's), e.g. the
word embeddings as `mlm_head.decoder.weight`; a converted dict keeps that, so it loads with
`load_state_dict(strict=True)`. Keys the mapping does not know raise a ValueError rather than
being dropped in silence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nlptool.models.config import ModelConfig

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Rule:
    """One nlptool tensor and the HF tensor(s) it is made of."""

    ours: str
    hf: tuple[str, ...]  # several: concatenated along dim 0 (q, k, v -> qkv)
    transpose: bool = False  # HF Conv1D weight, stored (in, out)


def _linear(ours: str, hf: str, transpose: bool = False) -> list[_Rule]:
    """Weight and bias of a Linear (or LayerNorm), which have the same two parameter names."""
    return [
        _Rule(f"{ours}.weight", (f"{hf}.weight",), transpose),
        _Rule(f"{ours}.bias", (f"{hf}.bias",)),
    ]


def _from_hf(hf_sd: Mapping[str, torch.Tensor], rules: list[_Rule], what: str) -> StateDict:
    out: StateDict = {}
    used: set[str] = set()
    for rule in rules:
        present = [key for key in rule.hf if key in hf_sd]
        if not present:
            continue  # a partial checkpoint (e.g. no heads): load_state_dict reports what is missing
        if len(present) < len(rule.hf):
            missing = sorted(set(rule.hf) - set(present))
            raise ValueError(f"{what} checkpoint: {rule.ours} needs {', '.join(missing)} as well")
        used.update(present)
        tensors = [hf_sd[key] for key in rule.hf]
        if len(tensors) > 1:
            out[rule.ours] = torch.cat(tensors, dim=0)
        elif rule.transpose:
            out[rule.ours] = tensors[0].t().contiguous()
        else:
            out[rule.ours] = tensors[0]
    _reject_unknown(hf_sd, used, what)
    return out


def _to_hf(our_sd: Mapping[str, torch.Tensor], rules: list[_Rule], what: str) -> StateDict:
    out: StateDict = {}
    used: set[str] = set()
    for rule in rules:
        if rule.ours not in our_sd:
            continue
        used.add(rule.ours)
        tensor = our_sd[rule.ours]
        if len(rule.hf) > 1:
            # clone: separate storages, so the result can be saved with safetensors
            parts = [part.clone() for part in tensor.chunk(len(rule.hf), dim=0)]
            out.update(zip(rule.hf, parts))
        elif rule.transpose:
            out[rule.hf[0]] = tensor.t().contiguous()
        else:
            out[rule.hf[0]] = tensor
    _reject_unknown(our_sd, used, what)
    return out


def _reject_unknown(state_dict: Mapping[str, torch.Tensor], used: set[str], what: str) -> None:
    unknown = sorted(set(state_dict) - used)
    if unknown:
        shown = ", ".join(unknown[:8]) + (
            f" (and {len(unknown) - 8} more)" if len(unknown) > 8 else ""
        )
        raise ValueError(f"{what}: no mapping for {shown}")


def _num_layers(keys: Any, pattern: str) -> int:
    indices = [int(m.group(1)) for key in keys if (m := re.match(pattern, key))]
    return max(indices) + 1 if indices else 0


# ---------------------------------------------------------------------------------------------
# BERT


def _bert_rules(num_layers: int) -> list[_Rule]:
    rules = [
        _Rule(f"bert.embeddings.{name}.weight", (f"bert.embeddings.{name}.weight",))
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    rules += _linear("bert.embeddings.norm", "bert.embeddings.LayerNorm")
    for i in range(num_layers):
        ours, hf = f"bert.encoder.{i}", f"bert.encoder.layer.{i}"
        for param in ("weight", "bias"):
            qkv = tuple(f"{hf}.attention.self.{name}.{param}" for name in ("query", "key", "value"))
            rules.append(_Rule(f"{ours}.attn.qkv.{param}", qkv))
        rules += _linear(f"{ours}.attn.proj", f"{hf}.attention.output.dense")
        rules += _linear(f"{ours}.attn_norm", f"{hf}.attention.output.LayerNorm")
        rules += _linear(f"{ours}.mlp.fc", f"{hf}.intermediate.dense")
        rules += _linear(f"{ours}.mlp.proj", f"{hf}.output.dense")
        rules += _linear(f"{ours}.mlp_norm", f"{hf}.output.LayerNorm")
    rules += _linear("bert.pooler", "bert.pooler.dense")
    rules += _linear("mlm_head.dense", "cls.predictions.transform.dense")
    rules += _linear("mlm_head.norm", "cls.predictions.transform.LayerNorm")
    rules.append(_Rule("mlm_head.decoder.weight", ("cls.predictions.decoder.weight",)))
    rules.append(_Rule("mlm_head.bias", ("cls.predictions.bias",)))
    rules += _linear("nsp_head", "cls.seq_relationship")
    # the task heads have the same names on both sides
    rules += _linear("classifier", "classifier")
    rules += _linear("qa_outputs", "qa_outputs")
    return rules


_BERT_WORDS = "bert.embeddings.word_embeddings.weight"


def bert_from_hf(hf_state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """HF `BertForPreTraining` (or `BertModel`, `BertForMaskedLM`, `BertFor...Classification`,
    `BertForQuestionAnswering`) state dict -> the nlptool model of the same heads.

    Also accepted: keys without the `bert.` prefix (a `BertModel` checkpoint), the old
    `LayerNorm.gamma`/`beta` names, and no `cls.predictions.decoder.weight` (tied, not saved). A
    checkpoint without heads gives a dict without heads: load it with `strict=False` or into
    `model.bert` after stripping the `bert.` prefix.
    """
    sd: StateDict = {}
    has_prefix = any(key.startswith("bert.") for key in hf_state_dict)
    for key, tensor in hf_state_dict.items():
        if key.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            continue  # buffers, not weights
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if not has_prefix and not key.startswith(("cls.", "classifier.", "qa_outputs.")):
            key = f"bert.{key}"
        sd[key] = tensor
    # HF ties the decoder's bias to `cls.predictions.bias` and may omit the tied decoder weight.
    decoder_bias = sd.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None:
        sd.setdefault("cls.predictions.bias", decoder_bias)
    if "cls.predictions.bias" in sd and _BERT_WORDS in sd:
        sd.setdefault("cls.predictions.decoder.weight", sd[_BERT_WORDS])
    num_layers = _num_layers(sd, r"bert\.encoder\.layer\.(\d+)\.")
    return _from_hf(sd, _bert_rules(num_layers), "HF BERT")


def bert_to_hf(our_state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """nlptool BERT state dict (pretraining or task heads) -> the HF one (tied keys included)."""
    sd = dict(our_state_dict)
    if "mlm_head.bias" in sd and _BERT_WORDS in sd:
        sd.setdefault("mlm_head.decoder.weight", sd[_BERT_WORDS])
    num_layers = _num_layers(sd, r"bert\.encoder\.(\d+)\.")
    out = _to_hf(sd, _bert_rules(num_layers), "nlptool BERT")
    if "cls.predictions.bias" in out:
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]  # tied in HF
    return out


# ---------------------------------------------------------------------------------------------
# GPT-2


def _gpt2_rules(num_layers: int) -> list[_Rule]:
    rules = [
        _Rule("token_embeddings.weight", ("transformer.wte.weight",)),
        _Rule("position_embeddings.weight", ("transformer.wpe.weight",)),
    ]
    for i in range(num_layers):
        ours, hf = f"layers.{i}", f"transformer.h.{i}"
        rules += _linear(f"{ours}.attn_norm", f"{hf}.ln_1")
        rules += _linear(f"{ours}.attn.qkv", f"{hf}.attn.c_attn", transpose=True)
        rules += _linear(f"{ours}.attn.proj", f"{hf}.attn.c_proj", transpose=True)
        rules += _linear(f"{ours}.mlp_norm", f"{hf}.ln_2")
        rules += _linear(f"{ours}.mlp.fc", f"{hf}.mlp.c_fc", transpose=True)
        rules += _linear(f"{ours}.mlp.proj", f"{hf}.mlp.c_proj", transpose=True)
    rules += _linear("final_norm", "transformer.ln_f")
    rules.append(_Rule("lm_head.weight", ("lm_head.weight",)))
    rules.append(_Rule("score.weight", ("score.weight",)))  # GPT2ForSequenceClassification
    return rules


def gpt2_from_hf(hf_state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """HF `GPT2LMHeadModel` (`GPT2Model`, `GPT2ForSequenceClassification`) state dict -> nlptool
    `GPTForCausalLM` (`GPTForSequenceClassification`) one.

    The causal-mask buffers (`attn.bias`, `attn.masked_bias`) are skipped; keys without the
    `transformer.` prefix (a `GPT2Model` checkpoint, like the original `gpt2` files) are accepted,
    and a missing `lm_head.weight` is taken from the token embeddings, as GPT-2 ties them.
    """
    sd: StateDict = {}
    has_prefix = any(key.startswith("transformer.") for key in hf_state_dict)
    for key, tensor in hf_state_dict.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers, not weights
        if not has_prefix and key not in ("lm_head.weight", "score.weight"):
            key = f"transformer.{key}"
        sd[key] = tensor
    if "transformer.wte.weight" in sd:
        sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    num_layers = _num_layers(sd, r"transformer\.h\.(\d+)\.")
    return _from_hf(sd, _gpt2_rules(num_layers), "HF GPT-2")


def gpt2_to_hf(our_state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """nlptool `GPTForCausalLM` (`GPTForSequenceClassification`) state dict -> HF
    `GPT2LMHeadModel` (`GPT2ForSequenceClassification`, with `lm_head.weight` to drop) one
    (Conv1D layout)."""
    sd = dict(our_state_dict)
    if "token_embeddings.weight" in sd:
        sd.setdefault("lm_head.weight", sd["token_embeddings.weight"])
    num_layers = _num_layers(sd, r"layers\.(\d+)\.")
    return _to_hf(sd, _gpt2_rules(num_layers), "nlptool GPT")


# ---------------------------------------------------------------------------------------------
# Configs

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
_MISSING = object()


def _get(hf_config: Any, key: str, default: Any = _MISSING) -> Any:
    """A field of an HF config object or of its `config.json` dict."""
    if isinstance(hf_config, Mapping):
        value = hf_config.get(key, default)
    else:
        value = getattr(hf_config, key, default)
    if value is _MISSING:
        raise ValueError(f"HF config has no {key!r}")
    return value


def _activation(hf_name: str) -> str:
    if hf_name not in _ACTIVATIONS:
        raise ValueError(
            f"HF activation {hf_name!r} has no nlptool equivalent; "
            f"supported: {', '.join(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[hf_name]


def config_from_hf_bert(hf_config: Any) -> ModelConfig:
    """`ModelConfig` of the same shape as an HF `BertConfig` (object or config.json dict)."""
    position_type = _get(hf_config, "position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"HF BERT position_embedding_type={position_type!r}: only absolute")
    if _get(hf_config, "is_decoder", False):
        raise ValueError("HF BERT with is_decoder=True (causal) is not supported")
    pad_token_id = _get(hf_config, "pad_token_id", 0)
    return ModelConfig(
        arch="bert",
        name=_get(hf_config, "_name_or_path", "") or "hf-bert",
        num_layers=_get(hf_config, "num_hidden_layers"),
        hidden_size=_get(hf_config, "hidden_size"),
        num_heads=_get(hf_config, "num_attention_heads"),
        intermediate_size=_get(hf_config, "intermediate_size"),
        max_seq_len=_get(hf_config, "max_position_embeddings"),
        vocab_size=_get(hf_config, "vocab_size"),
        type_vocab_size=_get(hf_config, "type_vocab_size", 2),
        dropout=_get(hf_config, "hidden_dropout_prob", 0.1),
        attention_dropout=_get(hf_config, "attention_probs_dropout_prob", 0.1),
        activation=_activation(_get(hf_config, "hidden_act", "gelu")),
        layer_norm_eps=_get(hf_config, "layer_norm_eps", 1e-12),
        initializer_range=_get(hf_config, "initializer_range", 0.02),
        tie_word_embeddings=_get(hf_config, "tie_word_embeddings", True),
        pad_token_id=0 if pad_token_id is None else pad_token_id,
    )


def config_from_hf_gpt2(hf_config: Any) -> ModelConfig:
    """`ModelConfig` of the same shape as an HF `GPT2Config` (object or config.json dict).

    nlptool has one `dropout` for embeddings and residuals: it takes `resid_pdrop`.
    """
    if not _get(hf_config, "scale_attn_weights", True):
        raise ValueError("HF GPT-2 with scale_attn_weights=False is not supported")
    if _get(hf_config, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("HF GPT-2 with scale_attn_by_inverse_layer_idx=True is not supported")
    pad_token_id = _get(hf_config, "pad_token_id", None)
    return ModelConfig(
        arch="gpt",
        name=_get(hf_config, "_name_or_path", "") or "hf-gpt2",
        num_layers=_get(hf_config, "n_layer"),
        hidden_size=_get(hf_config, "n_embd"),
        num_heads=_get(hf_config, "n_head"),
        intermediate_size=_get(hf_config, "n_inner", None),
        max_seq_len=_get(hf_config, "n_positions"),
        vocab_size=_get(hf_config, "vocab_size"),
        dropout=_get(hf_config, "resid_pdrop", 0.1),
        attention_dropout=_get(hf_config, "attn_pdrop", 0.1),
        activation=_activation(_get(hf_config, "activation_function", "gelu_new")),
        layer_norm_eps=_get(hf_config, "layer_norm_epsilon", 1e-5),
        initializer_range=_get(hf_config, "initializer_range", 0.02),
        tie_word_embeddings=_get(hf_config, "tie_word_embeddings", True),
        pad_token_id=0 if pad_token_id is None else pad_token_id,
    )
