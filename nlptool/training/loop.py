"""The training loop. It owns steps, precision, accumulation, evaluation, checkpoints and logs,
and knows nothing of any objective or task beyond the `Objective` protocol."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nlptool.console import TrainingProgress, console
from nlptool.errors import UserError
from nlptool.models.layers import BlockStack
from nlptool.objectives.base import Objective
from nlptool.training import checkpoint as ckpt
from nlptool.training import distributed
from nlptool.training.config import TrainerConfig
from nlptool.training.distributed import SINGLE, Dist
from nlptool.training.evaluation import LogWindow, describe_validation, evaluate_split
from nlptool.training.flops import (
    counts_flops,
    device_peak_flops,
    matmul_flops_per_s,
    training_flops,
)
from nlptool.training.loggers import Loggers
from nlptool.training.optim import build_optimizer, build_scheduler
from nlptool.training.runtime import (
    Batch,
    autocast_context,
    num_tokens,
    set_deterministic,
    step_batches,
)
from nlptool.training.signals import StopRequested, TrainingInterrupted


@dataclass
class TrainingJob:
    """Everything task-specific the loop is handed."""

    model: nn.Module
    objective: Objective  # a pretraining objective or a downstream task: the same protocol
    train_data: torch.utils.data.Dataset  # keyed by (epoch, index)
    valid_data: torch.utils.data.Dataset  # keyed by (0, index)
    collate: Callable[[list[dict]], Batch]
    tokenizer: Any  # saved with every checkpoint
    config_yaml: str  # saved with every checkpoint
    run_dir: Path
    extra_state: dict[str, Any] = field(default_factory=dict)
    early_stopping_patience: int = 0  # validations without a better main metric (0: never stop)


class Trainer:
    def __init__(
        self, cfg: TrainerConfig, job: TrainingJob, device: torch.device, dist: Dist = SINGLE
    ) -> None:
        self.cfg, self.job, self.device, self.dist = cfg, job, device, dist
        if cfg.deterministic:
            set_deterministic()
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        # Each rank's share of the global batch, in micro-batches of micro_batch_size.
        try:
            self.plan = cfg.batch_plan(dist.world_size)
        except ValueError as err:
            raise UserError(str(err)) from None
        self.model = job.model.to(device)
        for module in self.model.modules():
            if isinstance(module, BlockStack):
                module.checkpointing = cfg.activation_checkpointing
        self.tied = distributed.tied_groups(self.model)  # (before FSDP swaps the parameters)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        # ddp / fsdp: the training forward goes through the wrapper (gradient reduction, sharding)
        self.wrapped = (
            distributed.wrap(
                self.model, job.objective, self.step_model, dist, device, cfg.precision
            )
            if dist.active
            else None
        )
        if dist.rank > 0:  # the same initial weights everywhere, but each rank its own dropout
            torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)
        self.optimizer = build_optimizer(self.model, cfg, device)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.step = 0
        self.tokens_seen = 0
        self.checkpoints_dir = job.run_dir / "checkpoints"
        self.history: dict[str, dict[str, Any]] = {}
        # Tasks name a main metric: the best checkpoint is kept (checkpoints/best) by it.
        self.main_metric: str | None = job.objective.main_metric
        self.greater_is_better = job.objective.greater_is_better
        self.best: float | None = None
        self.evals_since_best = 0
        self.train_seconds = 0.0
        self.nonfinite_skips = 0  # steps skipped for a non-finite loss or gradient, in all
        self.last_mfu: float | None = None  # the last logged train/mfu
        self.nonfinite_in_a_row = 0
        # MFU: the step's FLOPs from the batch shapes, over the device's peak (or a CPU probe).
        self.counts_flops = counts_flops(self.model)
        self.peak_flops = (
            cfg.peak_tflops * 1e12
            if cfg.peak_tflops
            else device_peak_flops(device, cfg.precision, cfg.tf32)
        )
        self._probe_peak = self.peak_flops is None and device.type == "cpu"
        # With a fused optimizer (and no fp16 grad scaler) a non-finite step is skipped on the
        # device and checked one step later: no host sync inside the step.
        self.checks_on_device = not self.scaler.is_enabled() and all(
            group.get("fused") for group in self.optimizer.param_groups
        )
        self._pending: tuple[int, dict[str, torch.Tensor], torch.Tensor] | None = None

    @property
    def accumulation(self) -> int:
        """Micro-batches this process runs per optimizer step."""
        return self.plan.accumulation

    @property
    def micro_batch_size(self) -> int:
        return self.plan.micro_batch_size

    def _track_best(self, metrics: dict[str, Any]) -> bool:
        """Whether these validation metrics are the best so far by the main metric."""
        if self.main_metric is None:
            return False
        value = metrics.get(f"valid/{self.main_metric}")
        if value is None or value != value:  # missing or NaN
            self.evals_since_best += 1
            return False
        better = self.best is None or (
            value > self.best if self.greater_is_better else value < self.best
        )
        if better:
            self.best, self.evals_since_best = float(value), 0
        else:
            self.evals_since_best += 1
        return better

    # -- state ------------------------------------------------------------------------------

    def restore(self, path: Path) -> None:
        """Continue from a checkpoint of this same run: weights, optimizer, schedule, RNG, step."""
        state = ckpt.load_training_state(path)
        if self.dist.strategy == "fsdp":
            weights = ckpt.load_weights_file(path)
            distributed.load_full_model_state(self.wrapped, weights, self.tied)
            distributed.load_full_optimizer_state(
                self.wrapped, self.model, self.optimizer, state["optimizer"]
            )
        else:
            ckpt.load_weights(self.model, path)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        by_rank = state.get("rng_by_rank")
        if by_rank and len(by_rank) == self.dist.world_size:
            ckpt.set_rng_state(by_rank[self.dist.rank])
        else:  # another number of ranks: rank 0's state, each other rank its own dropout seed
            ckpt.set_rng_state(state["rng"])
            if self.dist.rank > 0:
                torch.manual_seed(hash((self.cfg.seed, self.dist.rank, len(by_rank or ()))))
        trainer_state = ckpt.read_checkpoint(path).trainer_state
        self.step = int(trainer_state["step"])
        self.tokens_seen = int(trainer_state.get("tokens_seen", 0))
        self.best = trainer_state.get("best")
        self.evals_since_best = int(trainer_state.get("evals_since_best", 0))
        self.train_seconds = float(trainer_state.get("train_seconds", 0.0))
        self.nonfinite_skips = int(trainer_state.get("nonfinite_skips", 0))

    def save(self, metrics: dict[str, Any] | None = None) -> Path:
        """Rank 0 writes the checkpoint (FSDP: the shards gathered first, every rank taking part;
        each rank's RNG state goes in); every rank returns its path once it is on disk."""
        if self.dist.strategy == "fsdp":
            model: nn.Module | dict[str, torch.Tensor] = distributed.full_model_state(
                self.wrapped, self.tied
            )
            optimizer = distributed.full_optimizer_state(self.wrapped, self.model, self.optimizer)
        else:
            model, optimizer = self.model, self.optimizer.state_dict()
        rngs = distributed.gather_objects(ckpt.rng_state())
        path = None
        if self.dist.is_main:
            path = self._write(model, optimizer, rngs, metrics)
        path = distributed.broadcast_object(path)
        return path

    def _write(self, model, optimizer: dict, rngs: list, metrics: dict[str, Any] | None) -> Path:
        return ckpt.save_checkpoint(
            self.checkpoints_dir,
            self.step,
            model=model,
            config_yaml=self.job.config_yaml,
            tokenizer=self.job.tokenizer,
            training_state={
                "optimizer": optimizer,
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rngs[0],
                **({"rng_by_rank": rngs} if len(rngs) > 1 else {}),
            },
            trainer_state={
                "step": self.step,
                "tokens_seen": self.tokens_seen,
                "best": self.best,
                "evals_since_best": self.evals_since_best,
                "train_seconds": self.train_seconds,
                "nonfinite_skips": self.nonfinite_skips,
                "metrics": metrics or {},
                **self.job.extra_state,
            },
            keep_last=self.cfg.keep_last,
        )

    # -- data -------------------------------------------------------------------------------

    def train_batches(self) -> Iterator[Batch]:
        """Micro-batches of steps self.step, self.step + 1, ... to max_steps, in order."""
        return step_batches(
            self.job.train_data, self.job.collate, self.cfg, self.plan, self.dist.rank,
            start_step=self.step, pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    # -- one optimizer step -----------------------------------------------------------------

    def step_counts(
        self, micro_batches: list[Batch], stop: bool = False
    ) -> tuple[dict[str, int], int, bool]:
        """The global batch's prediction count of each loss term and its tokens, summed over the
        ranks, and whether any rank was asked to stop: one small all-reduce on the CPU (gloo) per
        step, from the batches alone, before the forward pass."""
        terms = self.job.objective.terms
        values = [0] * (len(terms) + 2)
        for batch in micro_batches:
            for term, n in self.job.objective.counts(batch).items():
                values[terms.index(term)] += int(n)
            values[-2] += num_tokens(batch)
        values[-1] = int(stop)
        if self.dist.world_size > 1:
            values = distributed.all_reduce_sum(torch.tensor(values, dtype=torch.int64)).tolist()
        return dict(zip(terms, values)), values[-2], bool(values[-1])

    def train_step(
        self, micro_batches: list[Batch], counts: dict[str, int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Forward and backward every micro-batch of this rank's share of one global batch, then
        step.

        Each term's summed loss is divided by the term's prediction count over the whole global
        batch (all ranks), so the gradient is that of the global batch's mean loss however it is
        split over micro-batches and ranks. (DDP and FSDP average gradients over the ranks: the
        loss is scaled up by the world size to make that average a sum.)
        """
        objective = self.job.objective
        if counts is None:
            counts = self.step_counts(micro_batches)[0]
        self.model.train()
        scale = self.dist.world_size if self.dist.active else 1
        sums = {term: torch.zeros((), device=self.device) for term in objective.terms}
        last = len(micro_batches) - 1
        for i, batch in enumerate(micro_batches):
            batch = self._to_device(batch)
            with (
                distributed.gradient_sync(self.wrapped, self.dist, sync=i == last)
                if self.wrapped is not None
                else contextlib.nullcontext()
            ):
                with autocast_context(self.device, self.cfg.precision):
                    if self.wrapped is not None:
                        terms = self.wrapped(batch)
                    else:
                        terms = objective(self.step_model, batch)
                loss = sum(terms[t].loss_sum / max(counts[t], 1) for t in objective.terms)
                if scale != 1:
                    loss = loss * scale
                self.scaler.scale(loss).backward()
            for term in objective.terms:
                sums[term] += terms[term].loss_sum.detach()
        if self.dist.world_size > 1:  # the global batch's loss on every rank
            summed = distributed.all_reduce_sum(torch.stack([sums[t] for t in objective.terms]))
            sums = dict(zip(objective.terms, summed.unbind()))
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = distributed.local_value(
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        )
        out = {f"{t}_loss": sums[t] / max(counts[t], 1) for t in objective.terms}
        out["loss"] = sum(out[f"{t}_loss"] for t in objective.terms)
        out["grad_norm"] = grad_norm
        # Caught before the optimizer step. With fp16 the grad scaler owns overflowing
        # gradients (it skips the step and lowers the scale): only the loss is checked then.
        finite = torch.isfinite(out["loss"])
        if not self.scaler.is_enabled():
            finite = finite & torch.isfinite(grad_norm)
        if self.checks_on_device:
            # No host sync: the fused kernel leaves weights and moments as they are when
            # found_inf is set. The flag is read at the next step, after its backward is queued,
            # when this step's kernels have long finished (or before a log, eval or save).
            self.resolve_pending_check()
            self.optimizer.found_inf = (~finite).float()
            self.optimizer.step()
            del self.optimizer.found_inf
        elif bool(finite):
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self._pending = (self.step + 1, out, finite)
        if not self.checks_on_device:
            self.resolve_pending_check()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**out, "finite": finite}

    def resolve_pending_check(self) -> None:
        """Act on the last step's finiteness: count a skip, or stop (trainer.nonfinite)."""
        if self._pending is None:
            return
        step, out, finite = self._pending
        self._pending = None
        if bool(finite):
            self.nonfinite_in_a_row = 0
        else:
            self._nonfinite(out, step)

    def _nonfinite(self, out: dict[str, torch.Tensor], step: int) -> None:
        """A non-finite step, not applied: stop (trainer.nonfinite=error) or count and skip."""
        self.nonfinite_skips += 1
        self.nonfinite_in_a_row += 1
        what = f"loss {float(out['loss']):.4g}, gradient norm {float(out['grad_norm']):.4g}"
        last = ckpt.find_latest(self.checkpoints_dir)
        kept = f"the last checkpoint ({last}) is untouched" if last else "no checkpoint yet"
        if self.cfg.nonfinite == "error":
            raise UserError(
                f"Non-finite {what} at step {step}, caught before the optimizer step; "
                f"{kept}. Lower trainer.lr, keep trainer.grad_clip on, check the data, or set "
                "trainer.nonfinite=skip to skip such steps."
            )
        console.print(
            f"step {step}: non-finite loss or gradient, skipped ({self.nonfinite_skips} so far)"
        )
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite_skips:
            raise UserError(
                f"{self.nonfinite_in_a_row} non-finite steps in a row (the last: {what} at step "
                f"{step}; trainer.max_nonfinite_skips={self.cfg.max_nonfinite_skips}); "
                f"{kept}. Lower trainer.lr or check the data."
            )

    def _flops(self, micro_batches: list[Batch]) -> float:
        if not self.counts_flops or not self.peak_flops:  # (fit probes a CPU's peak first)
            return 0.0
        try:
            return sum(training_flops(self.model, self.job.objective, b) for b in micro_batches)
        except KeyError:  # a batch layout the FLOP count does not know: no MFU
            return 0.0

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(
        self, predictions_path: Path | None = None, split: str = "valid"
    ) -> dict[str, float]:
        """Mean loss of every term over the validation examples, the accuracies the objective
        asks for, perplexity, and the objective's or task's own metrics (`end_eval`)."""
        objective, dist = self.job.objective, self.dist

        def forward(batch: Batch) -> dict[str, Any]:
            batch = self._to_device(batch)
            with autocast_context(self.device, self.cfg.precision):
                if dist.strategy == "fsdp":  # through the root, which gathers the sharded weights
                    return self.wrapped(batch, "eval_batch")
                return objective.eval_batch(self.step_model, batch)

        # FSDP keeps the root's gathered weights after a forward, for training to reuse: they
        # must not be inference tensors.
        no_grad = torch.no_grad if dist.strategy == "fsdp" else torch.inference_mode
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                metrics = evaluate_split(
                    objective, self.job.valid_data, self.job.collate, forward,
                    batch_size=self.micro_batch_size, max_batches=self.cfg.eval_batches,
                    dist=dist, split=split, predictions_path=predictions_path,
                )  # fmt: skip
        finally:
            self.model.train(was_training)
        # Rank 0's figures everywhere: every rank then takes the same best/early-stop decisions.
        return distributed.broadcast_object(metrics)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, log: Loggers) -> dict[str, dict[str, Any]]:
        """Train to max_steps. Returns the validation metrics at the start and at the end."""
        cfg = self.cfg
        if self.step >= cfg.max_steps:
            console.print(
                f"Already trained to step {self.step} (trainer.max_steps={cfg.max_steps})."
            )
            final = self.evaluate()
            return {"end": {"step": self.step, **final}}
        if self.step == 0:
            first = self.evaluate()
            log.write({"step": 0, **first})
            self.history["start"] = {"step": 0, **first}
            self._track_best(first)
        batches = self.train_batches()
        if self._probe_peak:
            self.peak_flops = matmul_flops_per_s(self.device)
        window = LogWindow()
        last_valid: dict[str, Any] = {}
        stopped = False
        with (
            StopRequested() as stop,
            TrainingProgress(
                cfg.max_steps, self.step, cfg.progress and self.dist.is_main, cfg.quiet
            ) as bar,
        ):
            while self.step < cfg.max_steps:
                micro_batches = [next(batches) for _ in range(self.accumulation)]
                counts, tokens, stop_any = self.step_counts(micro_batches, stop.requested)
                # One process stops at the step the signal came in; several agree on it first (a
                # signal seen by any rank before this step stops all of them after it).
                stop_now = stop.requested if self.dist.world_size == 1 else stop_any
                flops = self._flops(micro_batches)  # this rank's: MFU per device
                lr = self.scheduler.get_last_lr()[0]
                out = self.train_step(micro_batches, counts)
                finite = out.pop("finite")  # on the device: no sync here
                self.step += 1
                self.tokens_seen += tokens
                window.add(out, finite, tokens, flops)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self.resolve_pending_check()
                    record, elapsed = window.record(self.step, lr, self.peak_flops)
                    if "train/mfu" in record:
                        self.last_mfu = record["train/mfu"]
                    self.train_seconds += elapsed
                    record["train/tokens_seen"] = self.tokens_seen
                    record["train/seconds"] = self.train_seconds  # training time, evals excluded
                    if self.nonfinite_skips:
                        record["train/nonfinite_skips"] = self.nonfinite_skips
                    log.write(record)
                    bar.log(record)
                    window.reset()
                bar.advance(self.step)
                done = self.step == cfg.max_steps
                improved = False
                if done or (cfg.eval_every and self.step % cfg.eval_every == 0):
                    self.resolve_pending_check()
                    eval_start = time.perf_counter()
                    last_valid = {"step": self.step, **self.evaluate()}
                    if self._probe_peak:  # the CPU's speed drifts: measure it again
                        self.peak_flops = matmul_flops_per_s(self.device)
                    log.write(last_valid)
                    improved = self._track_best(last_valid)
                    bar.note(describe_validation(last_valid, self.main_metric, improved))
                    window.exclude(time.perf_counter() - eval_start)  # not training time
                patience = self.job.early_stopping_patience
                out_of_patience = bool(patience) and self.evals_since_best >= patience
                periodic = cfg.save_every and self.step % cfg.save_every == 0
                if done or stop_now or periodic or improved or out_of_patience:
                    self.resolve_pending_check()  # never save past an unchecked step
                    save_start = time.perf_counter()
                    path = self.save(last_valid if last_valid.get("step") == self.step else None)
                    if improved and self.dist.is_main:
                        ckpt.point_link(self.checkpoints_dir / "best", path.name)
                    window.exclude(time.perf_counter() - save_start)
                    if stop_now and not done:
                        bar.note(f"Saved {path}; resume with resume=auto in this run directory.")
                        stopped = True
                        break
                if out_of_patience and not done:
                    bar.note(
                        f"Early stopping: no better valid/{self.main_metric} in {patience} "
                        "validations"
                    )
                    break
        self.resolve_pending_check()
        self.history["end"] = last_valid or {"step": self.step}
        if stopped:
            signum = stop.signum or signal.SIGTERM  # (a rank told by another)
            raise TrainingInterrupted(self.step, signum, path, stop.previous_handler(signum))
        return self.history
