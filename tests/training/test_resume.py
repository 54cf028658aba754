"""What a resume may change: the settings that decide the model, its inputs, the data order or the
optimizer state are refused with the list of differences; the documented safe ones pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlptool.errors import UserError
from nlptool.schema import check_config, to_yaml
from nlptool.training.resume import check_resume_compatible
from tests.test_config import compose_cfg


def saved_and_now(changes: list[str]):
    saved = to_yaml(check_config(compose_cfg("pretrain", [])))
    return saved, check_config(compose_cfg("pretrain", changes))


@pytest.mark.parametrize(
    "changes,needles",
    [
        (["trainer.batch_size=64"], ["trainer.batch_size: 32 -> 64"]),
        (["data.max_seq_len=64"], ["data.max_seq_len: 128 -> 64"]),
        (["model.num_layers=3"], ["model.num_layers: 2 -> 3"]),
        (["tokenizer.vocab_size=9000"], ["tokenizer.vocab_size: 8192 -> 9000"]),
        (["trainer.seed=7", "trainer.lr=5e-4"], ["trainer.seed: 1234 -> 7", "trainer.lr: 0.001"]),
        (["objective.mask_rate=0.2"], ["objective.mask_rate: 0.15 -> 0.2"]),
    ],
)
def test_changes_that_alter_the_run_are_refused_with_the_differences(changes, needles):
    saved, now = saved_and_now(changes)
    with pytest.raises(UserError, match="Cannot resume from ckpt") as err:
        check_resume_compatible(now, saved, Path("ckpt"))
    for needle in needles:
        assert needle in str(err.value)


def test_documented_safe_changes_pass():
    saved, now = saved_and_now(
        [
            "trainer.max_steps=900",
            "trainer.micro_batch_size=8",
            "trainer.eval_every=50",
            "trainer.save_every=100",
            "trainer.log_every=5",
            "trainer.keep_last=5",
            "trainer.device=cpu",
            "trainer.progress=false",
        ]
    )
    check_resume_compatible(now, saved, Path("ckpt"))


@pytest.mark.parametrize("multiple,expected", [(1, 300), (64, 320), (100, 300)])
def test_vocab_size_from_the_tokenizer_is_rounded_up_to_vocab_multiple(multiple, expected):
    from types import SimpleNamespace

    from nlptool.verbs.prepare import model_config_for

    cfg = check_config(compose_cfg("pretrain", [f"model.vocab_multiple={multiple}"]))
    tokenizer = SimpleNamespace(vocab_size=300, pad_id=0)
    assert model_config_for(cfg, tokenizer).vocab_size == expected
