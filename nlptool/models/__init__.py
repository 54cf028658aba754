"""Transformer models built from a plain `ModelConfig`: BERT and GPT-2."""

from __future__ import annotations

from torch import nn

from nlptool.errors import UserError
from nlptool.models.bert import BertForPreTraining
from nlptool.models.config import ModelConfig
from nlptool.models.gpt import GPTForCausalLM

__all__ = [
    "BertForPreTraining",
    "GPTForCausalLM",
    "ModelConfig",
    "build_model",
    "count_parameters",
]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The pretraining model for `cfg.arch`: BertForPreTraining (bert) or GPTForCausalLM (gpt)."""
    if cfg.arch == "bert":
        return BertForPreTraining(cfg)
    if cfg.arch == "gpt":
        return GPTForCausalLM(cfg)
    if cfg.arch == "seq2seq":
        raise UserError(
            "model.arch=seq2seq: the encoder-decoder model is built by the translation task, "
            "which is not available in pretraining yet; use model.arch=bert or model.arch=gpt"
        )
    raise UserError(f"model.arch={cfg.arch!r}: expected bert or gpt")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters, each tied (shared) parameter counted once."""
    # `parameters()` already yields a shared Parameter only once.
    return sum(p.numel() for p in model.parameters())
