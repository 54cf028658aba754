"""NER: reading CoNLL column files, first-subword labels, IOB2 / IOBES / BMES, learning through the
CLI with eval predictions, and the clear errors for bad task input."""

from __future__ import annotations

import gzip
import json
import random

import pytest
import torch

from nlptool.data.tokenizer import train_tokenizer
from nlptool.errors import UserError
from nlptool.tasks import build_task
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.ner import IGNORE, join_words
from tests.conftest import SHARED_DATA
from tests.test_cli import nlptool, read_metrics

CONLL = """\ufeff-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
.\t.\tO\tO


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def ner_cfg(tmp_path, **kw) -> TaskConfig:
    base = dict(
        name="ner", kind="ner", data_dir=str(tmp_path), train_file="train.txt", valid_file="dev.txt"
    )
    return TaskConfig(**{**base, **kw})


def tokenizer_for(task, raw, vocab_size=200):
    tokenizer = train_tokenizer("wordpiece", task.training_texts(raw), vocab_size, 1, False)
    task.set_tokenizer(tokenizer)
    return tokenizer


def test_reader_skips_docstart_and_blank_lines_in_gzip_with_crlf(tmp_path):
    with gzip.open(tmp_path / "train.txt.gz", "wb") as fh:
        fh.write(CONLL.replace("\n", "\r\n").encode())
    task = build_task(ner_cfg(tmp_path, train_file="train.txt.gz"))
    raw = task.read("train")
    assert raw["tokens"] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
        ["BRUSSELS"],
    ]
    assert raw["tags"] == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert raw["where"][1].endswith("train.txt.gz, line 10")
    task.set_labels_from(raw)
    assert task.labels[0] == "O" and task.labels == ["O", *sorted(task.labels[1:])]
    assert task.scheme == task.cfg.tag_scheme == "IOB2"  # detected and kept for the checkpoint


def test_real_conll2003_sizes():
    from omegaconf import OmegaConf

    from nlptool.cli import config_dir

    folder = SHARED_DATA / "conll2003"
    if not folder.is_dir():
        pytest.skip("../shared/data/conll2003 is not there")
    yaml = OmegaConf.load(f"{config_dir()}/task/conll2003.yaml")
    yaml.pop("defaults", None)  # the preset's choice of tokenizer, not a task key
    cfg = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(TaskConfig), yaml, {"data_dir": str(folder)})
    )
    task = build_task(cfg)
    sizes = {split: len(task.read(split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 14041, "valid": 3250, "test": 3453}
    task.set_labels_from(task.raw["train"])
    assert len(task.labels) == 9 and task.scheme == "IOB2"


class EchoModel(torch.nn.Module):
    """Predicts the gold label at every labelled position (a perfect tagger for the kept words)."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.labels: torch.Tensor | None = None

    def forward(self, input_ids, attention_mask=None):
        return torch.nn.functional.one_hot(self.labels.clamp(min=0), self.num_labels).float()


