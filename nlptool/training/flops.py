"""FLOPs of a training step and the machine's peak, for model FLOPs utilisation (MFU).

A step's FLOPs are counted from the shapes of the batch, as the matmuls actually run: 2 per
multiply-add, forward, times 3 for forward + backward. The model counts its blocks
(`forward_flops(batch)`: attention projections, feed-forward, the attention scores and mixing,
quadratic in the padded length); the objective or task counts its head (`head_flops`: the
output head at the positions it runs on, the masked ones for nlptool's MLM, all for a causal LM).
Padding positions count: they are computed. Embedding lookups, layer norms, softmax and the
optimizer are left out, as in the usual 6N + 12·L·H·T formula this refines.

The peak is the published dense tensor throughput of a known GPU for the precision, or on a CPU
a measured fp32 matmul (`matmul_flops_per_s`), or `trainer.peak_tflops` when given.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

# Dense (not sparse) peak TFLOP/s by GPU name fragment: (bf16/fp16, tf32, fp32).
GPU_PEAK_TFLOPS = {
    "H200": (989.4, 494.7, 66.9),
    "H100": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.2, 91.6),
    "A10G": (70.0, 35.0, 31.2),
    "V100": (125.0, 15.7, 15.7),
}


def training_flops(model: nn.Module, objective: Any, batch: dict[str, torch.Tensor]) -> float:
    """Forward + backward (twice the forward) FLOPs of one micro-batch: the model's blocks and
    the objective's or task's head."""
    return 3.0 * (model.forward_flops(batch) + objective.head_flops(model.cfg, batch))


def counts_flops(model: nn.Module) -> bool:
    """Whether the model counts its FLOPs (`forward_flops` and its `cfg`); a custom model that
    does not gets no MFU."""
    return callable(getattr(model, "forward_flops", None)) and hasattr(model, "cfg")


def matmul_flops_per_s(device: torch.device, n: int = 1024, reps: int = 4) -> float:
    """FLOP/s of an n x n fp32 matmul on `device` right now (the CPU's practical peak)."""
    # Its own generator: a probe inside training must not move the global RNG (dropout).
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen)
    c = torch.randn(n, n, device=device, generator=gen)
    (a @ c).sum().item()  # warm-up
    started = time.perf_counter()
    for _ in range(reps):
        out = a @ c
    out.sum().item()
    return 2.0 * n**3 * reps / (time.perf_counter() - started)


def device_peak_flops(device: torch.device, precision: str, tf32: bool = True) -> float | None:
    """The published dense peak of a known GPU for this precision; None when unknown."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (half, tf32_peak, fp32) in GPU_PEAK_TFLOPS.items():
        if fragment in name:
            if precision in ("bf16", "fp16"):
                return half * 1e12
            return (tf32_peak if tf32 else fp32) * 1e12
    return None
