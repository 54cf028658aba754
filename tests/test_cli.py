"""The CLI end to end, in subprocesses as a user runs it: tiny BERT and GPT runs on CPU, resume,
eval, finetune, and the clear one-paragraph errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TINY = [
    "trainer=smoke",
    "trainer.max_steps=30",
    "trainer.batch_size=16",
    "trainer.micro_batch_size=8",
    "trainer.lr=3e-3",
    "trainer.save_every=10",
    "trainer.eval_every=15",
    "trainer.eval_batches=4",
    "data.max_seq_len=64",
    "tokenizer.vocab_size=2000",
]


def nlptool(
    *args: str, cwd: Path, check: bool = True, launcher: tuple[str, ...] = (), **env_vars: str
) -> subprocess.CompletedProcess:
    """`python [launcher...] -m nlptool args` in cwd (launcher: e.g. torchrun's module and its
    flags); env_vars are added to the environment."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", **env_vars}
    proc = subprocess.run(
        [sys.executable, *launcher, "-m", "nlptool", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"nlptool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def valid_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["valid/loss"] for r in records if "valid/loss" in r}


def test_help_lists_the_verbs(tmp_path):
    out = nlptool("--help", cwd=tmp_path).stdout
    for verb in ("pretrain", "finetune", "eval", "convert"):
        assert verb in out


def test_verb_help_is_hydras(tmp_path):
    out = nlptool("pretrain", "--help", cwd=tmp_path).stdout
    assert "model: " in out and "bert-tiny" in out and "objective:" in out


def test_cfg_job_prints_the_config_and_runs_nothing(tmp_path):
    out = nlptool("pretrain", "model=bert-mini", "--cfg", "job", cwd=tmp_path).stdout
    assert "name: bert-mini" in out and "hidden_size: 256" in out
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("bert")
    nlptool("pretrain", "hydra.run.dir=run", *TINY, cwd=cwd)
    return cwd / "run"


def test_tiny_bert_pretrains_with_falling_loss(bert_run):
    records = read_metrics(bert_run)
    losses = valid_losses(records)
    assert set(losses) == {0, 15, 30}
    assert losses[30] < 0.9 * losses[0]
    train = [r for r in records if "train/loss" in r]
    assert all({"train/lr", "train/tokens_per_s", "train/mfu"} <= set(r) for r in train)
    assert all(0 < r["train/mfu"] < 2 for r in train)  # against a CPU matmul probe
    assert (bert_run / ".hydra" / "config.yaml").is_file()


def test_checkpoint_layout(bert_run):
    ckpts = bert_run / "checkpoints"
    last = ckpts / "last"
    assert last.is_symlink() and os.readlink(last) == "step-30"
    names = {p.name for p in last.iterdir()}
    assert {
        "model.safetensors",
        "config.yaml",
        "tokenizer.json",
        "training_state.pt",
        "trainer_state.json",
        "manifest.json",
    } <= names
    # keep_last=2: step-10 was pruned
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-20", "step-30"]
    assert not list(ckpts.glob(".tmp-*"))


def test_resume_auto_continues_from_the_saved_step(bert_run, tmp_path):
    """Resume from step 20 of a copy of the run: steps 21-30 match the straight run exactly."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(bert_run, copy, symlinks=True)
    shutil.rmtree(copy / "checkpoints" / "step-30")
    (copy / "checkpoints" / "last").unlink()  # as if the run died after saving step 20
    proc = nlptool("pretrain", f"hydra.run.dir={copy}", *TINY, cwd=tmp_path)
    assert "Resuming from" in proc.stdout and "step 20" in proc.stdout
    straight = {r["step"]: r for r in read_metrics(bert_run) if "train/loss" in r}
    resumed = {r["step"]: r for r in read_metrics(copy) if "train/loss" in r}
    assert sorted(resumed) == sorted(straight)
    for step in range(22, 31, 2):
        assert resumed[step]["train/loss"] == pytest.approx(straight[step]["train/loss"], rel=1e-5)
    assert valid_losses(read_metrics(copy))[30] == pytest.approx(
        valid_losses(read_metrics(bert_run))[30], rel=1e-5
    )


def test_resume_refuses_a_changed_model(bert_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(bert_run, copy, symlinks=True)
    proc = nlptool(
        "pretrain", f"hydra.run.dir={copy}", *TINY, "model.num_layers=3", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert "model.num_layers: 2 -> 3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_writes_eval_json(bert_run, tmp_path):
    nlptool(
        "eval",
        f"checkpoint={bert_run}",
        "hydra.run.dir=ev",
        "trainer=smoke",
        "trainer.eval_batches=4",
        "trainer.micro_batch_size=8",
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    final = valid_losses(read_metrics(bert_run))[30]
    assert result["valid"]["loss"] == pytest.approx(final, rel=1e-5)
    assert 0 < result["valid"]["mlm_accuracy"] <= 1


def test_finetune_starts_from_the_checkpoint(bert_run, tmp_path):
    nlptool(
        "finetune",
        f"init={bert_run / 'checkpoints' / 'last'}",
        "hydra.run.dir=ft",
        *TINY,
        "trainer.max_steps=4",
        "trainer.eval_every=0",
        cwd=tmp_path,
    )
    start = valid_losses(read_metrics(tmp_path / "ft"))[0]
    assert start == pytest.approx(valid_losses(read_metrics(bert_run))[30], rel=1e-5)


def test_tiny_gpt_pretrains_on_text_files(tmp_path):
    corpus = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip("tiny Shakespeare is not in ../shared/data")
    nlptool(
        "pretrain",
        "model=gpt-tiny",
        "objective=clm",
        "tokenizer=bpe",
        "data=text",
        f"data.train_files={corpus}",
        "hydra.run.dir=run",
        *TINY,
        cwd=tmp_path,
    )
    losses = valid_losses(read_metrics(tmp_path / "run"))
    assert losses[30] < 0.9 * losses[0]


def test_mlm_nsp_runs_on_gz_jsonl(tmp_path):
    import gzip

    docs = []
    for d in range(60):
        sentences = [
            f"Document {d} sentence {s} talks about topic {d % 7} and item {s}." for s in range(8)
        ]
        docs.append({"text": "\n".join(sentences)})
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(doc) + "\n" for doc in docs)
    nlptool(
        "pretrain",
        "model=bert-tiny",
        "objective=mlm_nsp",
        "data=text",
        "data.train_files=corpus.jsonl.gz",
        "data.valid_fraction=0.2",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "hydra.run.dir=run",
        "trainer=smoke",
        "data.max_seq_len=64",
        cwd=tmp_path,
    )
    final = read_metrics(tmp_path / "run")[-1]
    assert {"valid/mlm_loss", "valid/nsp_loss", "valid/nsp_accuracy", "valid/ppl"} <= set(final)


@pytest.mark.parametrize(
    "args,needles",
    [
        (["model=bert-xxl"], ["model", "bert-tiny", "gpt2"]),
        (["trainer.lrr=1"], ["trainer.lrr", "trainer.lr"]),
        (["trainer.lr=abc"], ["trainer.lr"]),
        (["trainer.lr=-1"], ["trainer.lr"]),
        (["model=gpt-tiny"], ["objective=clm"]),
        (["data=text", "data.train_files=nope/*.txt"], ["data.train_files", "nope/*.txt"]),
        (["tokenizer=pretrained", "tokenizer.path=missing.json"], ["tokenizer.path"]),
        (["resume=does/not/exist"], ["resume", "does/not/exist"]),
    ],
)
def test_user_errors_are_one_clear_message(tmp_path, args, needles):
    proc = nlptool("pretrain", *args, "trainer=smoke", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    message = proc.stderr
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in message


def test_unknown_verb(tmp_path):
    proc = nlptool("pretrian", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "pretrain" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_file_line_is_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": broken\n')
    proc = nlptool(
        "pretrain",
        "data=text",
        "data.train_files=bad.jsonl",
        "trainer=smoke",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert "bad.jsonl" in proc.stderr and "line 2" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Into a pipe or a log file the error is one line, however long its path, and no box.
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("nlptool: error: ")]
    assert f"{tmp_path / 'bad.jsonl'}, line 2: invalid JSON" in line and "│" not in proc.stderr


def test_data_hf_loads_a_local_dataset_by_path(tmp_path):
    """data=hf goes through the real datasets.load_dataset call; here with a local folder."""
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    lines = [f"Line {i} of the corpus says something about subject {i % 11}." for i in range(400)]
    (folder / "train.txt").write_text("\n".join(lines[:360]) + "\n")
    (folder / "validation.txt").write_text("\n".join(lines[360:]) + "\n")
    nlptool(
        "pretrain",
        "data=hf",
        f"data.name={folder}",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "data.max_seq_len=32",
        "trainer=smoke",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    records = read_metrics(tmp_path / "run")
    assert records[-1]["step"] == 8 and "valid/loss" in records[-1]


def test_bf16_autocast_runs_on_cpu(tmp_path):
    nlptool(
        "pretrain",
        "trainer=smoke",
        "trainer.max_steps=2",
        "trainer.precision=bf16",
        "data.max_seq_len=32",
        "tokenizer.vocab_size=2000",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    final = read_metrics(tmp_path / "run")[-1]
    assert final["step"] == 2 and final["valid/loss"] < 20


def test_whole_word_masking_trains_and_needs_wordpiece(tmp_path):
    nlptool("pretrain", "trainer=smoke", "trainer.max_steps=2", "objective.whole_word=true",
            "hydra.run.dir=wwm", cwd=tmp_path)  # fmt: skip
    assert any("train/loss" in r for r in read_metrics(tmp_path / "wwm"))
    proc = nlptool("pretrain", "trainer=smoke", "objective.whole_word=true", "tokenizer=bpe",
                   "hydra.run.dir=bpe", cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "'##' continuations" in proc.stderr
