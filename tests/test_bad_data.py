"""Messy user data through the CLI, one fixture file per case (tests/fixtures/bad_data): each
either trains with a note of what was done to the data, or stops with one clear paragraph naming
the file (and line) and what to do; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import nlptool

FIXTURES = Path(__file__).parent / "fixtures" / "bad_data"

PRETRAIN = [
    "trainer=smoke",
    "trainer.max_steps=4",
    "trainer.progress=false",
    "model=bert-tiny",
    "tokenizer.vocab_size=400",
    "data=text",
    "data.max_seq_len=32",
]
CLASSIFY = [
    "task=classification",
    "trainer=smoke",
    "trainer.max_steps=4",
    "trainer.progress=false",
    "model=bert-tiny",
    "tokenizer.vocab_size=400",
    "task.max_seq_len=32",
]


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def one_paragraph_error(proc, *needles: str) -> str:
    """The run failed with exit 2 and a framed message (no traceback) holding every needle."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    flat = " ".join(line.strip("│ ") for line in out.splitlines())
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{out}"
    return flat


def test_empty_file_is_named(tmp_path):
    proc = nlptool(
        "pretrain", *PRETRAIN, f"data.train_files={fixture('empty.txt')}", cwd=tmp_path, check=False
    )
    one_paragraph_error(proc, "No text found in", "empty.txt", "empty or hold only blank lines")


def test_blank_lines_only_separate_documents(tmp_path):
    proc = nlptool(
        "pretrain",
        *PRETRAIN,
        f"data.train_files={fixture('blank_lines.txt')}",
        "data.valid_fraction=0.2",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    # 40 documents of 12 words between runs of blank (and whitespace-only) lines: 8 held out.
    assert "valid" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "last").exists()


def test_non_utf8_is_an_error_with_file_and_line_by_default(tmp_path):
    proc = nlptool(
        "pretrain",
        *PRETRAIN,
        f"data.train_files={fixture('latin1.txt')}",
        cwd=tmp_path,
        check=False,
    )
    one_paragraph_error(
        proc, "latin1.txt, line 7", "bytes e9", "not valid UTF-8", "data.encoding_errors=replace"
    )


def test_non_utf8_replaced_and_counted_on_request(tmp_path):
    proc = nlptool(
        "pretrain",
        *PRETRAIN,
        f"data.train_files={fixture('latin1.txt')}",
        "data.encoding_errors=replace",
        "data.valid_fraction=0.25",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert "1 line with bytes that are not UTF-8, replaced by U+FFFD, in latin1.txt" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "last").exists()


def test_non_utf8_in_a_task_file(tmp_path):
    train = [
        f"task.train_file={fixture('latin1_labels.csv')}",
        f"task.valid_file={fixture('latin1_labels.csv')}",
    ]
    proc = nlptool("finetune", *CLASSIFY, *train, cwd=tmp_path, check=False)
    one_paragraph_error(proc, "latin1_labels.csv, line 7", "not valid UTF-8")
    proc = nlptool(
        "finetune",
        *CLASSIFY,
        *train,
        "data.encoding_errors=replace",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    assert "in latin1_labels.csv (1)" in proc.stdout.replace("\n", " ")


def test_bom_and_windows_line_ends(tmp_path):
    data = fixture("bom_crlf.csv")
    nlptool(
        "finetune",
        *CLASSIFY,
        f"task.train_file={data}",
        f"task.valid_file={data}",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    nlptool(
        "eval",
        "task=classification",
        f"task.valid_file={data}",
        "checkpoint=run",
        "hydra.run.dir=ev",
        "trainer.progress=false",
        cwd=tmp_path,
    )
    rows = [
        json.loads(line) for line in (tmp_path / "ev/predictions.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 40
    # The header's first column was found despite the BOM; no \r left on the labels or texts.
    assert {row["gold"] for row in rows} == {"pos", "neg"}
    assert not any("\r" in row["text"] or "\ufeff" in row["text"] for row in rows)
    assert all(row["text"].endswith(", really") for row in rows)  # quoted commas kept


def test_over_long_texts_are_truncated_with_a_count(tmp_path):
    data = fixture("long_text.csv")
    proc = nlptool(
        "finetune", *CLASSIFY, f"task.train_file={data}", f"task.valid_file={data}", cwd=tmp_path
    )
    flat = " ".join(proc.stdout.split())
    assert "train split: 10 of 40 examples longer than task.max_seq_len=32 tokens were" in flat


def test_missing_column_names_the_columns_there(tmp_path):
    data = fixture("missing_column.csv")
    proc = nlptool(
        "finetune",
        *CLASSIFY,
        f"task.train_file={data}",
        f"task.valid_file={data}",
        cwd=tmp_path,
        check=False,
    )
    one_paragraph_error(
        proc, "missing_column.csv", "no column 'text'", "'review'", "task.text_column"
    )


def test_label_not_seen_in_training(tmp_path):
    proc = nlptool(
        "finetune",
        *CLASSIFY,
        f"task.train_file={fixture('train_labels.csv')}",
        f"task.valid_file={fixture('valid_unseen_label.csv')}",
        cwd=tmp_path,
        check=False,
    )
    one_paragraph_error(
        proc, "valid_unseen_label.csv, line 4", "unknown label 'neutral'", "'neg', 'pos'"
    )


def test_corpus_smaller_than_one_batch_trains_with_a_warning(tmp_path):
    data = fixture("tiny_corpus.txt")
    proc = nlptool(
        "pretrain",
        *PRETRAIN,
        f"data.train_files={data}",
        f"data.valid_files={data}",
        "data.max_seq_len=8",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    flat = " ".join(proc.stdout.split())
    assert "fewer than one batch (trainer.batch_size=8): each step repeats them" in flat
    assert (tmp_path / "run" / "checkpoints" / "step-4").exists()


@pytest.mark.parametrize("max_seq_len", [32])
def test_corpus_too_small_for_one_example(tmp_path, max_seq_len):
    data = fixture("tiny_corpus.txt")
    proc = nlptool(
        "pretrain",
        *PRETRAIN,
        f"data.train_files={data}",
        f"data.valid_files={data}",
        f"data.max_seq_len={max_seq_len}",
        cwd=tmp_path,
        check=False,
    )
    one_paragraph_error(
        proc, "tiny_corpus.txt", "too small for one example", f"data.max_seq_len={max_seq_len}"
    )
