"""An encoder-decoder Transformer (Vaswani et al., 2017) for translation trained from scratch.

Differences from the paper, each for from-scratch training on one machine:

- Pre-LayerNorm blocks (x = x + sublayer(LN(x))) with a final LayerNorm on each stack, as in
  GPT-2 and most later translation systems: the residual stream is never normalised, so
  gradients reach the lower layers unscaled and training is stable without the long warm-up
  that the paper's post-LN blocks need (Xiong et al., 2020).
- Learned positions (one table for the encoder, one for the decoder) instead of sinusoids.
- Embeddings are NOT multiplied by sqrt(hidden_size). The paper scales them because its
  embeddings are initialised with std hidden_size**-0.5 and sit next to sinusoids of magnitude
  ~1. Here tokens and positions share one initialisation (normal, std initializer_range), so
  they start on the same scale; scaling would make the tokens drown the positions by
  sqrt(hidden_size) (x22.6 at 512). Pre-LN makes the overall scale of the stream irrelevant to
  the sublayers, which see LN(x).

One token embedding serves source and target (a joint vocabulary: the translation task trains
one tokenizer on both languages) and, with `tie_word_embeddings`, the output projection too.

`forward` returns the decoder's hidden states; `lm_logits` turns them into next-token scores,
so a loss can apply it to just the positions it needs. `encode` + `decode` with a
`DecoderCache` decode incrementally (see `nlptool.models.decoding`).

Shape letters in comments: B batch, S source length, T target length, C hidden size,
V vocabulary size.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from nlptool.models.config import ModelConfig
from nlptool.models.layers import (
    MLP,
    BlockStack,
    CrossAttention,
    KVCache,
    PreLNBlock,
    SelfAttention,
    block_flops,
    check_vocab_size,
    init_weights,
    sdpa_mask,
)


class DecoderCache:
    """What incremental decoding keeps between steps, per decoder layer: the self-attention keys
    and values of the target tokens decoded so far, and the cross-attention keys and values of
    the memory (computed at the first step, then reused)."""

    def __init__(self, num_layers: int) -> None:
        self.self_attn = [KVCache() for _ in range(num_layers)]
        self.cross_attn = [KVCache() for _ in range(num_layers)]

    @property
    def length(self) -> int:
        """Number of target positions decoded so far: the position of the next token."""
        return self.self_attn[0].length

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (B',) of the self-attention caches, as beam search does
        when hypotheses change beams.

        The cross-attention caches are left alone: they depend only on the source, which is
        the same for every beam of one sentence, and beam search only moves hypotheses among the
        beams of one sentence.
        """
        for cache in self.self_attn:
            cache.reorder(index)


