"""task=lm: causal-LM fine-tuning on plain text (packed blocks) or prompt/response records
(loss on the response only), perplexity as the metric."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from nlptool.data.tokenizer import train_tokenizer
from nlptool.models import GPTForCausalLM
from nlptool.models.config import ModelConfig
from nlptool.tasks import build_task
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.lm import IGNORE
from tests.test_cli import nlptool, read_metrics
from tests.verbs.test_generate import flat

TEXT = "the king is dead . long live the king .\nthe queen is here .\n"


def lm_task(tmp_path, **kw):
    cfg = TaskConfig(name="lm", kind="lm", data_dir=str(tmp_path), max_seq_len=16, **kw)
    task = build_task(cfg)
    tokenizer = train_tokenizer("bpe", iter([TEXT * 20]), 300, 1, False)
    task.set_tokenizer(tokenizer)
    return task, tokenizer


def test_plain_text_is_packed_into_blocks_with_end_of_text(tmp_path):
    (tmp_path / "train.txt").write_text((TEXT + "\n") * 6)
    task, tokenizer = lm_task(tmp_path, train_file="train.txt")
    raw = task.read("train")
    assert len(raw) == 6  # documents, split at blank lines
    examples = task.encode(raw)
    blocks = [examples[(0, i)]["input_ids"].tolist() for i in range(len(examples))]
    stream = [t for block in blocks for t in block]
    doc = tokenizer.encode_batch([TEXT.strip("\n")])[0] + [task.eos_id]
    assert stream[: 2 * len(doc)] == doc * 2
    assert all(len(b) == 16 for b in blocks[:-1]) and len(blocks[-1]) <= 16
    assert all((examples[(0, i)]["labels"] == examples[(0, i)]["input_ids"]).all()
               for i in range(len(examples)))  # fmt: skip


def test_prompt_tokens_carry_no_loss(tmp_path):
    rows = [{"q": "the king is", "a": "dead ."}, {"q": "long live", "a": "the queen ."}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task, tokenizer = lm_task(
        tmp_path, train_file="train.jsonl", prompt_column="q", response_column="a"
    )
    examples = task.encode(task.read("train"))
    first = examples[(0, 0)]
    prompt = tokenizer.encode_batch(["the king is"])[0]
    response = tokenizer.encode_batch(["dead ."])[0]
    assert first["input_ids"].tolist() == prompt + response + [task.eos_id]
    assert first["labels"].tolist() == [IGNORE] * len(prompt) + response + [task.eos_id]
    batch = task.collate([examples[(0, 0)], examples[(0, 1)]])
    assert (
        int(task.counts(batch)["lm"])
        == len(response) + 1 + len(tokenizer.encode_batch(["the queen ."])[0]) + 1
    )
    # The loss is the cross-entropy at the response positions, nothing else.
    torch.manual_seed(0)
    model = GPTForCausalLM(
        ModelConfig(arch="gpt", num_layers=1, hidden_size=32, num_heads=2, max_seq_len=32,
                    vocab_size=tokenizer.vocab_size)
    ).eval()  # fmt: skip
    with torch.no_grad():
        loss = task(model, batch)["lm"].loss_sum
        logits = model.lm_logits(model(batch["input_ids"], batch.get("attention_mask")))
        targets = batch["labels"][:, 1:]
        expected = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
            ignore_index=IGNORE, reduction="sum",
        )  # fmt: skip
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


@pytest.fixture(scope="module")
def gpt_init(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("gpt-init")
    nlptool(
        "pretrain", "model=gpt-tiny", "objective=clm", "tokenizer=bpe", "trainer=smoke",
        "trainer.max_steps=10", "trainer.progress=false", "hydra.run.dir=run", cwd=cwd,
    )  # fmt: skip
    return cwd / "run"


def test_lm_fine_tuning_lowers_perplexity_and_the_result_generates(gpt_init, tmp_path):
    lines = [f"the {w} of the king is {v} ." for w in ("house", "court", "crown") for v in
             ("old", "new", "lost", "won")]  # fmt: skip
    (tmp_path / "train.txt").write_text("\n\n".join(lines * 10) + "\n")
    (tmp_path / "valid.txt").write_text("\n\n".join(lines[::2]) + "\n")
    nlptool(
        "finetune", "task=lm", "task.train_file=train.txt", "task.valid_file=valid.txt",
        f"init={gpt_init}", "task.max_seq_len=64", "trainer=smoke", "trainer.max_steps=30",
        "trainer.lr=3e-3", "trainer.eval_every=15", "trainer.eval_batches=0",
        "trainer.progress=false", "hydra.run.dir=ft", cwd=tmp_path,
    )  # fmt: skip
    ppl = [r["valid/ppl"] for r in read_metrics(tmp_path / "ft") if "valid/ppl" in r]
    assert len(ppl) == 3 and ppl[-1] < ppl[0] / 3
    best = tmp_path / "ft" / "checkpoints" / "best"
    nlptool("eval", f"checkpoint={best}", "hydra.run.dir=ev", cwd=tmp_path)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["valid"]
    assert result["ppl"] == pytest.approx(min(ppl), rel=1e-4) and "token_accuracy" in result
    out = nlptool("generate", f"checkpoint={best}", "prompt=the crown", "max_new_tokens=6",
                  "temperature=0", cwd=tmp_path).stdout  # fmt: skip
    assert out.startswith("the crown") and len(out) > len("the crown\n")
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    proc = nlptool("predict", f"checkpoint={best}", "input=in.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "nlptool generate" in flat(proc.stderr)


def test_an_encoder_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    proc = nlptool("finetune", "task=lm", "task.train_file=t.txt", "task.valid_file=t.txt",
                   "model=bert-tiny", cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode == 2 and "needs a decoder (model=gpt-*" in flat(proc.stderr)


def test_eval_gives_the_perplexity_of_a_causal_lm_on_any_text_file(gpt_init, tmp_path):
    scores = {}
    for name, text in (("plain", "the king is dead . " * 200), ("odd", "zq xv jj kk qq . " * 200)):
        (tmp_path / f"{name}.txt").write_text(text)
        nlptool(
            "eval", f"checkpoint={gpt_init}", "data=text", f"data.valid_files={name}.txt",
            "trainer.eval_batches=0", f"hydra.run.dir=ev-{name}", cwd=tmp_path,
        )  # fmt: skip
        scores[name] = json.loads((tmp_path / f"ev-{name}" / "eval.json").read_text())["valid"]
    for result in scores.values():
        assert result["ppl"] == pytest.approx(float(torch.tensor(result["clm_loss"]).exp()))
    assert scores["plain"]["ppl"] != scores["odd"]["ppl"]
