"""`nlptool convert` and `init=<Hugging Face folder>` through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.interop.convert import load_model
from tests.interop.test_convert import compare, hf_bert_folder, hf_gpt2_folder, vocab_of
from tests.tasks.test_classification import sentiment_rows, write_csv
from tests.tasks.test_ner import ner_sentences
from tests.tasks.test_qa import synthetic_squad, write_json
from tests.test_cli import nlptool, read_metrics

transformers = pytest.importorskip("transformers")


def test_convert_both_ways(tmp_path):
    theirs = hf_bert_folder(tmp_path / "hf", "BertForMaskedLM")
    proc = nlptool("convert", "src=hf", "out=ckpt", "to=nlptool", cwd=tmp_path)
    assert "BertForMaskedLM" in proc.stdout and "nsp_head" in proc.stdout  # fresh heads named
    compare("BertForMaskedLM", load_model(tmp_path / "ckpt"), theirs, vocab_of(tmp_path / "hf"))
    nlptool("convert", "src=ckpt", "out=export", "to=hf", cwd=tmp_path)
    back = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "export")).eval()
    compare("BertForMaskedLM", load_model(tmp_path / "ckpt"), back, vocab_of(tmp_path / "hf"))
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob("*.log"))  # no litter
    again = nlptool("convert", "src=ckpt", "out=export", "to=hf", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "overwrite=true" in again.stderr


def test_convert_errors_are_one_paragraph(tmp_path):
    (tmp_path / "roberta").mkdir()
    (tmp_path / "roberta" / "config.json").write_text('{"model_type": "roberta"}')
    cases = [
        (["src=roberta", "out=x"], ["roberta", "not supported", "BertForSequenceClassification"]),
        (["src=nowhere", "out=x", "to=hf"], ["src=nowhere", "no such file"]),
        (["out=x"], ["needs src="]),
        (["src=roberta", "out=x", "to=onnx"], ["to='onnx'", "nlptool or hf"]),
        (["src=roberta", "out=x", "too=hf"], ["'too'", "Did you mean to"]),
    ]
    for args, needles in cases:
        proc = nlptool("convert", *args, cwd=tmp_path, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        text = " ".join(proc.stderr.split())
        for needle in needles:
            assert needle in text, (args, needle, proc.stderr)


def test_a_trained_checkpoint_exports(tmp_path):
    nlptool(
        "pretrain",
        "trainer=smoke",
        "objective=mlm_nsp",
        "data.max_seq_len=32",
        "tokenizer.vocab_size=500",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    checkpoint = tmp_path / "run" / "checkpoints" / "last"
    nlptool("convert", f"src={checkpoint}", "out=export", "to=hf", cwd=tmp_path)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"]
    theirs = transformers.AutoModelForPreTraining.from_pretrained(str(tmp_path / "export"))
    compare("BertForPreTraining", load_model(checkpoint), theirs.eval(), config["vocab_size"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id


TASKS = {
    "classification": ["task.text_column=review", "task.label_column=stars", "task.max_seq_len=32"],
    "pair_classification": [
        "task.text_column=review",
        "task.text_pair_column=summary",
        "task.label_column=stars",
        "task.max_seq_len=32",
    ],
    "regression": ["task.text_column=review", "task.label_column=score", "task.max_seq_len=32"],
    "ner": ["task.max_seq_len=32"],
    "qa": ["task.train_articles=4", "task.max_seq_len=64", "task.doc_stride=16"],
}


def write_task_files(tmp_path, kind: str) -> list[str]:
    if kind == "pair_classification":
        rows = [(f'{text}","{text.split()[0]}', label) for text, label in sentiment_rows(40, 0)]
        write_csv(tmp_path / "train.csv", rows, ("review", "summary", "stars"))
        write_csv(tmp_path / "dev.csv", rows[:10], ("review", "summary", "stars"))
        return ["task.train_file=train.csv", "task.valid_file=dev.csv"]
    if kind in ("classification", "regression"):
        rows = sentiment_rows(40, 0)
        if kind == "regression":
            rows = [(text, "4.5" if label == "pos" else "0.5") for text, label in rows]
        header = ("review", "stars" if kind == "classification" else "score")
        write_csv(tmp_path / "train.csv", rows, header)
        write_csv(tmp_path / "dev.csv", rows[:10], header)
        return ["task.train_file=train.csv", "task.valid_file=dev.csv"]
    if kind == "ner":
        (tmp_path / "train.txt").write_text(ner_sentences(40, 0))
        (tmp_path / "dev.txt").write_text(ner_sentences(10, 1))
        return ["task.train_file=train.txt", "task.valid_file=dev.txt"]
    write_json(tmp_path / "squad.json", synthetic_squad(6, 0))
    return ["task.train_file=squad.json", "task.valid_file=squad.json"]


@pytest.mark.parametrize("kind", list(TASKS))
def test_finetune_from_a_hugging_face_folder(tmp_path, kind):
    """Every encoder task starts from an imported model: the encoder's weights come across."""
    hf_bert_folder(tmp_path / "hf", "BertForPreTraining", lowercase=False)
    files = write_task_files(tmp_path, kind)
    proc = nlptool(
        "finetune",
        f"task={kind}",
        "init=hf",
        *files,
        *TASKS[kind],
        "trainer.max_steps=2",
        "trainer.batch_size=8",
        "trainer.eval_every=2",
        "trainer.device=cpu",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    assert "Imported" in proc.stdout
    records = read_metrics(tmp_path / "ft")
    assert any("valid/loss" in r for r in records)
    # the task model's encoder started from the HF weights
    theirs = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "hf"))
    tuned = load_model(tmp_path / "ft" / "checkpoints" / "last")
    word = tuned.bert.embeddings.word_embeddings.weight
    source = theirs.bert.embeddings.word_embeddings.weight
    assert word.shape == source.shape
    assert torch.allclose(word, source, atol=0.05)  # two small steps away, not a fresh init


def test_a_hugging_face_gpt2_classifier_evaluates_and_fine_tunes(tmp_path):
    """A GPT2ForSequenceClassification folder: eval gives transformers' predictions on our task
    file, and fine-tuning starts from its weights, score layer included (same labels)."""
    theirs = hf_gpt2_folder(tmp_path / "hf", "GPT2ForSequenceClassification")
    labels = ["negative", "neutral", "positive"]
    rows = [(f"a {'good' if i % 2 else 'bad'} film {i}", labels[i % 3]) for i in range(24)]
    write_csv(tmp_path / "train.csv", rows, ("text", "label"))
    nlptool("eval", "checkpoint=hf", "task=classification", "task.valid_file=train.csv",
            "hydra.run.dir=ev", cwd=tmp_path)  # fmt: skip
    predicted = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    tokenizer.pad_token = tokenizer.eos_token  # (GPT-2 has none; the config pads with it)
    batch = tokenizer([text for text, _ in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = theirs(**batch).logits.softmax(-1)
    for record, row in zip(predicted, probabilities):
        expected = torch.tensor([record["probabilities"][label] for label in labels])
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
    nlptool("finetune", "task=classification", "task.train_file=train.csv",
            "task.valid_file=train.csv", "init=hf", "task.max_seq_len=64", "trainer=smoke",
            "trainer.max_steps=2", "hydra.run.dir=ft", cwd=tmp_path)  # fmt: skip
    tuned = load_model(tmp_path / "ft" / "checkpoints" / "last")
    assert torch.allclose(tuned.score.weight, theirs.score.weight, atol=0.05)
