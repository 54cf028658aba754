"""The step FLOPs behind MFU match what torch's own FLOP counter sees the models compute."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nlptool.models import build_model
from nlptool.models.bert import BertForSequenceClassification
from nlptool.models.config import ModelConfig
from nlptool.objectives import build_objective
from nlptool.tasks.classification import SequenceClassificationTask
from nlptool.tasks.config import TaskConfig
from nlptool.tasks.translation import TranslationTask
from nlptool.training.flops import device_peak_flops, matmul_flops_per_s, training_flops

B, T, V = 4, 24, 300


def model_cfg(arch: str) -> ModelConfig:
    return ModelConfig(
        arch=arch, num_layers=2, hidden_size=64, num_heads=4, vocab_size=V, max_seq_len=64,
        dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip


def lm_batch(kind: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 15:] = 0  # padding is computed, so it counts
    batch = {"input_ids": ids, "attention_mask": mask}
    if kind != "clm":
        labels = torch.full((B, T), -100)
        chosen = torch.rand(B, T, generator=gen) < 0.2
        labels[chosen] = ids[chosen]
        batch.update(mlm_labels=labels, token_type_ids=torch.zeros_like(ids))
        batch["nsp_labels"] = torch.zeros(B, dtype=torch.long)
        batch["sop_labels"] = torch.ones(B, dtype=torch.long)
    return batch


def forward_flops(model, objective, batch) -> float:
    """The forward FLOPs the trainer counts: the model's blocks and the objective's head."""
    return model.forward_flops(batch) + objective.head_flops(model.cfg, batch)


def counted(fn) -> tuple[int, int]:
    """(forward, backward) FLOPs torch counts; the math SDPA backend makes attention visible."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward:
        loss = fn()
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    return forward.get_total_flops(), backward.get_total_flops()


@pytest.mark.parametrize(
    "arch,kind", [("bert", "mlm"), ("bert", "mlm_nsp"), ("bert", "sop"), ("gpt", "clm")]
)
def test_pretraining_flops_match_torchs_counter(arch, kind):
    cfg = model_cfg(arch)
    model, objective, batch = build_model(cfg), build_objective(kind), lm_batch(kind)
    fwd, bwd = counted(lambda: sum(t.loss_sum for t in objective(model, batch).values()))
    assert forward_flops(model, objective, batch) == fwd
    assert bwd == 2 * fwd
    assert training_flops(model, objective, batch) == 3 * fwd


def test_masked_only_mlm_head_does_less_than_the_full_one():
    cfg, batch, objective = model_cfg("bert"), lm_batch("mlm"), build_objective("mlm")
    ours = objective.head_flops(cfg, batch)
    everywhere = objective.head_flops(cfg, batch, all_positions=True)
    masked = int((batch["mlm_labels"] != -100).sum())
    h = cfg.hidden_size
    assert everywhere - ours == 2 * (B * T - masked) * (h * h + h * V)


def test_classification_and_translation_flops_match_torchs_counter():
    cfg = model_cfg("bert")
    model = BertForSequenceClassification(cfg, num_labels=2)
    batch = lm_batch("mlm")
    fwd, _ = counted(lambda: model(batch["input_ids"], batch["attention_mask"]).sum())
    assert forward_flops(model, SequenceClassificationTask(TaskConfig()), batch) == fwd

    cfg = ModelConfig(
        arch="seq2seq", num_layers=2, num_decoder_layers=1, hidden_size=64, num_heads=4,
        vocab_size=V, max_seq_len=64, dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    model = build_model(cfg)
    src, tgt = torch.randint(5, V, (B, T)), torch.randint(5, V, (B, 11))
    mask = torch.ones(B, T, dtype=torch.long)
    fwd, _ = counted(lambda: model.lm_logits(model(src, mask, tgt)).sum())
    batch = {"input_ids": src, "attention_mask": mask, "decoder_input_ids": tgt}
    task = TranslationTask(TaskConfig(kind="translation"))
    assert forward_flops(model, task, batch) == fwd


def test_peaks():
    assert matmul_flops_per_s(torch.device("cpu"), n=256, reps=2) > 1e8
    assert device_peak_flops(torch.device("cpu"), "fp32") is None  # CPUs are probed instead
