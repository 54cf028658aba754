"""Signals that stop training cleanly, and the SLURM requeue after a time-limit warning.

SIGINT (Ctrl-C), SIGTERM (pre-emption, `scancel`) and SIGUSR1 make the loop finish its step, save
and stop. A SLURM job that asks for a warning before its time limit (`#SBATCH
--signal=USR1@120`) gets SIGUSR1; after the save the job puts itself back in the queue
(`scontrol requeue`), and the requeued job's `resume=auto` continues from the checkpoint exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from nlptool.console import console

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""Signals that make the loop finish the current step, save a checkpoint and stop: Ctrl-C, the
scheduler's pre-emption (SIGTERM), and the warning a cluster job asks for before its time limit
(SIGUSR1, e.g. `#SBATCH --signal=USR1@120`; SIGUSR2 in jobs of Hydra's submitit launcher)."""
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
"""Time-limit warnings: inside SLURM, the job is requeued after the save."""


class StopRequested:
    """Catches the STOP_SIGNALS while training. A second Ctrl-C aborts without saving."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequested:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def previous_handler(self, signum: int) -> Any:
        """The Python handler this one stood in for (submitit's requeue handler in its jobs), or
        None for the default action."""
        handler = self._previous.get(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            return handler
        return None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.requested:
            return
        self.signum = signum
        console.print(
            f"[yellow]{signal.Signals(signum).name}: stopping after this step and saving a "
            "checkpoint (Ctrl-C again to abort without saving)[/]"
        )


def slurm_job_id() -> str | None:
    """This process's SLURM job (array jobs as <job>_<task>), or None outside SLURM."""
    array_job, array_task = (
        os.environ.get("SLURM_ARRAY_JOB_ID"),
        os.environ.get("SLURM_ARRAY_TASK_ID"),
    )
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_requeue(job: str) -> bool:
    """`scontrol requeue <job>`; says what happened. True when SLURM accepted it."""
    try:
        proc = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        console.print(f"[red]Could not requeue SLURM job {job}: {err}[/]")
        return False
    if proc.returncode != 0:
        console.print(
            f"[red]scontrol requeue {job} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}[/]"
        )
        return False
    console.print(f"Requeued SLURM job {job}; it resumes from the checkpoint when it restarts.")
    return True


class TrainingInterrupted(Exception):
    """Training stopped early on a signal, after saving the checkpoint `path`."""

    def __init__(self, step: int, signum: int, path: Path, previous: Any = None) -> None:
        super().__init__(f"stopped at step {step} on {signal.Signals(signum).name}")
        self.step, self.signum, self.path = step, signum, path
        self.previous = previous  # the signal's handler before training took it over


def stopped_by_signal(stop: TrainingInterrupted, requeue: bool) -> None:
    """After a signal stopped training (the checkpoint is saved): hand the signal on to the handler
    training stood in for (in a job of Hydra's submitit launcher, submitit's: it requeues the job
    and exits), or requeue a SLURM job that got its time-limit warning (SIGUSR1/2) ourselves;
    then exit with 128 + the signal number, as a shell reports a process ended by that signal, so
    scripts and schedulers do not take the run for finished."""
    name = signal.Signals(stop.signum).name
    console.print(
        f"Training stopped at step {stop.step} on {name}; checkpoint {stop.path}. Run the same "
        "command in the same run directory to continue (resume=auto)."
    )
    job = slurm_job_id()
    if stop.previous is not None:
        stop.previous(stop.signum, None)
    elif stop.signum in REQUEUE_SIGNALS and job and requeue:
        slurm_requeue(job)
    raise SystemExit(128 + stop.signum)
