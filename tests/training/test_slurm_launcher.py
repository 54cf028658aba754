"""hydra/launcher=slurm without a cluster: a fake sbatch takes the generated job, and the job's
own process (submitit's `_submit`) runs here with SLURM's environment: the time-limit signal
saves, requeues through submitit, and the requeued job continues bit for bit."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_preemption import (  # noqa: F401 (straight is a fixture)
    RUN,
    assert_same_run,
    start,
    straight,
    wait_for_step,
)

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

FAKE = {
    # Keeps the batch script, answers like SLURM.
    "sbatch": 'cp "$1" "$FAKE_SLURM/job.sh"\necho "Submitted batch job 4242"\n',
    "srun": 'exec "$@"\n',
    "sacct": 'printf "JobID|State|NodeList\\n4242|RUNNING|localhost\\n4242_0|RUNNING|localhost\\n"\n',
    "scontrol": 'echo "$@" >> "$FAKE_SLURM/scontrol.log"\n',
}


def fake_cluster(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKE.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM": str(tmp_path)}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {path} appeared:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path} within {timeout}s")
        time.sleep(0.1)


def sbatch_lines(script: Path) -> set[str]:
    return {line.strip() for line in script.read_text().splitlines()}


def test_the_generated_job_asks_for_the_nodes_gpus_signal_and_requeue(tmp_path):
    env = fake_cluster(tmp_path)
    sweep = tmp_path / "sweep"
    launcher = start(
        [
            "pretrain", "-m", "hydra/launcher=slurm", "hydra.launcher.nodes=2",
            "hydra.launcher.gpus_per_node=8", "hydra.launcher.partition=gpu", "model=gpt2",
            "objective=clm", "trainer.strategy=fsdp", "trainer.lr=1e-4,3e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        env,
    )  # fmt: skip
    try:
        wait_for(tmp_path / "job.sh", launcher)
        wait_for(sweep / ".submitit" / "4242_1" / "4242_1_submitted.pkl", launcher)
    finally:
        launcher.kill()
        launcher.communicate()
    lines = sbatch_lines(tmp_path / "job.sh")
    for expected in (
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=8",  # one process per GPU
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@180",  # the time-limit warning, 3 minutes ahead
        "#SBATCH --requeue",
        "#SBATCH --time=1440",
        "#SBATCH --array=0-1%2",  # one job per learning rate
        "export SUBMITIT_EXECUTOR=slurm",
    ):
        assert expected in lines, expected
    srun = next(line for line in lines if line.startswith("srun "))
    assert "-m submitit.core._submit" in srun and str(sweep / ".submitit") in srun
    # Each array element runs nlptool's Hydra job with its own overrides.
    with open(sweep / ".submitit" / "4242_1" / "4242_1_submitted.pkl", "rb") as fh:
        delayed = pickle.load(fh)
    overrides = delayed.args[0]
    assert overrides == [
        "model=gpt2",
        "objective=clm",
        "trainer.strategy=fsdp",
        "trainer.lr=0.0003",
    ]
    assert delayed.function.config.hydra.launcher.max_num_timeout == 20


def job_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """What SLURM sets for job 4242 (one sweep job: no array) on one node, one task."""
    return {
        **env,
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
    }


def test_time_limit_signal_checkpoints_requeues_and_the_requeued_job_resumes(straight, tmp_path):  # noqa: F811
    env = fake_cluster(tmp_path)
    sweep = tmp_path / "sweep"
    launcher = start(
        [
            "pretrain", "-m", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.tasks_per_node=1", f"hydra.sweep.dir={sweep}", *RUN,
        ],
        tmp_path,
        env,
    )  # fmt: skip
    try:
        wait_for(sweep / ".submitit" / "4242" / "4242_submitted.pkl", launcher)
        srun = next(x for x in sbatch_lines(tmp_path / "job.sh") if x.startswith("srun "))
        job = [sys.executable, "-u", "-m", "submitit.core._submit", srun.split()[-1]]
        # The job starts; SLURM warns of the time limit at step 12.
        first = start([], tmp_path, job_env(tmp_path, env), argv=job)
        wait_for_step(sweep / "0", 12, first)
        first.send_signal(signal.SIGUSR2)
        out, _ = first.communicate(timeout=300)
        assert "SIGUSR2: stopping after this step and saving a checkpoint" in out, out
        assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
        assert first.returncode != 0  # not finished: SLURM starts it again
        # The requeued job: the same pickled submission, the same run directory.
        second = start([], tmp_path, job_env(tmp_path, env), argv=job)
        out, _ = second.communicate(timeout=600)
        assert second.returncode == 0, out
        assert "Resuming from" in out
        summary, _ = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, summary
    assert_same_run(sweep / "0", straight)
    # The sweep's summary: one job, done, at the last step.
    assert f"Wrote {sweep / 'summary.jsonl'}" in " ".join(summary.split())
    assert (sweep / "summary.jsonl").read_text().count('"status": "done"') == 1


def test_slurm_launcher_without_slurm_is_a_clear_error(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "nlptool", "pretrain", "-m", "hydra/launcher=slurm"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "300"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "sbatch and srun are not on this machine's PATH" in " ".join(proc.stderr.split())
