"""Several processes on CPU (torchrun, gloo): DDP and FSDP take the same steps as one process.

Dropout is off in these runs: dropout masks are drawn per rank, so with it on no two world sizes
could agree; every random choice of the data pipeline (shuffling, masking, NSP pairs) is keyed by
(seed, epoch, example index), which is what makes the equality possible at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_cli import nlptool, read_metrics

# Accumulation on both sides: one process runs 4 micro-batches of 2 per step, each of 2 ranks 2.
BERT = [
    "model=bert-tiny",
    "objective=mlm_nsp",
    "trainer=smoke",
    "trainer.max_steps=6",
    "trainer.schedule=constant",  # (a run cut short at step 3 then takes the same steps)
    "trainer.batch_size=8",
    "trainer.micro_batch_size=2",
    "trainer.log_every=1",
    "trainer.eval_every=3",
    "trainer.save_every=3",
    "trainer.progress=false",
    "model.dropout=0",
    "model.attention_dropout=0",
]
# Tied input and output embeddings: the case FSDP's gathered checkpoints must get right.
GPT = [a for a in BERT if not a.startswith(("model=", "objective="))] + [
    "model=gpt-tiny",
    "objective=clm",
    "tokenizer=bpe",
]


def torchrun(*args: str, cwd: Path, nproc: int = 2, check: bool = True):
    """`torchrun --standalone --nproc_per_node=<nproc> -m nlptool <args>`."""
    launcher = ("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}")
    return nlptool(*args, cwd=cwd, check=check, launcher=launcher, OMP_NUM_THREADS="1")


def write_classification(folder: Path, rows: list[str], train: int) -> tuple[Path, Path]:
    """train.csv (the first `train` rows) and valid.csv (the rest), "text,label" files."""
    paths = folder / "train.csv", folder / "valid.csv"
    for path, part in zip(paths, (rows[:train], rows[train:])):
        path.write_text("text,label\n" + "\n".join(part) + "\n")
    return paths


def by_step(run_dir: Path, keys: tuple[str, ...]) -> dict[tuple[int, str], float]:
    """{(step, key): value} of every record holding the keys."""
    out = {}
    for record in read_metrics(run_dir):
        for key in keys:
            if key in record:
                out[record["step"], key] = record[key]
    return out


TRAIN_KEYS = ("train/loss", "valid/loss")


def assert_same_losses(run: Path, reference: Path, tol: float, keys=TRAIN_KEYS, steps=None):
    ours, theirs = by_step(run, keys), by_step(reference, keys)
    if steps is not None:
        theirs = {k: v for k, v in theirs.items() if k[0] in steps}
        ours = {k: v for k, v in ours.items() if k[0] in steps}
    assert ours.keys() == theirs.keys()
    worst = max(abs(ours[k] - theirs[k]) for k in theirs)
    assert worst <= tol, f"largest difference {worst:.3g} > {tol:g}"


def best_of(run: Path) -> str | None:
    link = run / "checkpoints" / "best"
    return os.readlink(link) if link.is_symlink() else None


@pytest.fixture(scope="module")
def single_bert(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single-bert") / "run"
    nlptool("pretrain", *BERT, f"hydra.run.dir={run}", cwd=run.parent)
    return run


@pytest.fixture(scope="module")
def single_gpt(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single-gpt") / "run"
    nlptool("pretrain", *GPT, f"hydra.run.dir={run}", cwd=run.parent)
    return run


def test_ddp_takes_the_same_steps_as_one_process(single_bert, tmp_path):
    # No hydra.run.dir: the ranks must agree on the timestamped one.
    proc = torchrun("pretrain", *BERT, cwd=tmp_path)
    runs = list((tmp_path / "runs" / "pretrain").iterdir())
    assert len(runs) == 1, runs  # one run directory for both ranks
    run = runs[0]
    assert "ddp, 2 processes" in proc.stdout
    keys = ("train/loss", "train/mlm_loss", "train/nsp_loss", "valid/loss", "valid/mlm_accuracy")
    assert_same_losses(run, single_bert, 1e-5, keys)
    # Rank 0 alone writes: each record once, one copy of Hydra's files.
    assert len(read_metrics(run)) == len(read_metrics(single_bert))
    assert (run / ".hydra" / "config.yaml").is_file()
    # The token count is the global batch's, as in one process.
    last = [r for r in read_metrics(run) if "train/tokens_seen" in r][-1]
    ref = [r for r in read_metrics(single_bert) if "train/tokens_seen" in r][-1]
    assert last["train/tokens_seen"] == ref["train/tokens_seen"]
    ours = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    theirs = load_file(str(single_bert / "checkpoints" / "last" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, atol=1e-5, rtol=0)


def test_ddp_resumes_from_its_checkpoint(single_bert, tmp_path):
    run = tmp_path / "run"
    torchrun("pretrain", *BERT, "trainer.max_steps=3", f"hydra.run.dir={run}", cwd=tmp_path)
    proc = torchrun("pretrain", *BERT, f"hydra.run.dir={run}", cwd=tmp_path)
    assert "Resuming from" in proc.stdout and "at step 3" in proc.stdout
    assert_same_losses(run, single_bert, 1e-5)
    # Each rank's RNG state was saved, for each rank's dropout to go on where it stopped.
    state = torch.load(run / "checkpoints" / "step-3" / "training_state.pt", weights_only=False)
    assert len(state["rng_by_rank"]) == 2


def test_a_ddp_checkpoint_finetunes_in_one_process(tmp_path):
    run = tmp_path / "ddp"
    torchrun("pretrain", *BERT, "trainer.max_steps=3", f"hydra.run.dir={run}", cwd=tmp_path)
    rows = [
        f"a {'good fine great' if i % 2 else 'bad poor awful'} day {i},{i % 2}" for i in range(48)
    ]
    train, valid = write_classification(tmp_path, rows, 32)
    task = [
        "task=classification",
        f"task.train_file={train}",
        f"task.valid_file={valid}",
        f"init={run / 'checkpoints' / 'last'}",
        "trainer=smoke",
        "trainer.progress=false",
    ]
    out = tmp_path / "ft"
    proc = nlptool("finetune", *task, f"hydra.run.dir={out}", cwd=tmp_path)
    assert "Initialised from" in proc.stdout and "one process" in proc.stdout
    assert (out / "checkpoints" / "last" / "model.safetensors").is_file()


def test_ddp_fine_tuning_a_task_matches_one_process(tmp_path):
    words = ["good", "great", "fine", "bad", "poor", "awful", "the", "a", "film", "was", "very"]
    rows = [
        f"{' '.join(words[(i * k) % len(words)] for k in range(1 + i % 7))},{i % 3}"
        for i in range(60)
    ]
    train, valid = write_classification(tmp_path, rows, 44)
    args = [
        "task=classification",
        f"task.train_file={train}",
        f"task.valid_file={valid}",
        *[a for a in BERT if not a.startswith("objective=")],
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    nlptool("finetune", *args, f"hydra.run.dir={one}", cwd=tmp_path)
    torchrun("finetune", *args, f"hydra.run.dir={two}", cwd=tmp_path)
    # Padded batches of different lengths, the task's metrics from every rank's full pass.
    assert_same_losses(two, one, 1e-5, ("train/loss", "valid/loss", "valid/accuracy"))
    # The same best checkpoint: every rank took rank 0's validation figures.
    assert best_of(two) == best_of(one)


def test_fsdp_takes_the_same_steps_and_resumes_on_any_number_of_ranks(single_gpt, tmp_path):
    first = tmp_path / "fsdp"
    fsdp = ["trainer.strategy=fsdp"]
    proc = torchrun(
        "pretrain", *GPT, *fsdp, "trainer.max_steps=3", f"hydra.run.dir={first}", cwd=tmp_path
    )
    assert "fsdp, 2 processes" in proc.stdout
    assert_same_losses(first, single_gpt, 1e-4, steps=range(4))
    # The gathered checkpoint is the single-process format: tied weights stored once.
    saved = load_file(str(first / "checkpoints" / "step-3" / "model.safetensors"))
    reference = load_file(str(single_gpt / "checkpoints" / "step-3" / "model.safetensors"))
    assert saved.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(saved[name], tensor, atol=1e-4, rtol=0)
    step3 = first / "checkpoints" / "step-3"
    # Resumed by FSDP on 2 ranks (its own checkpoint), on 1 rank, and by a plain single process.
    again = tmp_path / "again"
    shutil.copytree(first, again, symlinks=True)
    torchrun("pretrain", *GPT, *fsdp, f"hydra.run.dir={again}", cwd=tmp_path)
    assert_same_losses(again, single_gpt, 1e-4)
    for name, extra in (("one-rank", fsdp), ("single", ["trainer.strategy=single"])):
        run = tmp_path / name
        nlptool("pretrain", *GPT, *extra, f"resume={step3}", f"hydra.run.dir={run}", cwd=tmp_path)
        assert_same_losses(run, single_gpt, 1e-4, steps=range(4, 7))


def test_a_single_process_checkpoint_resumes_under_fsdp(single_gpt, tmp_path):
    run = tmp_path / "run"
    step3 = single_gpt / "checkpoints" / "step-3"
    torchrun(
        "pretrain", *GPT, "trainer.strategy=fsdp", f"resume={step3}", f"hydra.run.dir={run}",
        cwd=tmp_path,
    )  # fmt: skip
    assert_same_losses(run, single_gpt, 1e-4, steps=range(4, 7))


def test_fsdp_with_bf16_gathers_in_bf16_and_trains(single_gpt, tmp_path):
    run = tmp_path / "run"
    args = ["trainer.strategy=fsdp", "trainer.precision=bf16", "trainer.max_steps=3"]
    torchrun("pretrain", *GPT, *args, f"hydra.run.dir={run}", cwd=tmp_path)
    # bf16 weights in the forward: close to the fp32 run, not equal.
    assert_same_losses(run, single_gpt, 0.05, steps=range(4))
    saved = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in saved.values())  # fp32 master weights saved


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["trainer.strategy=single"], "trainer.strategy=single, but torchrun started 2"),
        (["trainer.batch_size=7", "trainer.micro_batch_size=null"], "does not split evenly"),
        (
            ["trainer.batch_size=6", "trainer.micro_batch_size=2"],
            "micro_batch_size=2 does not divide",
        ),
    ],
)
def test_settings_that_do_not_fit_the_processes_are_clear_errors(tmp_path, args, needle):
    proc = torchrun(
        "pretrain", *BERT, *args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, check=False
    )
    assert proc.returncode != 0
    assert needle in " ".join(proc.stderr.split())
    assert "nlptool: error" in proc.stderr
    assert "Error executing job" not in proc.stderr  # (Hydra's words for an uncaught exception)