def evaluate_with(task, model, encoded, tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    task.start_eval(predictions, "valid")
    batch = task.collate([encoded[(0, i)] for i in range(len(encoded))])
    model.labels = batch["labels"]
    task.eval_batch(model, batch)
    metrics = task.end_eval()
    return metrics, [json.loads(line) for line in predictions.open()]


def test_first_subword_carries_the_tag_and_truncated_words_count_as_o(tmp_path):
    (tmp_path / "train.txt").write_text(
        "mrs B-PER\nAnna I-PER\nSmithson I-PER\nsat O\n\nin O\nlondon B-LOC\n"
    )
    (tmp_path / "dev.txt").write_text("mr B-PER\nSmithsonian I-PER\nsat O\nin O\nlondon B-LOC\n")
    task = build_task(ner_cfg(tmp_path))
    task.set_labels_from(task.read("train"))
    tokenizer = tokenizer_for(task, task.raw["train"], vocab_size=60)
    raw = task.read("valid")
    ids, word_ids = tokenizer.encode_words(raw["tokens"])[0]
    assert word_ids.count(1) > 1  # the long name splits into several subwords
    example = task.encode(raw)[(0, 0)]
    labels, word_index = example["labels"].tolist(), example["word_index"].tolist()
    assert example["input_ids"].tolist() == [task.cls_id, *ids, task.sep_id]
    first = [1 + word_ids.index(w) for w in range(5)]  # after [CLS]
    assert [labels[p] for p in first] == [task.labels.index(t) for t in raw["tags"][0]]
    assert [word_index[p] for p in first] == [0, 1, 2, 3, 4]
    assert all(labels[p] == IGNORE for p in range(len(labels)) if p not in first)
    model = EchoModel(len(task.labels))
    metrics, _ = evaluate_with(task, model, task.encode(raw), tmp_path)
    assert metrics["f1"] == 1.0

    # Only [CLS] mr Smithsonian [SEP] fits: "london" (LOC) is cut off, predicted O, so missed.
    task.cfg.max_seq_len = 2 + word_ids.index(2)
    encoded = task.encode(raw)
    metrics, predictions = evaluate_with(task, model, encoded, tmp_path)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 0.5
    assert predictions[0]["prediction"] == ["B-PER", "I-PER", "O", "O", "O"]
    assert predictions[0]["entities"] == [
        {"type": "PER", "start": 0, "end": 1, "text": "mr Smithsonian"}
    ]


def test_iobes_is_detected_and_scored_strictly(tmp_path):
    (tmp_path / "train.txt").write_text(
        "New B-LOC\nYork E-LOC\nis O\nbig O\n\nAnn S-PER\nsings O\n"
    )
    task = build_task(ner_cfg(tmp_path, valid_file="train.txt"))
    task.set_labels_from(task.read("train"))
    assert task.scheme == task.cfg.tag_scheme == "IOBES"
    tokenizer_for(task, task.raw["train"])
    metrics, predictions = evaluate_with(
        task, EchoModel(len(task.labels)), task.encode(task.read("valid")), tmp_path
    )
    assert metrics["f1"] == 1.0
    assert [e["text"] for p in predictions for e in p["entities"]] == ["New York", "Ann"]


def test_bmes_one_character_per_line(tmp_path):
    # A Chinese-style file: one character per line, BMES tags, tab-separated.
    chars = "我在北京大学读书\t王小明是学生"
    tags = ["O", "O", "B-ORG", "M-ORG", "M-ORG", "E-ORG", "O", "O"]
    tags += ["B-PER", "M-PER", "E-PER", "O", "O", "O"]
    lines, tag_iter = [], iter(tags)
    for char in chars:
        lines.append("" if char == "\t" else f"{char}\t{next(tag_iter)}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = build_task(ner_cfg(tmp_path, valid_file="train.txt"))
    raw = task.read("train")
    assert raw["tokens"][0] == list("我在北京大学读书")
    task.set_labels_from(raw)
    assert task.scheme == "BMES"
    tokenizer_for(task, raw)
    metrics, predictions = evaluate_with(
        task, EchoModel(len(task.labels)), task.encode(task.read("valid")), tmp_path
    )
    assert metrics["f1"] == 1.0 and set(metrics) >= {"f1/ORG", "f1/PER"}
    assert predictions[0]["entities"] == [{"type": "ORG", "start": 2, "end": 5, "text": "北京大学"}]
    assert predictions[1]["gold_entities"][0]["text"] == "王小明"
    assert join_words(["New", "York"]) == "New York"


FIRST = ["john", "anna", "peter", "maria", "li", "omar", "sara", "paul", "ines", "tom"]
LAST = ["smith", "jones", "brown", "weber", "rossi", "chen", "khan", "novak", "silva"]
CITIES = ["paris", "london", "berlin", "madrid", "rome", "vienna", "oslo", "lisbon", "prague"]
FILLER = ["the", "team", "met", "a", "friend", "and", "then", "went", "home", "today", "late"]


def ner_sentences(n: int, seed: int) -> str:
    """mr/mrs + one or two capitalised names are PER, city words are LOC, the rest O."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [(w, "O") for w in rng.sample(FILLER, 4)]
        person = [(rng.choice(["mr", "mrs"]), "O"), (rng.choice(FIRST).title(), "B-PER")]
        if rng.random() < 0.5:
            person.append((rng.choice(LAST).title(), "I-PER"))
        city = [("in", "O"), (rng.choice(CITIES), "B-LOC")]
        at = rng.randrange(len(words) + 1)
        words[at:at] = person + city if rng.random() < 0.5 else city + person
        lines += [f"{word} {tag}" for word, tag in words] + [""]
    return "\n".join(lines)


def test_ner_learns_from_scratch_and_eval_writes_entities(tmp_path):
    (tmp_path / "train.txt").write_text(ner_sentences(400, 0))
    (tmp_path / "dev.txt").write_text("-DOCSTART- O\n\n" + ner_sentences(60, 1))
    nlptool(
        "finetune",
        "task=ner",
        "task.train_file=train.txt",
        "task.valid_file=dev.txt",
        "task.max_seq_len=32",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "trainer.max_steps=24",
        "trainer.batch_size=16",
        "trainer.lr=3e-3",
        "trainer.warmup_steps=4",
        "trainer.eval_every=12",
        "trainer.device=cpu",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    records = [r for r in read_metrics(tmp_path / "ft") if "valid/f1" in r]
    assert [r["step"] for r in records] == [0, 12, 24]
    assert records[-1]["valid/f1"] >= 0.7
    best = tmp_path / "ft" / "checkpoints" / "best"
    nlptool("eval", f"checkpoint={best}", "hydra.run.dir=ev", cwd=tmp_path)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["valid"]["f1"] == pytest.approx(max(r["valid/f1"] for r in records))
    assert {"precision", "recall", "f1/PER", "f1/LOC"} <= set(result["valid"])
    predictions = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    assert len(predictions) == 60
    first = predictions[0]
    assert {"tokens", "gold", "prediction", "entities", "gold_entities"} <= set(first)
    assert len(first["prediction"]) == len(first["tokens"])
    entity = first["gold_entities"][0]
    assert entity["text"] == " ".join(first["tokens"][entity["start"] : entity["end"] + 1])
    # nlptool predict on the same sentences as plain text: eval's tags, entities as character spans
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        "".join(json.dumps({"text": " ".join(p["tokens"])}) + "\n" for p in predictions)
    )
    nlptool("predict", f"checkpoint={best}", "input=in.jsonl", "output=out.jsonl", cwd=tmp_path)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").open()]
    assert [r["tags"] for r in out] == [p["prediction"] for p in predictions]
    for record, evaluated in zip(out, predictions):
        assert [e["text"] for e in record["entities"]] == [e["text"] for e in evaluated["entities"]]
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]


def test_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects\n")
    task = build_task(ner_cfg(tmp_path))
    with pytest.raises(UserError, match=r"train\.txt, line 2: 1 column.*task\.tag_column=-1"):
        task.read("train")
    (tmp_path / "train.txt").write_text("EU NNP B-ORG\n")
    with pytest.raises(UserError, match=r"line 1: 3 column.*task\.tag_column=5"):
        build_task(ner_cfg(tmp_path, tag_column=5)).read("train")


def test_unknown_tag_names_the_known_tags(tmp_path):
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects O\n\nPeter B-PER\n")
    (tmp_path / "dev.txt").write_text("\nin O\nParis B-LOC\n")
    task = build_task(ner_cfg(tmp_path))
    task.set_labels_from(task.read("train"))
    tokenizer_for(task, task.raw["train"])
    with pytest.raises(UserError, match=r"dev\.txt, line 3: unknown tag 'B-LOC'.*'O', 'B-ORG'"):
        task.encode(task.read("valid"))


def test_tags_outside_the_scheme_and_empty_files_are_errors(tmp_path):
    (tmp_path / "train.txt").write_text("New B-LOC\nYork E-LOC\n")
    task = build_task(ner_cfg(tmp_path, tag_scheme="IOB2"))
    with pytest.raises(UserError, match=r"'E-LOC' is not a IOB2 tag.*task\.tag_scheme"):
        task.set_labels_from(task.read("train"))
    (tmp_path / "train.txt").write_text("-DOCSTART- O\n\n")
    with pytest.raises(UserError, match=r"train\.txt holds no sentences"):
        build_task(ner_cfg(tmp_path)).read("train")
