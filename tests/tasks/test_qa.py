"""Extractive QA: the SQuAD reader and its article split, windowed encoding that keeps every
answer recoverable through the offsets, n-best span decoding across windows, clear errors for bad
files, and a fine-tune and eval through the CLI."""

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
from nlptool.tasks.qa import best_spans, span_text
from tests.conftest import SHARED_DATA
from tests.test_cli import nlptool, read_metrics

SQUAD = SHARED_DATA / "squad_v1.1"
NAMES = ["Alice", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana"]
PLACES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Dakar", "Perth"]
FILLER = [
    "The weather was mild that year.",
    "Nobody remembers the old bridge.",
    "Trains were often late in winter.",
    "A market opened near the river.",
]


def synthetic_squad(articles: int, seed: int, filler: int = 2) -> dict:
    """SQuAD JSON whose answers are the place after "<name> lives in"."""
    rng = random.Random(seed)
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(2):
            names = rng.sample(NAMES, 3)
            sentences = [f"{n} lives in {rng.choice(PLACES)}." for n in names]
            sentences += [rng.choice(FILLER) for _ in range(filler)]
            rng.shuffle(sentences)
            context = " ".join(sentences)
            qas = []
            for q, name in enumerate(names):
                start = context.index(f"{name} lives in ") + len(f"{name} lives in ")
                place = context[start:].split(".")[0]
                answers = [{"text": place, "answer_start": start}]
                question = f"Where does {name} live?"
                qas.append({"id": f"{a}-{p}-{q}", "question": question, "answers": answers})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    return {"version": "1.1", "data": data}


def write_json(path, document) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        json.dump(document, fh)


def qa_task(tmp_path, name="squad.json.gz", **kw):
    cfg = dict(name="qa", kind="qa", data_dir=str(tmp_path), train_file=name, valid_file=name)
    return build_task(TaskConfig(**{**cfg, **kw}))


def with_tokenizer(task, train):
    task.set_tokenizer(train_tokenizer("wordpiece", task.training_texts(train), 600, 1, True))
    return task


def check_answers_recoverable(task, raw) -> tuple[int, int, int]:
    """Every training answer inside a window decodes, through the offsets, to text containing
    the answer; exactly the answer when it starts and ends on token boundaries. Returns (answers
    inside a window, answers cut inside a token, examples with their answer in no window)."""
    features = task.encode(raw).features
    contexts, answers, starts = raw["context"], raw["answers"], raw["answer_start"]
    inside = cut = 0
    covered = set()
    for feature in features:
        start, end = int(feature["start_positions"]), int(feature["end_positions"])
        if (start, end) == (0, 0):
            continue
        example = int(feature["example"])
        context, answer = contexts[example], answers[example][0]
        char_start, char_end = feature["char_start"].tolist(), feature["char_end"].tolist()
        text = span_text(context, char_start[start], char_end[end])
        inside += 1
        covered.add(example)
        first, last = starts[example], starts[example] + len(answer)
        aligned = (
            first
            in [
                s + len(context[s:e]) - len(context[s:e].lstrip())
                for s, e in zip(char_start, char_end)
            ]
            and last in char_end
        )
        if aligned:
            assert text == answer, (example, text, answer)
        else:
            assert answer in text, (example, text, answer)
            cut += 1
    return inside, cut, len(raw) - len(covered)


# -- reading ------------------------------------------------------------------------------------


@pytest.mark.skipif(not SQUAD.exists(), reason="shared SQuAD data not present")
def test_squad_reader_sizes_split_and_encoding():
    whole = qa_task(SQUAD, "dev-v1.1.json.gz")
    raw = whole.read("valid")
    assert len(raw) == 10_570 and len(set(raw["title"])) == 48
    assert len(set(raw["context"])) == 2_067
    split = qa_task(SQUAD, "dev-v1.1.json.gz", train_articles=40, max_seq_len=128, doc_stride=64)
    train, valid = split.read("train"), split.read("valid")
    assert len(set(train["title"])) == 40 and len(set(valid["title"])) == 8
    assert not set(train["title"]) & set(valid["title"])
    assert len(train) + len(valid) == 10_570
    with_tokenizer(split, train)
    inside, cut, lost = check_answers_recoverable(split, valid)
    assert cut <= 0.01 * inside  # a few gold answers end inside a word ("Japan" of "Japanese")
    assert lost <= 0.005 * len(valid)  # only answers longer than the overlap may fall between


def test_synthetic_windows_keep_every_answer(tmp_path):
    write_json(tmp_path / "squad.json.gz", synthetic_squad(3, 0, filler=12))
    task = qa_task(tmp_path, max_seq_len=24, doc_stride=8)
    raw = task.read("train")
    with_tokenizer(task, raw)
    features = task.encode(raw).features
    assert len(features) > 2 * len(raw)  # long contexts, several windows each
    assert max(len(ids) for ids in features["input_ids"]) == 24
    assert check_answers_recoverable(task, raw)[1:] == (0, 0)


def test_article_split_and_bad_files(tmp_path):
    write_json(tmp_path / "squad.json.gz", synthetic_squad(5, 0))
    task = qa_task(tmp_path, train_articles=3)
    assert set(task.read("train")["title"]) == {"article 0", "article 1", "article 2"}
    assert set(task.read("valid")["title"]) == {"article 3", "article 4"}
    with pytest.raises(UserError, match=r"train_articles=5: .*only 5 articles.*none for valid"):
        qa_task(tmp_path, train_articles=5).read("valid")
    (tmp_path / "broken.json").write_text('{"data": [')
    with pytest.raises(UserError, match=r"broken\.json, line 1: not valid JSON"):
        qa_task(tmp_path, "broken.json").read("train")
    document = synthetic_squad(1, 0)
    del document["data"][0]["paragraphs"][1]["qas"][2]["question"]
    write_json(tmp_path / "missing.json", document)
    with pytest.raises(UserError, match=r"missing\.json, article 0, paragraph 1.*'question'"):
        qa_task(tmp_path, "missing.json").read("train")


# -- decoding -----------------------------------------------------------------------------------


def test_best_span_respects_order_length_and_context():
    start = torch.full((3, 10), -5.0)
    end = torch.full((3, 10), -5.0)
    in_context = torch.ones(3, 10, dtype=torch.bool)
    in_context[:, :2] = False  # [CLS] and a question token
    # 0: the best start lies after the best end: take the best ordered pair instead.
    start[0, 6], end[0, 3], start[0, 2], end[0, 7] = 9.0, 9.0, 4.0, 3.0
    # 1: the best pair is too long (max_answer_len=3); [CLS] scores highest but is not context.
    start[1, 2], end[1, 9], end[1, 4], start[1, 0], end[1, 0] = 8.0, 8.0, 2.0, 20.0, 20.0
    # 2: a one-token answer.
    start[2, 5], end[2, 5] = 1.0, 1.0
    scores, starts, ends = best_spans(start, end, in_context, n_best=20, max_answer_len=3)
    assert starts.tolist() == [2, 2, 5] and ends.tolist() == [3, 4, 5]
    assert scores.tolist() == pytest.approx([13.0, 10.0, 2.0])
    scores, starts, ends = best_spans(start, end, in_context, n_best=1, max_answer_len=3)
    assert scores[0] == float("-inf")  # with one candidate each, row 0 has no valid pair


class ScriptedModel(torch.nn.Module):
    """Returns the given (start, end) logits for each call, in turn."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = iter(outputs)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return next(self.outputs)


def test_eval_merges_windows_across_batches(tmp_path):
    write_json(tmp_path / "squad.json.gz", synthetic_squad(1, 0, filler=12))
    task = qa_task(tmp_path, max_seq_len=24, doc_stride=8, max_answer_len=4)
    raw = task.read("valid").select([0])
    with_tokenizer(task, raw)
    data = task.encode(raw)
    assert len(data) >= 3
    batches = [task.collate([data[(0, window)]]) for window in range(len(data))]  # one each
    outputs = []
    for window, batch in enumerate(batches):
        context = (batch["char_start"][0] >= 0).nonzero().flatten().tolist()
        start = torch.full(batch["input_ids"].shape, -100.0)
        end = torch.full(batch["input_ids"].shape, -100.0)
        if window < 2:  # one-token answers scoring 2 (window 0) and 5 (window 1)
            start[0, context[0]], end[0, context[0]] = 1.0 + 3 * window, 1.0
        else:  # higher logits, but only for a span longer than max_answer_len
            start[0, context[0]], end[0, context[-1]] = 50.0, 50.0
        outputs.append((start, end))
    task.start_eval(tmp_path / "predictions.jsonl", "valid")
    model = ScriptedModel(outputs)
    for batch in batches:
        task.eval_batch(model, batch)
    assert set(task.end_eval()) == {"exact_match", "f1"}
    record = json.loads((tmp_path / "predictions.jsonl").read_text())
    offsets = batches[1]["char_start"][0], batches[1]["char_end"][0]
    token = int((offsets[0] >= 0).nonzero()[0, 0])
    expected = span_text(raw[0]["context"], int(offsets[0][token]), int(offsets[1][token]))
    assert record["prediction"] == expected and record["score"] == pytest.approx(5.0)
    assert record["gold"] == raw[0]["answers"] and record["question"] == raw[0]["question"]


# -- the CLI ------------------------------------------------------------------------------------


def test_qa_finetunes_and_eval_writes_predictions(tmp_path):
    write_json(tmp_path / "squad.json.gz", synthetic_squad(24, 0))
    nlptool(
        "finetune",
        "task=qa",
        "task.train_file=squad.json.gz",
        "task.valid_file=squad.json.gz",
        "task.train_articles=20",
        "task.max_seq_len=64",
        "task.doc_stride=16",
        "tokenizer.vocab_size=300",
        "tokenizer.min_frequency=1",
        "trainer.max_steps=20",
        "trainer.batch_size=16",
        "trainer.lr=2e-3",
        "trainer.warmup_steps=3",
        "trainer.eval_every=10",
        "trainer.device=cpu",
        "hydra.run.dir=ft",
        cwd=tmp_path,
    )
    records = [r for r in read_metrics(tmp_path / "ft") if "valid/f1" in r]
    assert [r["step"] for r in records] == [0, 10, 20]
    assert all(0 <= r["valid/exact_match"] <= r["valid/f1"] <= 100 for r in records)
    best = tmp_path / "ft" / "checkpoints" / "best"
    nlptool("eval", f"checkpoint={best}", "hydra.run.dir=ev", cwd=tmp_path)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["valid"]["f1"] == pytest.approx(max(r["valid/f1"] for r in records))
    predictions = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").open()]
    assert len(predictions) == 4 * 2 * 3  # 4 articles x 2 paragraphs x 3 questions
    assert {"id", "question", "gold", "prediction", "score"} <= set(predictions[0])
    # nlptool predict on the same questions: eval's answers, with their character spans
    contexts = {
        qa["id"]: paragraph["context"]
        for article in synthetic_squad(24, 0)["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }
    inputs = [{"question": p["question"], "context": contexts[p["id"]]} for p in predictions]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inputs))
    out = nlptool("predict", f"checkpoint={best}", "input=in.jsonl", cwd=tmp_path).stdout
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["answer"] for a in answers] == [p["prediction"] for p in predictions]
    for answer, evaluated in zip(answers, predictions):
        assert answer["context"][answer["start"] : answer["end"]] == answer["answer"]
        assert answer["score"] == pytest.approx(evaluated["score"], abs=1e-3)
