"""The trainer's typed config (`trainer` group) and the batch arithmetic derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from nlptool.errors import check

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "cosine", "constant")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")


@dataclass(frozen=True)
class BatchPlan:
    """The global batch (sequences per optimizer step) over processes and micro-batches: each of
    `world_size` processes takes `rank_batch_size` sequences per step, in `accumulation`
    forward passes of `micro_batch_size`. The same config optimizes the same way on 1 or N
    devices (the litgpt and llm-foundry convention)."""

    batch_size: int
    world_size: int
    rank_batch_size: int
    micro_batch_size: int
    accumulation: int


@dataclass
class TrainerConfig:
    """Steps, optimisation, precision, logging and checkpoints."""

    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "fp32"
    """fp32, bf16 (autocast) or fp16 (autocast with a gradient scaler; CUDA only)."""
    max_steps: int = 600
    """Optimizer steps to train for."""
    batch_size: int = 32
    """Global batch: sequences per optimizer step, whatever the number of devices."""
    micro_batch_size: int | None = None
    """Sequences per forward pass on one device; null: the whole per-device batch at once."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr (linear and cosine schedules)."""
    warmup_steps: int = 50
    """Linear warm-up steps from 0 to lr."""
    schedule: str = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    seed: int = 1234
    """Seeds weights, dropout, shuffling and masking."""
    log_every: int = 10
    """Steps between training log records."""
    eval_every: int = 100
    """Steps between validations (0: only before the first and after the last step)."""
    eval_batches: int = 0
    """Cap on validation batches per evaluation (0: all validation examples)."""
    save_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept (the newest always survives)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    num_workers: int = 0
    """DataLoader worker processes."""
    group_by_length: bool = True
    """Batch examples of similar length together (tasks with variable-length inputs)."""
    progress: bool = True
    """Show a live progress bar on a terminal (plain log lines otherwise)."""
    quiet: bool = False
    """No start and end panels, no progress bar or log lines (warnings and errors still show;
    metrics.jsonl and the loggers get everything)."""
    nonfinite: str = "error"
    """A step whose loss or gradient norm is NaN or infinite: error (stop with a message, the last
    checkpoint untouched) or skip (no update; counted and logged)."""
    max_nonfinite_skips: int = 10
    """nonfinite=skip: stop after this many non-finite steps in a row."""
    peak_tflops: float | None = None
    """The device's peak TFLOP/s for MFU (train/mfu); null: the published dense peak of known
    GPUs for the precision, or on a CPU a measured fp32 matmul."""
    activation_checkpointing: bool = False
    """Recompute each block in the backward pass instead of keeping its activations: far less
    memory for long sequences or big models, about a third more compute."""
    tf32: bool = True
    """CUDA: fp32 matmuls and convolutions on TF32 tensor cores (torch "high" precision)."""
    slurm_requeue: bool = True
    """Inside a SLURM job, SIGUSR1 or SIGUSR2 (the time-limit warning of `#SBATCH
    --signal=USR1@120`) saves, stops and requeues the job (scontrol requeue; in jobs of
    hydra/launcher=slurm submitit does it); the requeued run resumes with resume=auto."""
    deterministic: bool = False
    """Deterministic kernels (torch.use_deterministic_algorithms): identical reruns, slower."""
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where training records go: jsonl (metrics.jsonl, always on), tensorboard, wandb, mlflow
    (optional extras: pip install 'nlptool[tensorboard]' ...)."""
    run_name: str | None = None
    """The run's name in W&B and MLflow (null: the run directory's name)."""
    wandb_project: str = "nlptool"
    mlflow_experiment: str = "nlptool"
    strategy: str = "auto"
    """How several processes (torchrun) share the work: auto (ddp under torchrun with more than one
    process, else single), single, ddp (DistributedDataParallel) or fsdp (FSDP2, sharded
    parameters, gradients and optimizer state)."""

    def validate(self) -> None:
        check(
            self.nonfinite in ("error", "skip"),
            f"trainer.nonfinite={self.nonfinite!r}: expected error or skip",
        )
        check(self.max_nonfinite_skips >= 1, "trainer.max_nonfinite_skips must be >= 1")
        if self.peak_tflops is not None:
            check(self.peak_tflops > 0, f"trainer.peak_tflops={self.peak_tflops}: must be > 0")
        check(self.device in DEVICES, f"trainer.device={self.device!r}: expected one of {DEVICES}")
        check(
            self.precision in PRECISIONS,
            f"trainer.precision={self.precision!r}: expected one of {PRECISIONS}",
        )
        check(
            self.schedule in SCHEDULES,
            f"trainer.schedule={self.schedule!r}: expected one of {SCHEDULES}",
        )
        check(self.max_steps >= 1, f"trainer.max_steps={self.max_steps}: must be >= 1")
        check(self.batch_size >= 1, f"trainer.batch_size={self.batch_size}: must be >= 1")
        if self.micro_batch_size is not None:
            check(
                self.micro_batch_size >= 1,
                f"trainer.micro_batch_size={self.micro_batch_size}: must be >= 1",
            )
        check(self.lr > 0, f"trainer.lr={self.lr}: must be positive")
        check(0.0 <= self.min_lr_ratio <= 1.0, "trainer.min_lr_ratio must be in [0, 1]")
        check(self.warmup_steps >= 0, "trainer.warmup_steps must be >= 0")
        check(self.weight_decay >= 0, "trainer.weight_decay must be >= 0")
        check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "trainer.beta1/beta2 must be in [0, 1)")
        check(self.grad_clip >= 0, "trainer.grad_clip must be >= 0 (0 disables clipping)")
        for key in ("log_every", "eval_every", "save_every", "eval_batches", "num_workers"):
            check(getattr(self, key) >= 0, f"trainer.{key} must be >= 0")
        check(self.log_every >= 1, "trainer.log_every must be >= 1")
        check(self.keep_last >= 1, "trainer.keep_last must be >= 1")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        check(
            not unknown,
            f"trainer.loggers: unknown {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(LOGGERS)}",
        )
        check(
            self.strategy in STRATEGIES,
            f"trainer.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}",
        )

        self.batch_plan(1)

    def batch_plan(self, world_size: int = 1) -> BatchPlan:
        """How the global batch is split: over `world_size` processes, then into micro-batches.
        Raises ValueError naming the keys when it does not split evenly."""
        check(
            self.batch_size % world_size == 0,
            f"trainer.batch_size={self.batch_size} (the global batch) does not split evenly "
            f"over {world_size} processes; make it a multiple of {world_size}",
        )
        rank_batch = self.batch_size // world_size
        micro = self.micro_batch_size or rank_batch
        if world_size == 1:
            check(
                rank_batch % micro == 0,
                f"trainer.batch_size={self.batch_size} is not a multiple of "
                f"trainer.micro_batch_size={micro}",
            )
        check(
            rank_batch % micro == 0,
            f"trainer.micro_batch_size={micro} does not divide the {rank_batch} sequences each "
            f"of the {world_size} processes takes of trainer.batch_size={self.batch_size}",
        )
        return BatchPlan(self.batch_size, world_size, rank_batch, micro, rank_batch // micro)
