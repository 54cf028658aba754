"""Every command in the README's ```bash blocks is run here, or skipped for a stated reason, so
the docs cannot rot.

Commands run as written, in a work folder that holds the files they name (my.csv, reviews.jsonl,
corpus/*.txt.gz ...) and the runs their placeholders stand for (`<run>`, `<gpt-run>`,
`<checkpoint>`), with tiny settings merged in: a few steps on CPU, tiny models in place of big
ones, 2 processes for torchrun. A command that needs a GPU, a cluster, the network or a
downloaded model is skipped with the reason; one that uses ../shared/data runs when it is there.
A README command that none of the rules below knows fails the test: add a rule or fix the docs.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

README = REPO / "README.md"

# (pattern, reason): commands that cannot run here. Checked first, in order.
SKIP = [
    (r"^pip install", "installs packages (.ci/run runs the Quickstart install itself)"),
    (r"^python -m pytest", "the test suite itself"),
    (r"^ruff ", "lint, run by CI"),
    (r"^lint-imports", "the import contracts, run by CI"),
    (r"^python scripts/", "a benchmark script (tests/test_scripts.py runs them small)"),
    (r"hydra/launcher=slurm", "needs SLURM (tests/training/test_slurm_launcher.py simulates it)"),
    (r"data=hf|=hf:", "needs the Hugging Face hub"),
    (r"trainer\.device=cuda|trainer=gpu", "needs a GPU"),
    (r"/models/", "needs a downloaded Hugging Face model folder"),
    (r"--nnodes=", "needs several machines"),
    (r"<multi30k-run>", "needs the multi30k run of the command above (../shared/data, minutes)"),
]
# Tiny settings, merged over the command's own (same key: ours wins).
TRAIN = {
    "trainer": "smoke",
    "trainer.max_steps": "2",
    "trainer.device": "cpu",
    "trainer.progress": "false",
    "data.max_seq_len": "32",
    "tokenizer.vocab_size": "1000",
    "task.max_seq_len": "32",
}
TINY_MODELS = {"bert-base": "bert-tiny", "bert-mini": "bert-tiny", "bert-large": "bert-tiny",
               "gpt2": "gpt-tiny", "gpt2-medium": "gpt-tiny", "gpt2-large": "gpt-tiny"}  # fmt: skip
PER_VERB = {
    "pretrain": TRAIN,
    "finetune": TRAIN,
    "eval": {"trainer.device": "cpu", "trainer.eval_batches": "2"},
    "generate": {"max_new_tokens": "5", "device": "cpu"},
    "predict": {"device": "cpu"},
    "convert": {"overwrite": "true"},
}


def readme_commands() -> list[str]:
    """The commands of the README's bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command:
                commands.append(" ".join(command.split()))
    return commands


def skip_reason(command: str) -> str | None:
    for pattern, reason in SKIP:
        if re.search(pattern, command):
            return reason
    if "../shared/data" in command and not SHARED_DATA.is_dir():
        return "uses ../shared/data, which is not here"
    return None


def tiny(command: str, **extra: str) -> str:
    """The command with the tiny settings merged into its nlptool overrides, and a run
    directory of its own (commands started in the same second must not share one)."""
    before, _, after = command.rpartition("nlptool ") if "| nlptool" in command else ("", "", "")
    target = after if before else command
    words = shlex.split(target)
    start = words.index("nlptool") + 1 if "nlptool" in words else 0
    if words[:1] == ["torchrun"]:
        words = [w if not w.startswith("--nproc_per_node") else "--nproc_per_node=2" for w in words]
    verb = next((w for w in words[start:] if w in PER_VERB or w == "models"), None)
    if verb in (None, "models") or "--help" in words or "--cfg" in words:  # (runs nothing)
        return command
    settings = {**PER_VERB[verb], **extra}
    if verb in ("pretrain", "finetune") and not any(w.startswith("task=") for w in words):
        settings.pop("task.max_seq_len")
    if any(w.startswith("task=multi30k") or w.startswith("task=translation") for w in words):
        settings.update({"model": "transformer-tiny"})
    out, seen = [], set()
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key == "model" and value in TINY_MODELS:
            word = f"model={TINY_MODELS[value]}"
        if eq and key in settings:
            word, seen = f"{key}={settings[key]}", seen | {key}
        out.append(word)
    out += [f"{k}={v}" for k, v in settings.items() if k not in seen]
    own = f"readme-runs/{abs(hash(command)) % 10**8}"
    if "-m" in out[start:]:
        out.append(f"hydra.sweep.dir={own}")
    elif verb != "convert" and not any(w.startswith("hydra.run.dir=") for w in out):
        out.append(f"hydra.run.dir={own}")
    joined = " ".join(shlex.quote(w) for w in out)
    return f"{before}nlptool {joined}" if before else joined


