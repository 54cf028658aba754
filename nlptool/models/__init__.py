"""Transformer models built from a plain `ModelConfig`: BERT, GPT-2 and an encoder-decoder."""

from __future__ import annotations

from torch import nn

from nlptool.errors import UserError
from nlptool.models.bert import BertForPreTraining
from nlptool.models.config import ModelConfig
from nlptool.models.gpt import GPTForCausalLM
from nlptool.models.seq2seq import Seq2SeqTransformer

__all__ = [
    "BertForPreTraining",
    "GPTForCausalLM",
    "ModelConfig",
    "Seq2SeqTransformer",
    "build_model",
    "count_parameters",
]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for `cfg.arch`: BertForPreTraining (bert), GPTForCausalLM (gpt) or
    Seq2SeqTransformer (seq2seq); or the user's class of model._target_."""
    if getattr(cfg, "_target_", None):
        from nlptool.plugins import instantiate

        return instantiate(
            cfg._target_, "model", "nlptool.models.config.ModelProtocol", ("forward",), cfg
        )
    if cfg.arch == "bert":
        return BertForPreTraining(cfg)
    if cfg.arch == "gpt":
        return GPTForCausalLM(cfg)
    if cfg.arch == "seq2seq":
        return Seq2SeqTransformer(cfg)
    raise UserError(f"model.arch={cfg.arch!r}: expected bert, gpt or seq2seq")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters, each tied (shared) parameter counted once."""
    # `parameters()` already yields a shared Parameter only once.
    return sum(p.numel() for p in model.parameters())
