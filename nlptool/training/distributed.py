"""Several processes, one run: torchrun, DDP and FSDP2 on PyTorch's own engine.

`torchrun --nproc_per_node=N -m nlptool pretrain ...` starts N copies of the same command. They
join one process group before Hydra composes the config (`init_from_env`), agree on the run
directory (rank 0's start time), and prepare the data rank 0 first, the others from its cache.

- `trainer.strategy=ddp`: every rank holds the whole model; gradients are averaged
  (DistributedDataParallel); accumulation steps skip that all-reduce (`no_sync`).
- `trainer.strategy=fsdp`: parameters, gradients and optimizer state are sharded over the ranks
  (FSDP2 `fully_shard`, each transformer block its own unit); checkpoints are gathered into the
  single-process format, so they resume on any number of ranks and load anywhere.

The global batch (`trainer.batch_size`) is the same whatever the world size: step s takes stream
positions [s * B, (s + 1) * B) and rank r the positions r, r + N, ... of them (StepSampler). Every
random choice of the data pipeline is a function of (seed, epoch, example index), and the loss is
normalised by prediction counts summed over all ranks, so N processes take the same steps as one.
Rank 0 alone writes the run directory, logs and checkpoints; the others print nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nlptool.errors import UserError
from nlptool.training.config import STRATEGIES


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    strategy: str = "single"  # single, ddp or fsdp (auto resolved)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Gradients are reduced over a process group (ddp, fsdp; also with one process)."""
        return self.strategy in ("ddp", "fsdp")


SINGLE = Dist()


def launched() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, or from SLURM's in a job of
    Hydra's submitit launcher with several tasks; (0, 1, 0) in a lone process."""
    if "RANK" not in os.environ and _submitit_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR (the first node), MASTER_PORT (from the job id)
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def _submitit_tasks() -> int:
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return 0
    return int(os.environ.get("SLURM_NTASKS", 1))


