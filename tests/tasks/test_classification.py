"""Classification, pair classification and regression tasks: reading user files as they come,
learning through the CLI, eval with predictions, and the clear errors for bad task input."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from nlptool.errors import UserError
from nlptool.tasks import build_task
from nlptool.tasks.config import TaskConfig
from tests.conftest import SHARED_DATA
from tests.test_cli import nlptool, read_metrics

POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant"]
NEGATIVE = ["awful", "terrible", "dreadful", "boring", "horrible"]
FILLER = [
    "the",
    "film",
    "about",
    "a",
    "family",
    "and",
    "a",
    "dog",
    "in",
    "the",
    "old",
    "town",
    "was",
]


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, 6) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path, rows, header=("review", "stars")) -> None:
    lines = ([",".join(header)] if header else []) + [f'"{t}",{y}' for t, y in rows]
    path.write_text("\ufeff" + "\r\n".join(lines) + "\r\n")  # BOM and Windows line ends


def test_classification_learns_and_eval_writes_predictions(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(300, 0))
    write_csv(tmp_path / "dev.csv", sentiment_rows(60, 1))
    nlptool(
        "finetune",
        "task=classification",
        "task.train_file=train.csv",
        "task.valid_file=dev.csv",
        "task.text_column=review",
        "task.label_column=stars",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "trainer.max_steps=40",
        "trainer.batch_size=16",
        "trainer.lr=2e-3",
        "trainer.warmup_steps=4",
        "trainer.eval_every=20",
        "trainer.device=cpu",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    records = [r for r in read_metrics(tmp_path / "ft") if "valid/accuracy" in r]
    assert [r["step"] for r in records] == [0, 20, 40]
    assert records[-1]["valid/accuracy"] >= 0.9
    best = tmp_path / "ft" / "checkpoints" / "best"
    assert best.is_symlink()
    nlptool("eval", f"checkpoint={best}", "hydra.run.dir=ev", cwd=tmp_path)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["valid"]["accuracy"] == pytest.approx(max(r["valid/accuracy"] for r in records))
    predictions = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    assert len(predictions) == 60
    assert {"text", "gold", "prediction", "probabilities"} <= set(predictions[0])
    assert set(predictions[0]["probabilities"]) == {"neg", "pos"}


def test_pair_regression_runs_from_headerless_tsv(tmp_path):
    rng = random.Random(0)
    lines = []
    for _ in range(80):
        a = " ".join(rng.sample(FILLER, 5))
        b = " ".join(rng.sample(FILLER, 5))
        score = len(set(a.split()) & set(b.split()))
        lines.append(f"{a}\t{b}\t{score}")
    with gzip.open(tmp_path / "pairs.tsv.gz", "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    nlptool(
        "finetune",
        "task=regression",
        "task.train_file=pairs.tsv.gz",
        "task.valid_file=pairs.tsv.gz",
        "task.header=false",
        "task.text_column=0",
        "task.text_pair_column=1",
        "task.label_column=2",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "trainer=smoke",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    final = read_metrics(tmp_path / "ft")[-1]
    assert {"valid/pearson", "valid/spearman", "valid/loss"} <= set(final)


def task_cfg(tmp_path, **kw) -> TaskConfig:
    base = dict(data_dir=str(tmp_path), train_file="train.csv", valid_file="dev.csv")
    return TaskConfig(**{**base, **kw})


def test_missing_column_names_the_columns_that_exist(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(5, 0))
    task = build_task(task_cfg(tmp_path, text_column="sentence", label_column="stars"))
    with pytest.raises(UserError, match=r"'sentence'.*task\.text_column.*'review', 'stars'"):
        task.read("train")


def test_unknown_label_names_the_known_labels(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(20, 0))
    write_csv(tmp_path / "dev.csv", [("a fine film", "meh")])
    cfg = task_cfg(tmp_path, text_column="review", label_column="stars")
    task = build_task(cfg)
    task.set_labels_from(task.read("train"))
    from nlptool.data.tokenizer import train_tokenizer

    task.set_tokenizer(train_tokenizer("wordpiece", iter(["a fine film"] * 5), 300, 1, True))
    with pytest.raises(UserError, match=r"unknown label 'meh'.*'neg', 'pos'"):
        task.encode(task.read("valid"))


def test_empty_file_is_named(tmp_path):
    (tmp_path / "train.csv").write_text("review,stars\n")
    task = build_task(task_cfg(tmp_path, text_column="review", label_column="stars"))
    with pytest.raises(UserError, match=r"train\.csv holds no records"):
        task.read("train")


def test_missing_file_names_the_key(tmp_path):
    task = build_task(task_cfg(tmp_path))
    with pytest.raises(UserError, match=r"task\.train_file: no such file"):
        task.read("train")


@pytest.mark.parametrize(
    "preset,folder,sizes",
    [
        ("sst2", "sst2", {"train": 67349, "valid": 872}),
        ("stsb", "stsb", {"train": 5749, "valid": 1500}),
        ("chnsenticorp", "chnsenticorp", {"train": 9600, "valid": 1200}),
    ],
)
def test_real_data_readers_match_the_known_sizes(preset, folder, sizes):
    from omegaconf import OmegaConf

    from nlptool.cli import config_dir

    if not (SHARED_DATA / folder).is_dir():
        pytest.skip(f"../shared/data/{folder} is not there")
    yaml = OmegaConf.load(f"{config_dir()}/task/{preset}.yaml")
    cfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(TaskConfig), yaml, {"data_dir": str(SHARED_DATA / folder)}
        )
    )
    task = build_task(cfg)
    for split, size in sizes.items():
        assert len(task.read(split)) == size
