"""GPT-2 (Radford et al., 2019): a causal pre-LayerNorm Transformer decoder.

Numerically the same as Hugging Face's `GPT2LMHeadModel` (see `nlptool.interop.hf` for the weight
mapping): learned positions, tanh-approximated GELU, a final LayerNorm and an LM head without bias
tied to the token embeddings. `forward` returns hidden states; the objective applies `lm_logits`.

Shape letters in comments: B batch, T sequence length, C hidden size, V vocabulary size.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from nlptool.models.config import ModelConfig
from nlptool.models.layers import (
    BlockFlops,
    BlockStack,
    KVCache,
    PreLNBlock,
    init_weights,
    sdpa_mask,
)


class GPTForCausalLM(BlockFlops, nn.Module):
    """GPT-2 with its language-modelling head."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(
                f"model.vocab_size={cfg.vocab_size}: set it (or take it from the tokenizer) "
                "before building the model"
            )
        self.cfg = cfg
        self.token_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = BlockStack(PreLNBlock(cfg, causal=True) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

        self.apply(partial(init_weights, std=cfg.initializer_range))
        # GPT-2 scales the projections that write into the residual stream by 1/sqrt(N), N = the
        # number of residual additions (two per block), so the stream's variance does not grow
        # with depth.
        residual_std = cfg.initializer_range / math.sqrt(2 * cfg.num_layers)
        for layer in self.layers:
            nn.init.normal_(layer.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.mlp.proj.weight, mean=0.0, std=residual_std)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.token_embeddings.weight

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, T) 1 = token 0 = right padding -> (B, T, C).

        The result is the hidden state after the final LayerNorm.
        """
        T = input_ids.shape[1]
        if self.cfg.max_seq_len < T:
            raise ValueError(
                f"input of {T} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}"
            )
        attn_mask = sdpa_mask(attention_mask, causal=True)  # (B, 1, T, T) or None
        x = self.token_embeddings(input_ids)  # (B, T, C)
        x = x + self.position_embeddings.weight[:T]  # (T, C): positions 0..T-1, broadcast
        x = self.dropout(x)
        x = self.layers(x, attn_mask)  # (B, T, C)
        return self.final_norm(x)

    def new_cache(self) -> list[KVCache]:
        """Empty key/value caches, one per block, for `forward_cached`."""
        return [KVCache() for _ in self.layers]

    def forward_cached(self, input_ids: torch.Tensor, cache: list[KVCache]) -> torch.Tensor:
        """Incremental decoding: input_ids (B, T) at positions cache[0].length and on, after the
        tokens whose keys and values `cache` holds (they are appended) -> (B, T, C) hidden
        states, as `forward` gives for those positions of the whole sequence. A decoding step
        feeds one token: its cost does not grow with the length already generated (beyond
        attention reading the cache)."""
        past, T = cache[0].length, input_ids.shape[1]
        if past + T > self.cfg.max_seq_len:
            raise ValueError(
                f"{past + T} tokens are more than model.max_seq_len={self.cfg.max_seq_len}"
            )
        x = self.token_embeddings(input_ids)  # (B, T, C)
        x = x + self.position_embeddings.weight[past : past + T]  # (T, C)
        x = self.dropout(x)
        for block, layer_cache in zip(self.layers, cache):
            x = block.forward_cached(x, layer_cache)  # (B, T, C)
        return self.final_norm(x)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V) next-token scores."""
        return self.lm_head(hidden)


class GPTForSequenceClassification(GPTForCausalLM):
    """GPT-2 with a classification (or regression, num_labels=1) head on the hidden state of the
    last real token, as Hugging Face's `GPT2ForSequenceClassification`: a causal model has seen
    the whole text only there. The head is a linear layer without bias (`score`); the LM head
    stays (tied to the embeddings, no parameters of its own), so a pretrained GPT loads as is."""

    def __init__(self, cfg: ModelConfig, num_labels: int) -> None:
        super().__init__(cfg)
        self.num_labels = num_labels
        self.score = nn.Linear(cfg.hidden_size, num_labels, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=cfg.initializer_range)

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # (no segments in GPT: ignored)
    ) -> torch.Tensor:
        """input_ids (B, T), right-padded, attention_mask (B, T) -> logits (B, num_labels)."""
        hidden = super().forward(input_ids, attention_mask)  # (B, T, C)
        B, T = input_ids.shape
        if attention_mask is None:
            last = torch.full((B,), T - 1, device=input_ids.device)
        else:
            last = attention_mask.sum(dim=1) - 1  # (B,) the last real token of each row
        pooled = hidden[torch.arange(B, device=input_ids.device), last]  # (B, C)
        return self.score(pooled)
