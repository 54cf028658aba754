"""BERT (Devlin et al., 2019): a bidirectional post-LayerNorm Transformer encoder.

Numerically the same as Hugging Face's `BertForPreTraining` (see `nlptool.interop.hf` for the
weight mapping). `BertModel` is the backbone that every BERT head reuses; `BertForPreTraining`
adds the masked-LM and next-sentence heads but returns hidden states: the objectives decide where
to apply the heads (e.g. the MLM decoder only on masked positions).

Shape letters in comments: B batch, T sequence length, C hidden size, V vocabulary size.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.models.config import ModelConfig
from nlptool.models.layers import (
    MLP,
    BlockFlops,
    BlockStack,
    SelfAttention,
    activation,
    init_weights,
    sdpa_mask,
)


def _check_vocab(cfg: ModelConfig) -> None:
    if cfg.vocab_size <= 0:
        raise ValueError(
            f"model.vocab_size={cfg.vocab_size}: set it (or take it from the tokenizer) "
            "before building the model"
        )


class BertEmbeddings(nn.Module):
    """word + position + token type embeddings -> LayerNorm -> dropout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.max_seq_len = cfg.max_seq_len
        self.word_embeddings = nn.Embedding(
            cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        T = input_ids.shape[1]
        if self.max_seq_len < T:
            raise ValueError(
                f"input of {T} tokens is longer than model.max_seq_len={self.max_seq_len}"
            )
        x = self.word_embeddings(input_ids)  # (B, T, C)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]  # all segment 0, no index tensor needed
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings.weight[:T]  # (T, C) broadcast over the batch
        return self.dropout(self.norm(x))


class BertLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg, causal=False)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, attn_mask))
        return self.mlp_norm(x + self.mlp(x))


class BertModel(nn.Module):
    """The backbone: embeddings, encoder layers and the pooler, shared by all BERT heads."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_vocab(cfg)
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BlockStack(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.apply(partial(init_weights, std=cfg.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) 1 = token 0 = padding -> hidden (B, T, C)."""
        attn_mask = sdpa_mask(attention_mask, causal=False)  # (B, 1, 1, T) or None
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        return self.encoder(x, attn_mask)  # (B, T, C)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The [CLS] summary: tanh(dense(hidden of the first token)). (B, T, C) -> (B, C)."""
        return torch.tanh(self.pooler(hidden[:, 0]))


class BertMLMHead(nn.Module):
    """Masked-LM head: dense -> activation -> LayerNorm -> decoder (tied) + bias."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.activation)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        # the weight is replaced by the word embeddings when they are tied; the bias stays apart
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.act(self.dense(hidden)))  # (..., C)
        return F.linear(x, self.decoder.weight, self.bias)  # (..., V)


class BertForPreTraining(BlockFlops, nn.Module):
    """BERT with the masked-LM and next-sentence-prediction heads.

    `forward` returns the sequence output; `mlm_logits`, `pool` and `nsp_logits` apply the heads
    so that an objective can use them on just the positions it needs.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_vocab(cfg)
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.mlm_head = BertMLMHead(cfg)
        self.nsp_head = nn.Linear(cfg.hidden_size, 2)
        for head in (self.mlm_head, self.nsp_head):  # the backbone initialised itself
            head.apply(partial(init_weights, std=cfg.initializer_range))
        if cfg.tie_word_embeddings:
            # tie after init, so the decoder's own init cannot overwrite the zero padding row
            self.mlm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> sequence output (B, T, C): hidden states, not logits."""
        return self.bert(input_ids, attention_mask, token_type_ids)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, C): the pooled first token."""
        return self.bert.pool(hidden)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V); works on a gathered (N, C) tensor of masked positions."""
        return self.mlm_head(hidden)

    def nsp_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, 2): is-next (0) / random (1) scores, as in HF."""
        return self.nsp_head(pooled)


class _BertWithClassifier(BlockFlops, nn.Module):
    """The encoder plus dropout and a linear classifier, as HF's task models have them."""

    def __init__(self, cfg: ModelConfig, num_labels: int) -> None:
        super().__init__()
        _check_vocab(cfg)
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        self.classifier.apply(partial(init_weights, std=cfg.initializer_range))


class BertForSequenceClassification(_BertWithClassifier):
    """BERT with a classification (or regression, num_labels=1) head on the pooled first token,
    as HF's `BertForSequenceClassification`: dropout, then a linear layer."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, num_labels)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return self.classifier(self.dropout(self.bert.pool(hidden)))


class BertForTokenClassification(_BertWithClassifier):
    """BERT with a per-token classification head (NER), as HF's `BertForTokenClassification`."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, num_labels)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return self.classifier(self.dropout(hidden))


class BertForQuestionAnswering(BlockFlops, nn.Module):
    """BERT with a span head (extractive QA), as HF's `BertForQuestionAnswering`: one linear
    layer scoring every token as the answer's start and as its end."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        _check_vocab(cfg)
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.qa_outputs = nn.Linear(cfg.hidden_size, 2)
        self.qa_outputs.apply(partial(init_weights, std=cfg.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, T) -> start and end logits, each (B, T)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        start, end = self.qa_outputs(hidden).unbind(dim=-1)  # 2 x (B, T)
        return start, end
