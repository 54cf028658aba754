"""Custom components from a module outside nlptool (examples/custom_components/mylab), chosen by
`_target_`, trained through the CLI; a wrong target is one clear paragraph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_cli import read_metrics
from tests.verbs.test_generate import flat

EXAMPLE = REPO / "examples" / "custom_components"


def run(*args, cwd, check=True):
    """nlptool in `cwd` with the example's folder as the working directory's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "nlptool", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def lab(tmp_path):
    """A working directory holding the user's package (found there, not through PYTHONPATH)."""
    shutil.copytree(EXAMPLE / "mylab", tmp_path / "mylab")
    return tmp_path


def test_a_custom_objective_pretrains(lab):
    run("pretrain", "objective._target_=mylab.objectives.SpanMasking", "+objective.params.span=3",
        "trainer=smoke", "trainer.max_steps=6", "hydra.run.dir=run", cwd=lab)  # fmt: skip
    records = read_metrics(lab / "run")
    assert [r["step"] for r in records if "train/mlm_loss" in r] == [2, 4, 6]
    assert "valid/ppl" in records[-1]
    # The examples are spans, the same for the same key.
    sys.path.insert(0, str(lab))
    try:
        from mylab.objectives import SpanMasking

        from nlptool.data.tokenizer import TextTokenizer

        tokenizer = TextTokenizer.load(lab / "run" / "checkpoints" / "last")
        segments = [list(range(10, 100)), list(range(100, 200))]  # one document, two sentences
        docs = __import__("datasets").Dataset.from_dict({"segments": [segments]})
        examples = SpanMasking(span=4).build_examples(docs, tokenizer, 64, seed=1, valid=False)
        item = examples[(0, 0)]
        masked = np.flatnonzero(item["mlm_labels"] != -100)
        runs = np.split(masked, np.flatnonzero(np.diff(masked) != 1) + 1)
        assert all(len(r) >= 4 or r[-1] == len(item["input_ids"]) - 2 for r in runs)  # (spans)
        assert np.array_equal(examples[(0, 0)]["input_ids"], item["input_ids"])
    finally:
        sys.path.remove(str(lab))
        for name in [m for m in sys.modules if m.startswith("mylab")]:
            del sys.modules[name]


def test_a_custom_task_fine_tunes_and_evaluates(lab):
    words = {True: "you idiot you fool awful", False: "thanks a lot kind words"}
    rows = [{"comment": f"{words[i % 3 == 0]} {i}", "toxic": i % 3 == 0} for i in range(90)]
    (lab / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:72]))
    (lab / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[72:]))
    task = ["task._target_=mylab.tasks.Toxicity", "task.name=toxicity",
            "task.train_file=train.jsonl", "task.valid_file=valid.jsonl"]  # fmt: skip
    run("finetune", *task, "trainer=smoke", "trainer.max_steps=20", "trainer.lr=3e-3",
        "hydra.run.dir=ft", cwd=lab)  # fmt: skip
    final = [r for r in read_metrics(lab / "ft") if "valid/f1" in r][-1]
    assert {"valid/f1", "valid/accuracy", "valid/precision"} <= set(final)
    run("eval", "checkpoint=ft", "hydra.run.dir=ev", cwd=lab)  # the checkpoint rebuilds the task
    result = json.loads((lab / "ev" / "eval.json").read_text())["valid"]
    assert result["f1"] == pytest.approx(final["valid/f1"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["objective._target_=nolab.objectives.Span"], "no module named 'nolab'"),
        (["objective._target_=mylab.objectives.Spam"], "mylab.objectives has no 'Spam' (its "
         "classes: SpanExamples, SpanMasking)"),
        (["objective._target_=mylab.objectives.SpanMasking", "+objective.params.width=3"],
         "could not construct it with (width=...)"),
        (["objective._target_=mylab.objectives.SpanMasking", "+objective.params.span=0"],
         "could not construct it" ),
        (["objective._target_=collections.OrderedDict"],
         "does not fit the contract of nlptool.objectives.base.CustomObjective: it has no name, "
         "terms, perplexity_term, counts, __call__, build_examples, collate"),
        (["objective._target_=SpanMasking"], "expected a dotted path, module.Class"),
    ],
)  # fmt: skip
def test_a_wrong_target_is_one_clear_paragraph(lab, args, needle):
    proc = run("pretrain", *args, "trainer=smoke", "trainer.max_steps=2", cwd=lab, check=False)
    assert proc.returncode == 2, proc.stderr
    message = flat(proc.stderr)
    assert needle in message and "Traceback" not in proc.stderr
