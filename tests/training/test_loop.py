"""The training loop in process: accumulation equals one big batch, resume is exact, and the
learning-rate schedule has the documented shape."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from nlptool.data.pretraining import MaskingConfig, PretrainingExamples, collate
from nlptool.models import build_model
from nlptool.models.config import ModelConfig
from nlptool.objectives import build_objective
from nlptool.training.config import TrainerConfig
from nlptool.training.loop import Trainer, TrainingJob
from nlptool.training.optim import build_scheduler, lr_factor
from nlptool.training.runtime import make_collate, seed_everything

VOCAB, SPECIALS = 64, np.array([0, 1, 2, 3, 4])  # pad, unk, cls, sep, mask


class FakeTokenizer:
    def save(self, path: Path) -> None:
        path.write_text("{}")


def mlm_job(run_dir: Path, dropout: float, seed: int = 0) -> TrainingJob:
    rng = np.random.default_rng(0)
    blocks = rng.integers(5, VOCAB, size=(40, 14)).tolist()
    masking = MaskingConfig(0.15, 0.8, 0.1, mask_id=4, vocab_size=VOCAB, special_ids=SPECIALS)
    examples = datasets.Dataset.from_dict({"input_ids": blocks})
    data = PretrainingExamples("mlm", examples, seed, masking=masking, cls_id=2, sep_id=3)
    seed_everything(seed)
    model_cfg = ModelConfig(
        arch="bert", num_layers=1, hidden_size=32, num_heads=2, vocab_size=VOCAB,
        max_seq_len=16, dropout=dropout, attention_dropout=dropout,
    )  # fmt: skip
    return TrainingJob(
        model=build_model(model_cfg),
        objective=build_objective("mlm"),
        train_data=data,
        valid_data=data,
        collate=make_collate(collate, pad_id=0),
        tokenizer=FakeTokenizer(),
        config_yaml="{}",
        run_dir=run_dir,
    )


def trainer_cfg(**kw) -> TrainerConfig:
    base = dict(device="cpu", max_steps=6, batch_size=8, lr=1e-2, warmup_steps=2, progress=False)
    return TrainerConfig(**{**base, **kw})


def run_steps(trainer: Trainer, steps: int) -> list[float]:
    batches = trainer.train_batches()
    losses = []
    for _ in range(steps):
        micro = [next(batches) for _ in range(trainer.accumulation)]
        losses.append(float(trainer.train_step(micro)["loss"]))
        trainer.step += 1
        trainer.resolve_pending_check()  # as fit() does before a log, eval or save
    return losses


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    """Micro-batches of 2 (with unequal numbers of masked tokens) give the weights of batches of 8."""
    full = Trainer(trainer_cfg(), mlm_job(tmp_path / "a", dropout=0.0), torch.device("cpu"))
    split = Trainer(
        trainer_cfg(micro_batch_size=2), mlm_job(tmp_path / "b", dropout=0.0), torch.device("cpu")
    )
    assert split.accumulation == 4
    losses_full, losses_split = run_steps(full, 4), run_steps(split, 4)
    assert losses_split == pytest.approx(losses_full, rel=1e-5)
    a, b = params(full.model), params(split.model)
    for name in a:
        if name.endswith("qkv.bias"):
            # The key bias has an exactly zero gradient (softmax ignores a shift shared by all
            # keys): only rounding noise, which AdamW scales up to lr-sized steps. Compare the
            # query and value parts.
            third = a[name].shape[0] // 3
            keep = torch.cat([torch.arange(third), torch.arange(2 * third, 3 * third)])
            a[name], b[name] = a[name][keep], b[name][keep]
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("micro_batch_size", [0, 2])
def test_resume_from_a_checkpoint_is_exact(tmp_path, micro_batch_size):
    """3 steps + save + a new process-like trainer restored from the checkpoint + 4 steps equals 7
    straight steps bit for bit, with dropout on (the RNG state must be restored), mid-epoch (40
    examples, 8 per step: step 3 is inside the first epoch and step 5 starts the second), with and
    without gradient accumulation; and the optimizer and schedule end up identical."""
    cfg = trainer_cfg(max_steps=7, micro_batch_size=micro_batch_size)
    straight = Trainer(cfg, mlm_job(tmp_path / "s", dropout=0.1), torch.device("cpu"))
    losses_straight = run_steps(straight, 7)

    first = Trainer(cfg, mlm_job(tmp_path / "r", dropout=0.1), torch.device("cpu"))
    losses_first = run_steps(first, 3)
    path = first.save()
    torch.manual_seed(999)  # whatever happened in between must not matter
    np.random.seed(999)
    second = Trainer(cfg, mlm_job(tmp_path / "r", dropout=0.1, seed=0), torch.device("cpu"))
    second.restore(path)
    assert second.step == 3
    losses_second = run_steps(second, 4)
    assert losses_first + losses_second == losses_straight
    a, b = params(straight.model), params(second.model)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    opt_a, opt_b = straight.optimizer.state_dict(), second.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for key, state in opt_a["state"].items():
        for field, value in state.items():
            assert torch.equal(value, opt_b["state"][key][field]), (key, field)
    assert straight.scheduler.state_dict() == second.scheduler.state_dict()


def test_evaluate_reports_loss_accuracy_and_perplexity(tmp_path):
    trainer = Trainer(trainer_cfg(), mlm_job(tmp_path, dropout=0.0), torch.device("cpu"))
    metrics = trainer.evaluate()
    assert set(metrics) == {"valid/mlm_loss", "valid/mlm_accuracy", "valid/loss", "valid/ppl"}
    assert metrics["valid/ppl"] == pytest.approx(np.exp(metrics["valid/mlm_loss"]))
    assert metrics["valid/mlm_loss"] == pytest.approx(np.log(VOCAB), rel=0.1)  # untrained


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_schedule_shape(schedule):
    cfg = trainer_cfg(max_steps=100, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1)
    factors = [lr_factor(step, cfg) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10]))  # warm-up rises
    if schedule == "constant":
        assert set(factors[10:]) == {1.0}
    else:
        assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # then decays
        assert lr_factor(100, cfg) == pytest.approx(0.1)
        mid = lr_factor(55, cfg)
        assert mid == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)


class Poisoned:
    """The mlm objective, but the loss of the chosen optimizer steps is NaN."""

    def __init__(self, objective, bad_steps: set[int], trainer_ref: list) -> None:
        self.inner, self.bad_steps, self.trainer_ref = objective, bad_steps, trainer_ref
        self.terms, self.name = objective.terms, objective.name

    def __getattr__(self, name):  # everything else is the real objective's
        return getattr(self.inner, name)

    def counts(self, batch):
        return self.inner.counts(batch)

    def __call__(self, model, batch):
        terms = self.inner(model, batch)
        if self.trainer_ref[0].step + 1 in self.bad_steps:
            for term in terms.values():
                term.loss_sum = term.loss_sum * float("nan")
        return terms


def poisoned_trainer(tmp_path, bad_steps: set[int], checks_on_device=True, **cfg) -> Trainer:
    """A trainer whose loss is NaN at `bad_steps`. checks_on_device=False: a non-fused AdamW,
    checked with a host sync inside the step (the fp16 / no-fused-kernel path)."""
    job = mlm_job(tmp_path, dropout=0.0)
    ref: list = []
    job.objective = Poisoned(job.objective, bad_steps, ref)
    trainer = Trainer(trainer_cfg(**cfg), job, torch.device("cpu"))
    assert trainer.checks_on_device  # fused AdamW on CPU: the default
    if not checks_on_device:
        groups = [{**g, "fused": False} for g in trainer.optimizer.param_groups]
        trainer.optimizer = torch.optim.AdamW(groups)
        trainer.scheduler = build_scheduler(trainer.optimizer, trainer.cfg)
        trainer.checks_on_device = False
    ref.append(trainer)
    return trainer


ON_DEVICE_OR_SYNCED = pytest.mark.parametrize("on_device", [True, False], ids=["device", "sync"])


@ON_DEVICE_OR_SYNCED
def test_nonfinite_loss_stops_before_the_update_by_default(tmp_path, on_device):
    from nlptool.errors import UserError

    trainer = poisoned_trainer(tmp_path, {3}, on_device)
    run_steps(trainer, 2)
    before = params(trainer.model)
    optimizer_steps = trainer.optimizer.state_dict()["state"][0]["step"].item()
    with pytest.raises(UserError, match=r"Non-finite loss nan.*step 3.*trainer.nonfinite=skip"):
        run_steps(trainer, 1)
    after = params(trainer.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was applied
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == optimizer_steps


@ON_DEVICE_OR_SYNCED
def test_nonfinite_skip_counts_logs_and_goes_on(tmp_path, on_device):
    from nlptool.training.loggers import MetricsLog

    trainer = poisoned_trainer(
        tmp_path, {2, 3}, on_device, nonfinite="skip", log_every=1, eval_every=0
    )
    snapshots = []
    original = trainer.train_step

    def step_and_snapshot(micro, *args):
        out = original(micro, *args)
        snapshots.append(params(trainer.model))
        return out

    trainer.train_step = step_and_snapshot
    trainer.fit(MetricsLog(tmp_path / "metrics.jsonl"))
    # steps 2 and 3 changed nothing; the others did
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(snapshots, snapshots[1:])]
    assert same == [True, True, False, False, False]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "train/lr" in r]
    assert [r.get("train/nonfinite_skips", 0) for r in records] == [0, 1, 2, 2, 2, 2]
    # skipped steps stay out of the averages: no NaN is ever logged
    assert [r["step"] for r in records if "train/loss" in r] == [1, 4, 5, 6]
    assert all(np.isfinite(r["train/loss"]) for r in records if "train/loss" in r)
    assert trainer.save().name == "step-6"
    assert trainer.nonfinite_skips == 2


@ON_DEVICE_OR_SYNCED
def test_too_many_nonfinite_steps_in_a_row_stop(tmp_path, on_device):
    from nlptool.errors import UserError

    trainer = poisoned_trainer(
        tmp_path, {2, 3, 4}, on_device, nonfinite="skip", max_nonfinite_skips=3
    )
    with pytest.raises(UserError, match="3 non-finite steps in a row"):
        run_steps(trainer, 5)
    assert trainer.nonfinite_skips == 3


def test_nonfinite_gradient_with_a_finite_loss_is_caught(tmp_path):
    from nlptool.errors import UserError

    trainer = Trainer(trainer_cfg(), mlm_job(tmp_path, dropout=0.0), torch.device("cpu"))
    weight = trainer.model.bert.embeddings.position_embeddings.weight
    weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(UserError, match="gradient norm (nan|inf)"):
        run_steps(trainer, 1)


def test_deterministic_flag_sets_torch_and_reruns_match(tmp_path):
    try:
        first = Trainer(
            trainer_cfg(deterministic=True), mlm_job(tmp_path / "a", 0.1), torch.device("cpu")
        )
        assert torch.are_deterministic_algorithms_enabled()
        losses = run_steps(first, 4)
        second = Trainer(
            trainer_cfg(deterministic=True), mlm_job(tmp_path / "b", 0.1), torch.device("cpu")
        )
        assert run_steps(second, 4) == losses
    finally:
        torch.use_deterministic_algorithms(False)


def test_activation_checkpointing_trains_the_same(tmp_path):
    """Blocks recomputed in the backward pass (dropout on: the RNG is replayed) give the same
    losses and weights as keeping every activation."""
    plain = Trainer(trainer_cfg(), mlm_job(tmp_path / "a", dropout=0.1), torch.device("cpu"))
    cfg = trainer_cfg(activation_checkpointing=True)
    recomputed = Trainer(cfg, mlm_job(tmp_path / "b", dropout=0.1), torch.device("cpu"))
    stacks = [m for m in recomputed.model.modules() if type(m).__name__ == "BlockStack"]
    assert stacks and all(m.checkpointing for m in stacks)
    torch.manual_seed(5)  # the same dropout masks for both runs
    losses_plain = run_steps(plain, 3)
    torch.manual_seed(5)
    assert run_steps(recomputed, 3) == pytest.approx(losses_plain, rel=1e-6)
    a, b = params(plain.model), params(recomputed.model)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
