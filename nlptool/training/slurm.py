"""SLURM: requeue the job after a pre-emption warning, so it resumes where it stopped.

A job that asks for a warning before its time limit (`#SBATCH --signal=USR1@120`) gets SIGUSR1;
the training loop then finishes its step and saves, and here the job puts itself back in the queue
(`scontrol requeue`). The requeued job starts the same command in the same run directory, and
`resume=auto` continues from the checkpoint exactly.
"""

from __future__ import annotations

import os
import subprocess

from nlptool.training.logging import console


def job_id() -> str | None:
    """This process's SLURM job (array jobs as <job>_<task>), or None outside SLURM."""
    array_job, array_task = (
        os.environ.get("SLURM_ARRAY_JOB_ID"),
        os.environ.get("SLURM_ARRAY_TASK_ID"),
    )
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue(job: str) -> bool:
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