def _backend() -> str:
    # CPU tensors (counts, flags, metrics) always go through gloo; CUDA tensors through NCCL.
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init_from_env() -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group, and quiet every rank but 0."""
    rank, world, local = launched()
    if world <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group(_backend(), timeout=datetime.timedelta(minutes=30))
    if rank != 0:
        from nlptool.console import console

        console.quiet = True


def setup(strategy: str) -> Dist:
    """Resolve trainer.strategy against how the process was started; join a process group when
    one is needed (a one-process ddp or fsdp run gets a group of its own)."""
    rank, world, local = launched()
    if strategy not in STRATEGIES:
        raise UserError(f"trainer.strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "single"
    if strategy == "single" and world > 1:
        raise UserError(
            f"trainer.strategy=single, but torchrun started {world} processes: use "
            "trainer.strategy=ddp or fsdp (or auto), or start one process"
        )
    if strategy == "single":
        return SINGLE
    if not dist.is_initialized():
        if world > 1:
            init_from_env()
        else:
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
            dist.init_process_group(_backend(), store=dist.HashStore(), rank=0, world_size=1)
    return Dist(strategy, dist.get_rank(), dist.get_world_size(), local)


def device_for(name: str, d: Dist) -> torch.device:
    """cuda means this rank's GPU (LOCAL_RANK) in a multi-process run."""
    device = torch.device(name)
    if device.type == "cuda" and d.world_size > 1 and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def is_main_process() -> bool:
    """Rank 0, or the only process (writes files that every rank could write)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it fills the caches), then the others (they read them)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank != 0:
        barrier()
    try:
        yield
    finally:
        if rank == 0:
            barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over the ranks (in place; a no-op in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(values)
    return values


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order (on every rank)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


# -- wrapping the model -----------------------------------------------------------------------


class ObjectiveModule(nn.Module):
    """The model and its objective as one module whose forward is a whole training forward.

    Objectives call the model and then its heads (`model.lm_logits(...)`); DDP and FSDP hook a
    module's forward, so the wrapper makes every parameter's use fall inside one forward call.
    """

    def __init__(self, model: nn.Module, objective: Any, run_model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # Not registered as submodules: the objective holds no parameters, and run_model is the
        # model itself or its torch.compile wrapper (the same parameters again).
        self.__dict__["objective"] = objective
        self.__dict__["run_model"] = run_model

    def forward(self, batch: dict[str, torch.Tensor], method: str | None = None) -> dict[str, Any]:
        """The objective on the batch (or another of its methods: a task's eval_batch)."""
        run = getattr(self.objective, method) if method else self.objective
        return run(self.run_model, batch)


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (each an FSDP unit: gathered for its forward, freed after)."""
    from nlptool.models.layers import BlockStack

    return [block for m in model.modules() if isinstance(m, BlockStack) for block in m]


def wrap(
    model: nn.Module,
    objective: Any,
    run_model: nn.Module,
    d: Dist,
    device: torch.device,
    precision: str,
) -> nn.Module:
    """The module a training step calls: DDP or FSDP2 around ObjectiveModule (in place for FSDP:
    `model`'s parameters become sharded DTensors)."""
    step = ObjectiveModule(model, objective, run_model)
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index or torch.cuda.current_device()] if device.type == "cuda" else None
        # Unused parameters are common (the NSP head under objective=mlm): DDP looks for them.
        return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Parameters gathered in the compute dtype, gradients reduced in fp32.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in blocks_of(model):
        fully_shard(block, mp_policy=policy)
    fully_shard(step, mp_policy=policy)  # the rest: embeddings, heads, final norms
    return step


def gradient_sync(wrapped: nn.Module, d: Dist, sync: bool):
    """A context in which backward reduces gradients over the ranks (sync) or only accumulates
    them locally (the micro-batches before the last of a step)."""
    if d.strategy == "ddp" and not sync:
        return wrapped.no_sync()
    if d.strategy == "fsdp":
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def local_value(tensor: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (FSDP's gradient norm) as a plain tensor."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


# -- state of a sharded model -----------------------------------------------------------------


def _options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter (tied embeddings), each group sorted."""
    by_param: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_param.setdefault(id(param), []).append(name)
    return [sorted(names) for names in by_param.values() if len(names) > 1]


def full_model_state(wrapped: nn.Module, tied: list[list[str]]) -> dict[str, torch.Tensor]:
    """FSDP: every rank takes part; rank 0 gets the whole model's weights on the CPU, under the
    unwrapped model's names, each tied tensor once (under the name safetensors keeps: the first
    in sorted order); the other ranks get {}."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(wrapped, options=_options(cpu_offload=True))
    state = {name.removeprefix("model."): tensor for name, tensor in state.items()}
    for names in tied:
        for name in names[1:]:
            state.pop(name, None)
    return state


def load_full_model_state(wrapped: nn.Module, state: dict[str, torch.Tensor], tied) -> None:
    """FSDP: load a whole-model state (as saved) into the sharded model; every rank has it."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    state = dict(state)
    for names in tied:
        kept = next((n for n in names if n in state), None)
        for name in names:
            if kept is not None:
                state[name] = state[kept]
    set_model_state_dict(wrapped, {f"model.{k}": v for k, v in state.items()}, options=_options())


def _optimizer_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter of the optimizer, in its param_groups order (the order the
    integer ids of `optimizer.state_dict()` follow)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(
    wrapped: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """FSDP: the whole optimizer state on rank 0 ({} elsewhere), in the single-process format
    (`optimizer.state_dict()`: parameters numbered in param_groups order)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(wrapped, optimizer, options=_options(cpu_offload=True))
    if not state:
        return {}
    index = {f"model.{name}": i for i, name in enumerate(_optimizer_names(model, optimizer))}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[name] for name in group["params"]]}
            for group in state["param_groups"]
        ],
    }


def load_full_optimizer_state(
    wrapped: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """FSDP: load an optimizer state in the single-process format into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = [f"model.{name}" for name in _optimizer_names(model, optimizer)]
    fqn_state = {
        "state": {names[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[int(i)] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(wrapped, optimizer, fqn_state, options=_options())
