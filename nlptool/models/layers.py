"""Blocks shared by every architecture: self-attention, the feed-forward MLP, masks and init.

Shape letters in comments: B batch, T sequence length, C hidden size, nh heads, hs head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nlptool.models.config import ModelConfig


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

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C), attn_mask from `sdpa_mask` (already causal if needed) -> (B, T, C)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(self.hidden_size, dim=-1)  # 3 x (B, T, C)
        q = q.view(B, T, self.num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            # without a padding mask, causality comes from the kernel (fast path)
            is_causal=self.causal and attn_mask is None,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.dropout(self.proj(y))


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
