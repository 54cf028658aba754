"""GPT fine-tuned for classification: Hugging Face's GPT2ForSequenceClassification numerics (the
last real token's hidden state, a bias-free score layer), and the task end to end."""

from __future__ import annotations

import json

import pytest
import torch

from nlptool.interop.hf import config_from_hf_gpt2, gpt2_from_hf
from nlptool.models.gpt import GPTForSequenceClassification
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
    (tmp_path / "in.jsonl").write_text('{"text": "a lovely great film"}\n')
    out = nlptool("predict", "checkpoint=ft", "input=in.jsonl", cwd=tmp_path).stdout
    assert set(json.loads(out)["probabilities"]) == {"neg", "pos"}
