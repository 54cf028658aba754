"""GPT fine-tuned for classification: Hugging Face's GPT2ForSequenceClassification numerics (the
last real token's hidden state, a bias-free score layer), and the task end to end."""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.data.tokenizer import TextTokenizer, train_tokenizer
from nlptool.interop.hf import config_from_hf_gpt2, gpt2_from_hf
from nlptool.models.gpt import GPTForSequenceClassification
from nlptool.tasks import build_task
from nlptool.tasks.config import TaskConfig
from tests.test_cli import nlptool, read_metrics

transformers = pytest.importorskip("transformers")


def test_logits_are_hugging_faces_on_a_right_padded_batch():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=61, n_positions=40, pad_token_id=0,
        num_labels=3, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    theirs = transformers.GPT2ForSequenceClassification(config).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.3)
    ours = GPTForSequenceClassification(config_from_hf_gpt2(config), 3).eval()
    state = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items()}
    weights = gpt2_from_hf({k: v for k, v in state.items() if k != "score.weight"})
    ours.load_state_dict({**weights, "score.weight": state["score.weight"]}, strict=True)
    ids = torch.randint(1, 61, (3, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    for row, length in ((1, 7), (2, 10)):  # right padding with the pad id
        ids[row, length:], mask[row, length:] = 0, 0
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(ours(ids, mask), expected, atol=1e-5, rtol=1e-5)
        # Pooled at the last real token: the padding after it changes nothing.
        torch.testing.assert_close(ours(ids[1:2, :7]), expected[1:2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vocabulary", ["bpe", "gpt2"])
def test_a_gpt_reads_the_text_as_in_pretraining(tmp_path, vocabulary):
    """No [CLS]-like tokens for a GPT, even when the tokenizer has them (tokenizer=bpe has <s>
    and </s>; GPT-2's own has only end-of-text): text, end-of-text between the pair's texts, and
    that is all."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    rows = [("a good film", "yes", "pos"), ("a bad one", "no", "neg")]
    (tmp_path / "train.csv").write_text("a,b,label\n" + "".join(",".join(r) + "\n" for r in rows))
    tokenizer = train_tokenizer("bpe", iter(["a good film a bad one yes no"] * 5), 300, 1, False)
    if vocabulary == "gpt2":  # the same vocabulary with end-of-text as its only special token
        vocab = {t: i for t, i in tokenizer.tokenizer.get_vocab().items() if not t.startswith("<")}
        vocab = {t: i for i, t in enumerate(sorted(vocab, key=vocab.get))}
        vocab["<|endoftext|>"] = len(vocab)
        bpe = Tokenizer(models.BPE(vocab, []))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer = TextTokenizer(bpe)
    eos = tokenizer.ids["eos"]
    for pair, arch in ((False, "gpt"), (True, "gpt"), (True, "bert")):
        cfg = TaskConfig(name="t", kind="classification", train_file=str(tmp_path / "train.csv"),
                         text_column="a", text_pair_column="b" if pair else None)  # fmt: skip
        task = build_task(cfg, arch)
        raw = task.read("train")
        task.set_labels_from(raw)
        if arch == "bert" and vocabulary == "gpt2":
            continue
        task.set_tokenizer(tokenizer)
        ids = task.encode(raw)[(0, 0)]["input_ids"].tolist()
        a, b = tokenizer.encode_batch(["a good film", "yes"])
        expected = {
            (False, "gpt"): a,
            (True, "gpt"): [*a, eos, *b],
            (True, "bert"): [tokenizer.ids["cls"], *a, tokenizer.ids["sep"], *b, tokenizer.ids["sep"]],
        }[(pair, arch)]  # fmt: skip
        assert ids == expected, (pair, arch)


def test_a_pretrained_gpt_fine_tunes_on_a_classification_task(tmp_path):
    nlptool("pretrain", "model=gpt-tiny", "objective=clm", "tokenizer=bpe", "trainer=smoke",
            "trainer.max_steps=4", "hydra.run.dir=gpt", cwd=tmp_path)  # fmt: skip
    words = {"pos": "good fine great lovely", "neg": "bad poor awful dull"}
    rows = [(f"a {words['pos' if i % 2 else 'neg']} film {i}", "pos" if i % 2 else "neg")
            for i in range(80)]  # fmt: skip
    for name, part in (("train.csv", rows[:64]), ("valid.csv", rows[64:])):
        (tmp_path / name).write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in part))
    nlptool(
        "finetune", "task=classification", "task.train_file=train.csv",
        "task.valid_file=valid.csv", "init=gpt", "trainer=smoke", "trainer.max_steps=30",
        "trainer.lr=3e-3", "hydra.run.dir=ft", cwd=tmp_path,
    )  # fmt: skip
    accuracy = [r["valid/accuracy"] for r in read_metrics(tmp_path / "ft") if "valid/accuracy" in r]
    assert accuracy[-1] >= 0.9  # (a separable toy: it learns it)
    texts = ["a lovely great film", "bad", "a dull, poor and awful film 3"]  # padded as a batch
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = nlptool("predict", "checkpoint=ft", "input=in.jsonl", cwd=tmp_path).stdout
    predicted = [json.loads(line) for line in out.splitlines()]
    assert set(predicted[0]["probabilities"]) == {"neg", "pos"}

    # Exported as GPT2ForSequenceClassification: transformers' tokenizer and model, on a padded
    # batch, give the probabilities nlptool predicts.
    nlptool("convert", "src=ft", "out=hf", "to=hf", cwd=tmp_path)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert type(theirs).__name__ == "GPT2ForSequenceClassification"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).tolist() != [batch["input_ids"].shape[1]] * 3
    with torch.no_grad():
        probabilities = theirs.eval()(**batch).logits.softmax(-1)
    for row, record in zip(probabilities, predicted):
        assert record["label"] == theirs.config.id2label[int(row.argmax())]
        expected = [record["probabilities"][label] for label in ("neg", "pos")]
        assert [theirs.config.id2label[i] for i in range(2)] == ["neg", "pos"]
        torch.testing.assert_close(row, torch.tensor(expected), atol=1e-5, rtol=1e-5)
