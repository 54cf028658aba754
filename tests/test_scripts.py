"""The scripts in scripts/ keep working: a few steps of the Hugging Face comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA


@pytest.mark.parametrize("model,objective", [("gpt-tiny", "clm"), ("bert-tiny", "mlm_nsp")])
def test_compare_hf_runs_a_few_steps(tmp_path, model, objective):
    corpus = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip("tiny Shakespeare is not in ../shared/data")
    out = tmp_path / "curves.json"
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "compare_hf.py"),
            "--model", model, "--objective", objective, "--data", str(corpus),
            "--steps", "4", "--eval-every", "2", "--tolerance", "1.0", "--out", str(out),
            "data.max_seq_len=64", "trainer.batch_size=8", "tokenizer.vocab_size=1000",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert set(result["sides"]) == {"nlptool", "transformers"}
    for side in result["sides"].values():
        assert [record["step"] for record in side["valid"]] == [0, 2, 4]
        assert len(side["train_loss"]) == 4
    assert abs(result["final_rel_diff"]) < 0.1  # a few steps from similar inits: close already