class DecoderBlock(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention to the memory, MLP; each as
    x = x + sublayer(LN(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SelfAttention(cfg, causal=True)
        self.cross_attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.cross_attn = CrossAttention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        self_mask: torch.Tensor | None = None,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C), memory (B, S, C); masks from `sdpa_mask` -> (B, T, C).

        With `self_cache`, x holds only the new tokens and attends to the cached ones too.
        """
        h = self.self_attn_norm(x)
        if self_cache is None:
            x = x + self.self_attn(h, self_mask)
        else:
            x = x + self.self_attn.forward_cached(h, self_cache)
        x = x + self.cross_attn(self.cross_attn_norm(x), memory, memory_mask, cross_cache)
        return x + self.mlp(self.mlp_norm(x))


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer with one token embedding shared by source, target and output."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_vocab_size(cfg)
        self.cfg = cfg
        self.token_embeddings = nn.Embedding(
            cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.encoder_positions = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.decoder_positions = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = BlockStack(PreLNBlock(cfg, causal=False) for _ in range(cfg.num_layers))
        self.encoder_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = BlockStack(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.decoder_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

        self.apply(partial(init_weights, std=cfg.initializer_range))
        # As in GPT-2: the projections that write into a residual stream start smaller, by
        # 1/sqrt(number of additions to that stream), so its variance does not grow with depth.
        encoder_std = cfg.initializer_range / math.sqrt(2 * cfg.num_layers)
        for block in self.encoder:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=encoder_std)
        decoder_std = cfg.initializer_range / math.sqrt(3 * cfg.decoder_layers)
        for block in self.decoder:
            for proj in (block.self_attn.proj, block.cross_attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=decoder_std)
        if cfg.tie_word_embeddings:
            # tie after init, so the head's own init cannot overwrite the zero padding row
            self.lm_head.weight = self.token_embeddings.weight

    def _embed(self, ids: torch.Tensor, positions: nn.Embedding, start: int) -> torch.Tensor:
        """ids (B, T) at positions start.. -> dropout(token + position embeddings) (B, T, C)."""
        end = start + ids.shape[1]
        if end > self.cfg.max_seq_len:
            raise ValueError(
                f"input of {end} tokens is longer than model.max_seq_len={self.cfg.max_seq_len}"
            )
        x = self.token_embeddings(ids) + positions.weight[start:end]  # (T, C) broadcast over B
        return self.dropout(x)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src_ids (B, S), src_mask (B, S) 1 = token 0 = padding -> memory (B, S, C)."""
        attn_mask = sdpa_mask(src_mask, causal=False)  # (B, 1, 1, S) or None
        x = self._embed(src_ids, self.encoder_positions, 0)
        x = self.encoder(x, attn_mask)  # (B, S, C)
        return self.encoder_norm(x)

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt_ids (B, T) attending to memory (B, S, C) -> hidden (B, T, C), after the final LN.

        Without a cache, tgt_ids is the whole target from position 0 (teacher forcing). With a
        cache, tgt_ids holds only the new tokens (usually T = 1), at positions cache.length..;
        their self-attention keys and values are added to the cache, and the memory's
        cross-attention keys and values are computed at the first call and reused after.

        tgt_mask (B, T), 1 = token 0 = right padding, is optional: under the causal mask no real
        position sees the right padding anyway; it only changes the (ignored) padded outputs.
        """
        if cache is not None and tgt_mask is not None:
            raise ValueError("decode: tgt_mask is for teacher forcing, not for cached decoding")
        start = 0 if cache is None else cache.length
        memory_mask = sdpa_mask(src_mask, causal=False)  # (B, 1, 1, S) or None
        self_mask = sdpa_mask(tgt_mask, causal=True)  # (B, 1, T, T) or None
        x = self._embed(tgt_ids, self.decoder_positions, start)
        if cache is None:
            x = self.decoder(x, memory, memory_mask, self_mask)  # (B, T, C)
        else:
            for i, block in enumerate(self.decoder):
                x = block(x, memory, memory_mask, None, cache.self_attn[i], cache.cross_attn[i])
        return self.decoder_norm(x)

    def forward(
        self,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor | None,
        tgt_ids: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing: src_ids (B, S), tgt_ids (B, T) right-padded -> hidden (B, T, C).

        tgt_ids is the decoder's input: bos, then the target shifted right by one; the hidden
        state at position t predicts target token t (eos after the last one).
        """
        memory = self.encode(src_ids, src_mask)
        return self.decode(tgt_ids, memory, src_mask, tgt_mask=tgt_mask)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V) next-token scores."""
        return self.lm_head(hidden)

    def forward_flops(self, batch: dict[str, torch.Tensor]) -> float:
        """Encoder blocks over the source, decoder blocks (self- and cross-attention) over the
        decoder input; the output projection is the task's."""
        (b, s), t = batch["input_ids"].shape, batch["decoder_input_ids"].shape[1]
        decoder = self.cfg.decoder_layers * block_flops(self.cfg, b, t, cross_length=s)
        return self.cfg.num_layers * block_flops(self.cfg, b, s) + decoder

    def new_cache(self) -> DecoderCache:
        """An empty cache for incremental `decode`."""
        return DecoderCache(len(self.decoder))
