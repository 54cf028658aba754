"""The process around a run: device, seeds, determinism, autocast, batch helpers."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from nlptool.console import console
from nlptool.data.pretraining import StepSampler
from nlptool.errors import UserError
from nlptool.training.config import BatchPlan, TrainerConfig

Batch = dict[str, torch.Tensor]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda, but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic() -> None:
    """trainer.deterministic: only deterministic kernels (an error names any op without one)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def num_tokens(batch: Batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def make_collate(fn: Callable, **kwargs: Any) -> Callable[[list[dict]], Batch]:
    """A picklable collate function (DataLoader workers need to pickle it)."""
    return partial(fn, **kwargs)


def step_batches(
    data: torch.utils.data.Dataset,
    collate: Callable[[list[dict]], Batch],
    cfg: TrainerConfig,
    plan: BatchPlan,
    rank: int,
    start_step: int,
    pin_memory: bool,
) -> Iterator[Batch]:
    """This rank's micro-batches of steps start_step, start_step + 1, ... to max_steps, in order
    (`StepSampler`: the examples of a step are a function of its number)."""
    size = len(data)
    if size < cfg.batch_size:
        console.print(
            f"[yellow]The training data hold {size:,} example{'s' * (size != 1)}, fewer than "
            f"one batch (trainer.batch_size={cfg.batch_size}): each step repeats them "
            "(every pass a new shuffle). Add data or lower trainer.batch_size.[/]"
        )
    lengths = None
    if cfg.group_by_length and hasattr(data, "lengths"):  # (task examples: less padding)
        lengths = data.lengths()
    sampler = StepSampler(
        size, cfg.batch_size, plan.micro_batch_size, cfg.seed, start_step=start_step,
        max_steps=cfg.max_steps, rank=rank, world_size=plan.world_size, lengths=lengths,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: a loader draws a base seed when iterated, which must not move the
        # global RNG (dropout), or a resumed run would drift from a straight one.
        generator=torch.Generator().manual_seed(cfg.seed),
        prefetch_factor=4 if cfg.num_workers else None,
    )
    return iter(loader)
