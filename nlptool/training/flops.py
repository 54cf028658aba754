"""FLOPs of a training step and the machine's peak, for model FLOPs utilisation (MFU).

A step's FLOPs are counted from the shapes of the batch, as the matmuls actually run: 2 per
multiply-add, forward, times 3 for forward + backward. Counted: every linear layer of every block
(attention projections, feed-forward), the attention scores and mixing (quadratic in the padded
length), and the output head at the positions it runs on (the masked ones for nlptool's MLM, all
for a causal LM). Padding positions count: they are computed. Embedding lookups, layer norms,
softmax and the optimizer are left out, as in the usual 6N + 12·L·H·T formula this refines.

The peak is the published dense tensor throughput of a known GPU for the precision, or on a CPU
a measured fp32 matmul (`matmul_flops_per_s`), or `trainer.peak_tflops` when given.
"""

from __future__ import annotations

import time

import torch

from nlptool.models.config import ModelConfig

IGNORE_INDEX = -100

# Dense (not sparse) peak TFLOP/s by GPU name fragment: (bf16/fp16, tf32, fp32).
GPU_PEAK_TFLOPS = {
    "H200": (989.4, 494.7, 66.9),
    "H100": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.2, 91.6),
    "A10G": (70.0, 35.0, 31.2),
    "V100": (125.0, 15.7, 15.7),
}


def block_flops(cfg: ModelConfig, batch: int, length: int, cross_length: int = 0) -> float:
    """Forward FLOPs of one transformer block over `batch` sequences of `length` positions
    (with cross-attention over `cross_length` encoder positions when given)."""
    h, f = cfg.hidden_size, cfg.ffn_size
    tokens = batch * length
    flops = 2 * tokens * (4 * h * h + 2 * h * f)  # q, k, v, out; feed-forward in and out
    flops += 2 * 2 * batch * length * length * h  # scores q·k and mixing p·v
    if cross_length:
        flops += 2 * tokens * 2 * h * h  # cross-attention q and out
        flops += 2 * batch * cross_length * 2 * h * h  # cross-attention k and v
        flops += 2 * 2 * batch * length * cross_length * h
    return float(flops)


def forward_flops(
    cfg: ModelConfig, batch: dict[str, torch.Tensor], kind: str, mlm_head_everywhere: bool = False
) -> float:
    """Forward FLOPs of a batch for an objective (mlm, mlm_nsp, clm) or a task kind.

    nlptool's MLM head runs on the masked positions only; `mlm_head_everywhere` counts it at
    every position instead, as `transformers`' BertForMaskedLM / BertForPreTraining run it."""
    b, t = batch["input_ids"].shape
    h, v = cfg.hidden_size, cfg.vocab_size
    if kind == "translation":
        td = batch["decoder_input_ids"].shape[1]
        decoder_layers = cfg.num_decoder_layers or cfg.num_layers
        return (
            cfg.num_layers * block_flops(cfg, b, t)
            + decoder_layers * block_flops(cfg, b, td, cross_length=t)
            + 2.0 * b * td * h * v
        )
    flops = cfg.num_layers * block_flops(cfg, b, t)
    if kind in ("mlm", "mlm_nsp", "sop"):
        rows = b * t if mlm_head_everywhere else int((batch["mlm_labels"] != IGNORE_INDEX).sum())
        flops += 2 * rows * (h * h + h * v)  # the head's transform and decoder
        if kind in ("mlm_nsp", "sop"):
            flops += 2 * b * (h * h + 2 * h)  # pooler and next-sentence / sentence-order head
    elif kind == "clm":
        flops += 2 * b * (t - 1) * h * v  # every position that has a next token
    elif kind in ("ner", "qa"):
        flops += 2 * b * t * h * 16  # a small per-token classifier (tags, start/end)
    else:  # classification, pair_classification, regression: pooler + classifier
        flops += 2 * b * (h * h + 2 * h)
    return float(flops)


def training_flops(
    cfg: ModelConfig, batch: dict[str, torch.Tensor], kind: str, mlm_head_everywhere: bool = False
) -> float:
    """Forward + backward (twice the forward) FLOPs of one micro-batch."""
    return 3.0 * forward_flops(cfg, batch, kind, mlm_head_everywhere)


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
