"""Blocks shared by every architecture: attention, the feed-forward MLP, masks, caches and init.

Shape letters in comments: B batch, T sequence length, S source (memory) length, C hidden size,
nh heads, hs head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from nlptool.models.config import ModelConfig


def check_vocab_size(cfg: ModelConfig) -> None:
    """Raise unless the vocabulary size is known: 0 means "from the tokenizer", not yet set."""
    if cfg.vocab_size <= 0:
        raise ValueError(
            f"model.vocab_size={cfg.vocab_size}: set it (or take it from the tokenizer) "
            "before building the model"
        )


def activation(name: str) -> nn.Module:
    """The feed-forward non-linearity named by `ModelConfig.activation`."""
    if name == "gelu":
        return nn.GELU()  # exact erf form, as in BERT
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"model.activation={name!r}: expected gelu, gelu_tanh or relu")


def sdpa_mask(attention_mask: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """Turn a (B, T) padding mask (1/True = real token, 0 = padding) into an SDPA boolean mask.

    Returns None when there is no padding mask, so that attention can take the `is_causal` fast
    path (or no mask at all). Otherwise True means "may attend": (B, 1, 1, T) for a bidirectional
    model, (B, 1, T, T) = causal & padding for a causal one (right padding assumed).
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()  # (B, T)
    # A sequence made only of padding would leave softmax with nothing to attend to (NaN that
    # survives multiplication by a zero loss weight); let such a row attend everywhere instead.
    keep = keep | ~keep.any(dim=-1, keepdim=True)
    mask = keep[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        seq_len = keep.shape[-1]
        lower = torch.ones(seq_len, seq_len, dtype=torch.bool, device=keep.device).tril()
        mask = mask & lower  # (B, 1, T, T)
    return mask


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs): the layout SDPA expects."""
    B, T, _ = x.shape
    return x.view(B, T, num_heads, -1).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C): heads side by side again."""
    B, _, T, _ = y.shape
    return y.transpose(1, 2).reshape(B, T, -1)


