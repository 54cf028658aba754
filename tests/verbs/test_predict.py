"""nlptool predict: JSON lines in, the task's answers out; the same answers as nlptool eval."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import nlptool
from tests.verbs.test_generate import flat


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("clf")
    words = {"pos": "good fine great lovely", "neg": "bad poor awful dull"}
    rows = [f"a {words['pos' if i % 2 else 'neg']} day number {i},{'pos' if i % 2 else 'neg'}"
            for i in range(96)]  # fmt: skip
    (cwd / "train.csv").write_text("text,label\n" + "\n".join(rows[:80]) + "\n")
    (cwd / "valid.csv").write_text("text,label\n" + "\n".join(rows[80:]) + "\n")
    nlptool(
        "finetune", "task=classification", "task.train_file=train.csv",
        "task.valid_file=valid.csv", "trainer=smoke", "trainer.max_steps=30",
        "trainer.progress=false", "hydra.run.dir=ft", cwd=cwd,
    )  # fmt: skip
    return cwd


def test_predict_gives_evals_labels_and_probabilities(classifier, tmp_path):
    best = classifier / "ft" / "checkpoints" / "best"
    nlptool("eval", f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'ev'}", cwd=classifier)
    evaluated = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    records = [{"text": e["text"], "id": n} for n, e in enumerate(evaluated)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = nlptool("predict", f"checkpoint={best}", "input=in.jsonl", "batch_size=5", cwd=tmp_path)
    out = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout: the records alone
    assert [r["id"] for r in out] == list(range(len(records)))  # input fields kept, in order
    assert [r["label"] for r in out] == [e["prediction"] for e in evaluated]
    for ours, theirs in zip(out, evaluated):
        assert ours["probabilities"] == pytest.approx(theirs["probabilities"], abs=1e-5)
    assert "records in" in proc.stderr


def test_predict_reads_stdin_and_writes_a_file(classifier, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, "-m", "nlptool", "predict", f"checkpoint={classifier / 'ft'}",
         "input=-", "output=preds.jsonl"],
        input='{"text": "a lovely great day"}\n\n{"text": "an awful dull day"}\n',
        cwd=tmp_path, capture_output=True, text=True, env={**__import__("os").environ,
                                                         "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in (tmp_path / "preds.jsonl").open()]
    assert [r["text"] for r in out] == ["a lovely great day", "an awful dull day"]  # blank skipped
    assert all(r["label"] in ("pos", "neg") for r in out)
    # The same records from a file give the same answers.
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in out))
    again = nlptool("predict", f"checkpoint={classifier / 'ft'}", "input=in.jsonl", cwd=tmp_path)
    assert [json.loads(line) for line in again.stdout.splitlines()] == out


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        ('{"text": "fine"}\n{"text": oops}\n', "in.jsonl, line 2: not valid JSON"),
        ('["a list"]\n', "in.jsonl, line 1: expected a JSON object"),
        ('{"sentence": "fine"}\n', 'in.jsonl, line 1: expected a "text" string field'),
        ("", "input=in.jsonl: no records"),
    ],
)
def test_bad_input_names_the_file_and_line(classifier, tmp_path, lines, needle):
    (tmp_path / "in.jsonl").write_text(lines)
    proc = nlptool(
        "predict", f"checkpoint={classifier / 'ft'}", "input=in.jsonl", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and needle in flat(proc.stderr)


def test_a_pretrained_checkpoint_is_refused(tmp_path):
    nlptool("pretrain", "trainer=smoke", "trainer.max_steps=2", "hydra.run.dir=pt", cwd=tmp_path)
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    proc = nlptool("predict", "checkpoint=pt", "input=in.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "was pretrained, not fine-tuned" in flat(proc.stderr)
