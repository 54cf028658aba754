"""The scripts in scripts/ keep working: the Hugging Face comparison, the task suite and the
benchmark, each on a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA


def run_script(name: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """Run scripts/<name> as a user does; fail with its output's tail if it fails."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("model,objective", [("gpt-tiny", "clm"), ("bert-tiny", "mlm_nsp")])
def test_compare_hf_runs_a_few_steps(tmp_path, model, objective):
    corpus = SHARED_DATA / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        pytest.skip("tiny Shakespeare is not in ../shared/data")
    out = tmp_path / "curves.json"
    run_script(
        "compare_hf.py",
        "--model", model, "--objective", objective, "--data", str(corpus),
        "--steps", "4", "--eval-every", "2", "--tolerance", "1.0", "--out", str(out),
        "data.max_seq_len=64", "trainer.batch_size=8", "tokenizer.vocab_size=1000",
        cwd=tmp_path,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert set(result["sides"]) == {"nlptool", "transformers"}
    for side in result["sides"].values():
        assert [record["step"] for record in side["valid"]] == [0, 2, 4]
        assert len(side["train_loss"]) == 4
    assert abs(result["final_rel_diff"]) < 0.1  # a few steps from similar inits: close already


def test_task_suite_runs_a_tiny_budget(tmp_path):
    if not (SHARED_DATA / "stsb" / "train.tsv.gz").is_file():
        pytest.skip("the shared data sets are not in ../shared/data")
    out = tmp_path / "suite"
    run_script(
        "task_suite.py",
        "--data", str(SHARED_DATA), "--out", str(out), "--tasks", "stsb",
        "--scratch", "stsb", "--scale", "0.002",
        "data.max_seq_len=32", "trainer.device=cpu",
        cwd=tmp_path,
    )  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert result["pretrain"]["steps"] == 3
    rows = {(row["task"], row["init"]): row for row in result["rows"]}
    assert set(rows) == {("stsb", "pretrained"), ("stsb", "scratch")}
    for row in rows.values():
        assert row["metric"] == "pearson" and -1 <= row["valid"] <= 1 and row["steps"] == 2
    corpus = {path.name for path in (out / "corpus").iterdir()}
    assert corpus == {"sst2.txt", "chnsenticorp.txt", "stsb.txt", "conll2003.txt", "squad.txt"}
    assert "| stsb | scratch | pearson" in (out / "results.md").read_text()


def test_bench_measures_both_sides(tmp_path):
    if not (SHARED_DATA / "sst2").is_dir():
        pytest.skip("the shared data sets are not in ../shared/data")
    out = tmp_path / "bench.json"
    proc = run_script(
        "bench.py",
        "--data", str(SHARED_DATA), "--case", "clm", "sst2", "--steps", "3", "--warmup", "1",
        "--batch", "4", "--seq", "32", "--memory", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    results = {r["case"]: r for r in json.loads(out.read_text())}
    assert set(results) == {"clm", "sst2"}
    assert results["clm"]["unit"] == "tokens" and results["sst2"]["unit"] == "examples"
    for r in results.values():
        assert r["steps"] == 3 and r["ratio_q1"] <= r["ratio_median"] <= r["ratio_q3"]
        assert r["data_prep_seconds"] > 0 and r["epoch_seconds_nlptool"] > 0
        for side in ("nlptool", "transformers"):
            assert r[side][f"{r['unit']}_per_s"] > 0
            assert 0 < r[side]["mfu"] < 2
            assert r[side]["memory_mb"] > 0
    assert "ratio median" in proc.stdout