class KVCache:
    """Keys and values that one attention layer keeps across decoding steps, (B, nh, t, hs) each.

    Incremental decoding appends the new tokens' keys and values at every step, so a step costs
    one token's projections instead of the whole prefix's.
    """

    def __init__(self) -> None:
        self.key: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of positions held (t)."""
        return 0 if self.key is None else self.key.shape[2]

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, nh, T, hs) keys and values after those held; returns all of them."""
        if self.key is not None:
            key = torch.cat([self.key, key], dim=2)
            value = torch.cat([self.value, value], dim=2)
        self.key, self.value = key, value
        return key, value

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (B',), in that order (beam search moving hypotheses)."""
        if self.key is not None:
            self.key = self.key.index_select(0, index)
            self.value = self.value.index_select(0, index)


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused q/k/v projection, SDPA, output projection, dropout."""

    def __init__(self, cfg: ModelConfig, causal: bool) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.hidden_size = cfg.hidden_size
        self.causal = causal
        self.attention_dropout = cfg.attention_dropout
        # q, k and v stacked along the output dimension in that order: (3C, C)
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q, k, v, each (B, nh, T, hs)."""
        q, k, v = self.qkv(x).split(self.hidden_size, dim=-1)  # 3 x (B, T, C)
        return tuple(split_heads(t, self.num_heads) for t in (q, k, v))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C), attn_mask from `sdpa_mask` (already causal if needed) -> (B, T, C)."""
        q, k, v = self._heads(x)  # 3 x (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            # without a padding mask, causality comes from the kernel (fast path)
            is_causal=self.causal and attn_mask is None,
        )  # (B, nh, T, hs)
        return self.dropout(self.proj(merge_heads(y)))

    def forward_cached(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Causal attention of new tokens x (B, T, C), at positions cache.length and on, to
        themselves and to every earlier token, whose keys and values `cache` holds; appends the
        new keys and values to `cache`. -> (B, T, C). Usually T = 1 (one decoding step)."""
        if not self.causal:
            raise ValueError("forward_cached is incremental decoding: it needs causal attention")
        T = x.shape[1]
        past = cache.length
        q, k, v = self._heads(x)  # 3 x (B, nh, T, hs)
        k, v = cache.append(k, v)  # (B, nh, past + T, hs)
        # One new token may see everything in the cache: no mask. Several new tokens see the
        # cache and the new ones up to themselves: query i (position past + i) sees keys <= past + i.
        # (SDPA's is_causal aligns the triangle top-left, which is wrong once past > 0.)
        mask = None
        if T > 1:
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return self.dropout(self.proj(merge_heads(y)))


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder (queries) to the encoder's output (keys, values).

    k and v are fused in one projection, since both read the same memory; q reads the decoder.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.hidden_size = cfg.hidden_size
        self.attention_dropout = cfg.attention_dropout
        self.q = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        # k and v stacked along the output dimension in that order: (2C, C)
        self.kv = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) attends to memory (B, S, C) -> (B, T, C).

        attn_mask: `sdpa_mask(src_mask, causal=False)`, (B, 1, 1, S), or None. With a `cache`,
        the memory's keys and values are computed at the first call, kept in the cache and
        reused by every later call (which then does not read `memory`): the memory is the same
        at every decoding step.
        """
        if cache is not None and cache.length:
            k, v = cache.key, cache.value  # (B, nh, S, hs)
        else:
            k, v = self.kv(memory).split(self.hidden_size, dim=-1)  # 2 x (B, S, C)
            k, v = split_heads(k, self.num_heads), split_heads(v, self.num_heads)
            if cache is not None:
                cache.append(k, v)
        q = split_heads(self.q(x), self.num_heads)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return self.dropout(self.proj(merge_heads(y)))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> ffn_size -> activation -> C, dropout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.hidden_size, cfg.ffn_size)
        self.act = activation(cfg.activation)
        self.proj = nn.Linear(cfg.ffn_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class PreLNBlock(nn.Module):
    """Pre-LN Transformer block: x = x + attn(LN(x)); x = x + mlp(LN(x)).

    The residual stream itself is never normalised (only each sublayer's input), which keeps
    gradients to the lower layers unscaled: stable training from scratch without long warm-up.
    """

    def __init__(self, cfg: ModelConfig, causal: bool) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg, causal=causal)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), attn_mask)
        return x + self.mlp(self.mlp_norm(x))

    def forward_cached(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Incremental decoding (causal blocks): new tokens x (B, T, C) after those in `cache`."""
        x = x + self.attn.forward_cached(self.attn_norm(x), cache)
        return x + self.mlp(self.mlp_norm(x))


class BlockStack(nn.ModuleList):
    """The blocks of an encoder or decoder, run in order. With `checkpointing` on (set by
    trainer.activation_checkpointing), training keeps only each block's input and recomputes the
    block in the backward pass: activation memory of one block instead of all, for about a third
    more compute. Dropout draws the same masks the second time (the RNG state is replayed)."""

    checkpointing = False

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            if self.checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, *args, use_reentrant=False)
            else:
                x = block(x, *args)
        return x


@torch.no_grad()
def init_weights(module: nn.Module, std: float) -> None:
    """Hugging Face's initialisation, for `model.apply(partial(init_weights, std=...))`.

    Linear and Embedding weights ~ normal(0, std), biases 0, LayerNorm weight 1 and bias 0, and
    the padding row of an embedding with `padding_idx` set to zero.
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def block_flops(cfg: ModelConfig, batch: int, length: int, cross_length: int = 0) -> float:
    """Forward FLOPs of one transformer block over `batch` sequences of `length` positions (with
    cross-attention over `cross_length` encoder positions when given), as the matmuls run: 2 per
    multiply-add; the attention scores and mixing are quadratic in the padded length. Layer
    norms, softmax and embedding lookups are left out, as in the usual 6N + 12·L·H·T formula."""
    h, f = cfg.hidden_size, cfg.ffn_size
    tokens = batch * length
    flops = 2 * tokens * (4 * h * h + 2 * h * f)  # q, k, v, out; feed-forward in and out
    flops += 2 * 2 * batch * length * length * h  # scores q·k and mixing p·v
    if cross_length:
        flops += 2 * tokens * 2 * h * h  # cross-attention q and out
        flops += 2 * batch * cross_length * 2 * h * h  # cross-attention k and v
        flops += 2 * 2 * batch * length * cross_length * h
    return float(flops)


class BlockFlops:
    """`forward_flops(batch)` for a model of `cfg.num_layers` blocks over `input_ids`: what the
    trainer counts for MFU (the heads after the blocks are the objective's or task's)."""

    cfg: ModelConfig

    def forward_flops(self, batch: dict[str, torch.Tensor]) -> float:
        b, t = batch["input_ids"].shape
        return self.cfg.num_layers * block_flops(self.cfg, b, t)
