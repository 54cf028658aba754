"""Pre-emption and crashes in real subprocesses, as on a cluster: SIGTERM and SIGUSR1 stop after
the current step with a checkpoint and the next start continues bit for bit; on SLURM the job
requeues itself; SIGKILL in the middle of a save leaves the previous checkpoint intact; Ctrl-C
twice aborts. (Modelled on Lightning's signal-connector tests and composer's / torchtitan's
checkpoint-resumption tests, with the real CLI instead of mocks where a process can be used.)"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlptool.training import checkpoint as ckpt
from nlptool.training.signals import StopRequested
from tests.conftest import REPO
from tests.test_cli import nlptool, read_metrics

RUN = [
    "trainer=smoke",
    "model=bert-tiny",
    "trainer.max_steps=150",
    "trainer.batch_size=8",
    "trainer.micro_batch_size=4",  # accumulation on: its position must survive the stop too
    "trainer.log_every=1",
    "trainer.eval_every=50",
    "trainer.eval_batches=2",
    "trainer.save_every=0",
    "trainer.progress=false",
    "data.max_seq_len=32",
    "tokenizer.vocab_size=1000",
]


def start(args: list[str], cwd: Path, env: dict | None = None, argv=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", **(env or {})}
    return subprocess.Popen(
        argv or [sys.executable, "-m", "nlptool", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until metrics.jsonl has a training record at or past `step`."""
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early:\n{proc.stdout.read()}")
        if metrics.exists() and any(
            "train/loss" in r and r["step"] >= step for r in _records(metrics)
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} within {timeout}s")


def _records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            records.append(json.loads(line))
    return records


def train_records(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir) if "train/loss" in r}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last" / ckpt.WEIGHTS))


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("straight")
    nlptool("pretrain", *RUN, "hydra.run.dir=run", cwd=cwd)
    return cwd / "run"


def assert_same_run(resumed: Path, straight: Path) -> None:
    """Every step's training record, every validation and the final weights are identical."""
    a, b = train_records(resumed), train_records(straight)
    assert sorted(a) == sorted(b) == list(range(1, 151))
    for step in a:
        for key in ("train/loss", "train/grad_norm", "train/lr", "train/tokens_seen"):
            assert a[step][key] == b[step][key], (step, key)
    valid = [r for r in read_metrics(resumed) if "valid/loss" in r]
    assert valid == [r for r in read_metrics(straight) if "valid/loss" in r]
    wa, wb = final_weights(resumed), final_weights(straight)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def signal_at_step(tmp_path: Path, sig: int, step: int, env: dict | None = None) -> str:
    """Start the RUN command, send `sig` once it has logged `step`; assert the clean exit
    (128 + signal) and return its output."""
    proc = start(["pretrain", *RUN, "hydra.run.dir=run"], tmp_path, env)
    wait_for_step(tmp_path / "run", step, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, out
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_stops_and_resume_continues_bit_for_bit(straight, tmp_path, sig):
    out = signal_at_step(tmp_path, sig, 12)
    name = signal.Signals(sig).name
    assert f"{name}: stopping after this step and saving a checkpoint" in out
    assert "Traceback" not in out and "Requeued" not in out  # not inside SLURM
    stopped = ckpt.find_latest(tmp_path / "run" / "checkpoints")
    step = ckpt.read_checkpoint(stopped).step
    assert 12 <= step < 150 and f"Training stopped at step {step} on {name}" in out
    assert max(train_records(tmp_path / "run")) == step

    again = nlptool("pretrain", *RUN, "hydra.run.dir=run", cwd=tmp_path)
    assert f"at step {step}" in again.stdout and "Resuming from" in again.stdout
    assert_same_run(tmp_path / "run", straight)


def fake_slurm(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of SLURM job 4242, with an `scontrol` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}, calls


def test_sigusr1_inside_slurm_requeues_the_job(tmp_path):
    env, calls = fake_slurm(tmp_path)
    out = signal_at_step(tmp_path, signal.SIGUSR1, 5, env)
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "Requeued SLURM job 4242" in out
    step = ckpt.read_checkpoint(ckpt.find_latest(tmp_path / "run" / "checkpoints")).step
    # The requeued job: the same command in the same environment picks up the checkpoint.
    again = start(["pretrain", *RUN, "hydra.run.dir=run"], tmp_path, env)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert f"at step {step}" in out
    assert calls.read_text().split() == ["requeue", "4242"]  # not requeued again at the end


def test_sigterm_inside_slurm_does_not_requeue(tmp_path):
    """scancel and pre-emption send SIGTERM: save and stop, but leave the queue alone."""
    env, calls = fake_slurm(tmp_path)
    signal_at_step(tmp_path, signal.SIGTERM, 5, env)
    assert not calls.exists()


KILLED_IN_SAVE = """
import sys, time
from pathlib import Path
import torch

ready = Path(sys.argv.pop(1))
real_save = torch.save
saves = []

def save_then_hang(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if str(f).endswith("training_state.pt"):
        saves.append(f)
        if len(saves) == 2:  # the second checkpoint: half written when the kill comes
            Path(f).write_bytes(Path(f).read_bytes()[:100])
            ready.write_text(str(f))
            time.sleep(600)

torch.save = save_then_hang
from nlptool.cli import main
main()
"""


def test_sigkill_in_the_middle_of_a_save_leaves_the_last_checkpoint_good(tmp_path):
    script = tmp_path / "killed_in_save.py"
    script.write_text(KILLED_IN_SAVE)
    ready = tmp_path / "ready"
    args = [*RUN, "trainer.max_steps=30", "trainer.save_every=10", "hydra.run.dir=run"]
    proc = start([], tmp_path, argv=[sys.executable, str(script), str(ready), "pretrain", *args])
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.communicate(timeout=60)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert Path(ready.read_text()).parent.name.startswith(".tmp-step-20-")  # it was mid-save
    assert not (checkpoints / "step-20").exists()  # nothing partial under a final name
    assert os.readlink(checkpoints / "last") == "step-10"
    assert ckpt.problem(checkpoints / "step-10", for_resume=True) is None
    assert ckpt.find_resumable(checkpoints) == ((checkpoints / "step-10").resolve(), [])

    again = nlptool("pretrain", *args, cwd=tmp_path)
    assert "at step 10" in again.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last", "step-20", "step-30"]


def test_ctrl_c_once_stops_after_the_step_twice_aborts():
    with StopRequested() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.requested and stop.signum == signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # more signals change nothing...
        time.sleep(0.01)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # ...but a second Ctrl-C aborts at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_slurm_job_id_of_plain_and_array_jobs(monkeypatch):
    from nlptool.training.signals import slurm_job_id

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert slurm_job_id() == "77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "70_3"  # the array task, not the whole array