def write_inputs(work: Path) -> None:
    """The files the README's commands name."""
    (work / "corpus").mkdir()
    text = "The cat sat on the mat.\nIt was warm.\n\nA dog ran in the park.\nIt barked.\n" * 40
    for n in range(2):
        with gzip.open(work / "corpus" / f"part{n}.txt.gz", "wt") as fh:
            fh.write(text)
    words = {"1": "good fine great lovely", "0": "bad poor awful dull"}
    rows = [(f"a {words[str(i % 2)]} film {i}", str(i % 2)) for i in range(60)]
    for name, header in (("train.csv", "text,label"), ("my.csv", "review,stars")):
        (work / name).write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows[:48]))
    for name, header in (("valid.csv", "text,label"), ("dev.csv", "review,stars")):
        (work / name).write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows[48:]))
    (work / "reviews.jsonl").write_text('{"text": "a lovely film"}\n{"text": "an awful film"}\n')
    play = "\n\n".join(f"KING: the crown is {w} .\nQUEEN: so it is ." for w in ("old", "new") * 30)
    (work / "plays_a.txt").write_text(play)
    (work / "plays_b.txt").write_text(play[: len(play) // 3])
    comments = [{"comment": f"{'you fool' if i % 2 else 'thank you'} {i}", "toxic": i % 2 == 1}
                for i in range(40)]  # fmt: skip
    (work / "comments.jsonl").write_text("".join(json.dumps(c) + "\n" for c in comments))
    pairs = [{"prompt": f"say {w}", "response": f"{w} {w} ."} for w in ("yes", "no", "hi") * 10]
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))


def run(command: str, cwd: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "120",
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> tuple[Path, Path]:
    """A work folder with the README's input files and the runs its placeholders name; shims
    so that `nlptool` and `torchrun` are this checkout's."""
    work = tmp_path_factory.mktemp("readme")
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "nlptool").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nlptool "$@"\n')
    (bin_dir / "torchrun").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run --standalone "$@"\n'
    )
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)
    write_inputs(work)
    setup = [
        "nlptool pretrain hydra.run.dir=runs/pretrain/run",
        "nlptool pretrain model=gpt-tiny objective=clm tokenizer=bpe hydra.run.dir=runs/pretrain/gpt-run",
        "nlptool finetune task=classification task.train_file=train.csv task.valid_file=valid.csv "
        "init=runs/pretrain/run/checkpoints/last hydra.run.dir=runs/finetune/run",
    ]  # fmt: skip
    for command in setup:  # (the fine-tuning long enough to improve: checkpoints/best)
        steps = "40" if "finetune" in command else "2"
        proc = run(
            tiny(command, **{"trainer.max_steps": steps, "trainer.lr": "3e-3"}), work, bin_dir
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, bin_dir


def placeholders(command: str) -> str:
    return (
        command.replace("<gpt-run>", "gpt-run")
        .replace("<run>", "run")
        .replace("<checkpoint>", "runs/pretrain/run/checkpoints/last")
        .replace("../shared/data", str(SHARED_DATA))  # (the README's paths are from the repo)
        .replace("PYTHONPATH=examples/", f"PYTHONPATH={REPO}/examples/")
        .replace("--config-dir examples/", f"--config-dir {REPO}/examples/")
    )


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_test_expects():
    assert len(COMMANDS) >= 30
    for needle in ("nlptool generate", "nlptool predict", "nlptool models", "torchrun"):
        assert any(needle in c for c in COMMANDS), needle


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(work, command):
    reason = skip_reason(command)
    if reason:
        pytest.skip(reason)
    cwd, bin_dir = work
    command = placeholders(command)
    unknown = re.findall(r"<[a-z0-9-]+>", command)
    assert not unknown, f"a placeholder no rule knows: {unknown}; add it to placeholders()"
    proc = run(tiny(command), cwd, bin_dir)
    assert proc.returncode == 0, f"{tiny(command)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if "nlptool predict" in command and "output=" not in command:
        assert json.loads(proc.stdout.splitlines()[0])["label"] in ("0", "1")
