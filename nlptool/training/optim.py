"""AdamW with decoupled weight decay, and the warm-up + decay learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from nlptool.training.config import TrainerConfig


def build_optimizer(
    model: nn.Module, cfg: TrainerConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel; no weight decay on biases and LayerNorm weights
    (the 1-D parameters)."""
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:  # tied weights appear once
            continue
        seen.add(id(param))
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        # One fused kernel (CUDA and CPU): fewer passes over the weights, and it can skip a
        # non-finite step on the device (found_inf) without a host sync.
        fused=device.type in ("cuda", "cpu"),
    )


def lr_factor(step: int, cfg: TrainerConfig) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based).

    Linear warm-up over warmup_steps (the first step already moves), then linear or cosine decay
    to min_lr_ratio at max_steps, or constant.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
