"""The `transformers` model of the same shape as an nlptool model config, for the scripts that
compare the two (compare_hf.py: training curves; bench.py: speed and memory)."""

from __future__ import annotations

from torch import nn

from nlptool.interop.hf import config_from_hf_bert, config_from_hf_gpt2
from nlptool.models.config import ModelConfig

# nlptool activation name -> the HF `hidden_act` / `activation_function` of the same function
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
# Fields that must come back unchanged from the HF config (via nlptool.interop.hf).
SHAPE_FIELDS = (
    "num_layers",
    "hidden_size",
    "num_heads",
    "ffn_size",
    "max_seq_len",
    "vocab_size",
    "dropout",
    "attention_dropout",
    "activation",
    "layer_norm_eps",
    "initializer_range",
    "tie_word_embeddings",
)


def hf_model_for(
    model_cfg: ModelConfig,
    objective: str,
    attn: str,
    eos_id: int | None = None,
    num_labels: int | None = None,
) -> nn.Module:
    """A freshly initialised `transformers` model of the same shape as `model_cfg`: the LM for
    `objective` (clm, mlm, mlm_nsp), or with `num_labels` a BertForSequenceClassification."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForPreTraining,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    act = HF_ACTIVATIONS[model_cfg.activation]
    if model_cfg.arch == "gpt":
        hf_cfg = GPT2Config(
            vocab_size=model_cfg.vocab_size,
            n_positions=model_cfg.max_seq_len,
            n_embd=model_cfg.hidden_size,
            n_layer=model_cfg.num_layers,
            n_head=model_cfg.num_heads,
            n_inner=model_cfg.ffn_size,
            activation_function=act,
            # nlptool has one dropout for embeddings and residuals
            embd_pdrop=model_cfg.dropout,
            resid_pdrop=model_cfg.dropout,
            attn_pdrop=model_cfg.attention_dropout,
            layer_norm_epsilon=model_cfg.layer_norm_eps,
            initializer_range=model_cfg.initializer_range,
            tie_word_embeddings=model_cfg.tie_word_embeddings,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            use_cache=False,
            attn_implementation=attn,
        )
        back = config_from_hf_gpt2(hf_cfg)
        model_cls = GPT2LMHeadModel
    else:
        hf_cfg = BertConfig(
            vocab_size=model_cfg.vocab_size,
            hidden_size=model_cfg.hidden_size,
            num_hidden_layers=model_cfg.num_layers,
            num_attention_heads=model_cfg.num_heads,
            intermediate_size=model_cfg.ffn_size,
            hidden_act=act,
            hidden_dropout_prob=model_cfg.dropout,
            attention_probs_dropout_prob=model_cfg.attention_dropout,
            max_position_embeddings=model_cfg.max_seq_len,
            type_vocab_size=model_cfg.type_vocab_size,
            layer_norm_eps=model_cfg.layer_norm_eps,
            initializer_range=model_cfg.initializer_range,
            tie_word_embeddings=model_cfg.tie_word_embeddings,
            pad_token_id=model_cfg.pad_token_id,
            attn_implementation=attn,
        )
        back = config_from_hf_bert(hf_cfg)
        model_cls = BertForPreTraining if objective == "mlm_nsp" else BertForMaskedLM
        if num_labels is not None:
            hf_cfg.num_labels = num_labels
            model_cls = BertForSequenceClassification
    # nlptool's own HF -> ModelConfig mapping must give back the shape we asked for.
    mismatched = [f for f in SHAPE_FIELDS if getattr(back, f) != getattr(model_cfg, f)]
    if mismatched:
        raise SystemExit(f"HF config differs from model config in: {', '.join(mismatched)}")
    model = model_cls(hf_cfg)
    if model_cfg.arch == "gpt":
        model.loss_type = "ForCausalLM"  # HF infers it from the class name, which lacks it
    return model
