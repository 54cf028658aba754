"""Translation: parallel files in, the encoder-decoder trained, sacreBLEU on decoded text out."""

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

LEXICON = {
    "a": "ein", "man": "mann", "woman": "frau", "dog": "hund", "cat": "katze", "sees": "sieht",
    "big": "großer", "small": "kleiner", "red": "rote", "ball": "ball", "runs": "läuft",
}  # fmt: skip


def write_parallel(folder, stem: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    words = list(LEXICON)
    src, tgt = [], []
    for _ in range(n):
        sentence = rng.choices(words, k=rng.randint(3, 6))
        src.append(" ".join(sentence))
        tgt.append(" ".join(LEXICON[w] for w in sentence))
    with gzip.open(folder / f"{stem}.en.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(src) + "\n")
    (folder / f"{stem}.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")


SMALL_MODEL = [
    "model.num_layers=1",
    "model.num_decoder_layers=1",
    "model.hidden_size=64",
    "model.num_heads=2",
    "model.dropout=0.0",
    "model.attention_dropout=0.0",
    "tokenizer.vocab_size=300",
    "tokenizer.min_frequency=1",
]


def test_translation_learns_a_word_by_word_language(tmp_path):
    write_parallel(tmp_path, "train", 400, 0)
    write_parallel(tmp_path, "val", 40, 1)
    nlptool(
        "finetune",
        "task=translation",
        "task.train_file=train",
        "task.valid_file=val",
        "task.source_lang=en",
        "task.target_lang=de",
        "task.beam_size=1",
        *SMALL_MODEL,
        "trainer.device=cpu",
        "trainer.max_steps=150",
        "trainer.batch_size=32",
        "trainer.lr=3e-3",
        "trainer.warmup_steps=10",
        "trainer.eval_every=150",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    final = read_metrics(tmp_path / "ft")[-1]
    assert final["valid/bleu"] > 50, final
    # eval with beam search writes the translations, and BLEU is sacreBLEU's on them
    nlptool(
        "eval",
        f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'best'}",
        "task.beam_size=3",
        "hydra.run.dir=ev",
        cwd=tmp_path,
    )
    import sacrebleu

    rows = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    assert len(rows) == 40 and {"source", "reference", "prediction"} <= set(rows[0])
    expected = sacrebleu.corpus_bleu(
        [r["prediction"] for r in rows], [[r["reference"] for r in rows]]
    )
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["valid"]["bleu"] == pytest.approx(expected.score)
    # nlptool predict (the checkpoint's own greedy decoding) translates new input records
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"text": r["source"]}) + "\n" for r in rows)
    )
    out = nlptool(
        "predict", f"checkpoint={tmp_path / 'ft' / 'checkpoints' / 'best'}", "input=in.jsonl",
        cwd=tmp_path,
    ).stdout  # fmt: skip
    translations = [json.loads(line)["translation"] for line in out.splitlines()]
    assert sacrebleu.corpus_bleu(translations, [[r["reference"] for r in rows]]).score > 50


def test_misaligned_files_are_refused(tmp_path):
    (tmp_path / "train.en").write_text("one\ntwo\n")
    (tmp_path / "train.de").write_text("eins\n")
    cfg = TaskConfig(kind="translation", data_dir=str(tmp_path), train_file="train")
    with pytest.raises(UserError, match="line-aligned"):
        build_task(cfg).read("train")


def test_missing_split_file_is_named(tmp_path):
    cfg = TaskConfig(kind="translation", data_dir=str(tmp_path), train_file="train")
    with pytest.raises(UserError, match=r"train\.en"):
        build_task(cfg).read("train")


def test_multi30k_sizes():
    folder = SHARED_DATA / "multi30k"
    if not folder.is_dir():
        pytest.skip("../shared/data/multi30k is not there")
    cfg = TaskConfig(
        kind="translation", data_dir=str(folder), train_file="train", valid_file="val",
        test_file="test_2016_flickr",
    )  # fmt: skip
    task = build_task(cfg)
    assert [len(task.read(s)) for s in ("train", "valid", "test")] == [29000, 1014, 1000]
