"""The verbs run without Hydra's runtime: a composed config and a RunContext are all they take."""

from __future__ import annotations

from nlptool.verbs import RunContext
from nlptool.verbs.evaluate import evaluate
from nlptool.verbs.train import pretrain
from tests.test_config import compose_cfg

SMALL = [
    "trainer=smoke", "trainer.max_steps=3", "trainer.batch_size=8", "trainer.device=cpu",
    "trainer.progress=false", "data.max_seq_len=32", "tokenizer.vocab_size=500",
]  # fmt: skip


def test_pretrain_then_eval_called_as_plain_functions(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPTOOL_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    history = pretrain(compose_cfg("pretrain", SMALL), RunContext(run))
    assert history["end"]["step"] == 3
    assert (run / "checkpoints" / "last" / "model.safetensors").is_file()
    checkpoint = f"checkpoint={run / 'checkpoints' / 'last'}"
    cfg = compose_cfg("eval", [checkpoint, "trainer=smoke"])  # (the same validation batches)
    result = evaluate(cfg, RunContext(tmp_path / "eval", frozenset({"checkpoint"})))
    # the checkpoint's own data, objective and seed: the same validation loss as at its end
    assert abs(result["valid"]["loss"] - history["end"]["valid/loss"]) < 1e-6
    assert (tmp_path / "eval" / "eval.json").is_file()
