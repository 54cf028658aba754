"""Objectives: loss sums and counts against manual cross-entropies on a tiny real model, and the
gradient-accumulation property (summed loss / global count is independent of the split)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlptool.data.pretraining import IGNORE_INDEX
from nlptool.models import ModelConfig, build_model
from nlptool.objectives import build_objective

VOCAB = 60
PAD = 0


def tiny_model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch,
        num_layers=1,
        hidden_size=32,
        num_heads=2,
        max_seq_len=16,
        vocab_size=VOCAB,
        dropout=0.0,
        attention_dropout=0.0,
    )
    return build_model(cfg)


def mlm_batch(num_masked: list[int], seq_len: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Rows of random ids; row i predicts num_masked[i] positions (at least one per row)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (len(num_masked), seq_len), generator=gen)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, n in enumerate(num_masked):
        positions = torch.randperm(seq_len, generator=gen)[:n]
        labels[row, positions] = ids[row, positions]
        ids[row, positions] = 4  # the "mask" token
    return {"input_ids": ids, "mlm_labels": labels}


def test_mlm_loss_is_the_summed_cross_entropy_of_the_labelled_positions() -> None:
    model = tiny_model("bert")
    batch = mlm_batch([1, 3, 5])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][0, -2:] = 0
    batch["input_ids"][0, -2:] = PAD
    batch["mlm_labels"][0, -2:] = IGNORE_INDEX
    objective = build_objective("mlm")
    term = objective(model, batch)["mlm"]
    logits = model.mlm_logits(model(batch["input_ids"], batch["attention_mask"]))  # (B, T, V)
    labels = batch["mlm_labels"]
    expected = F.cross_entropy(
        logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    torch.testing.assert_close(term.loss_sum, expected)
    selected = labels != IGNORE_INDEX
    assert term.correct == (logits.argmax(-1)[selected] == labels[selected]).sum()
    assert objective.counts(batch)["mlm"] == selected.sum() > 0


@pytest.mark.parametrize(("name", "term"), [("mlm_nsp", "nsp"), ("sop", "sop")])
def test_pair_term_is_the_cross_entropy_of_the_pooled_first_token(name: str, term: str) -> None:
    model = tiny_model("bert")
    batch = mlm_batch([2, 2, 3, 1])
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    batch["token_type_ids"][:, 6:] = 1
    batch[f"{term}_labels"] = torch.tensor([0, 1, 1, 0])
    objective = build_objective(name)
    terms = objective(model, batch)
    assert set(terms) == {"mlm", term} == set(objective.terms)
    hidden = model(batch["input_ids"], None, batch["token_type_ids"])
    pair_logits = model.nsp_logits(model.pool(hidden))  # (B, 2)
    expected = F.cross_entropy(pair_logits, batch[f"{term}_labels"], reduction="sum")
    torch.testing.assert_close(terms[term].loss_sum, expected)
    assert terms[term].correct == (pair_logits.argmax(-1) == batch[f"{term}_labels"]).sum()
    # the MLM term sees the token types too
    labels = batch["mlm_labels"]
    mlm_expected = F.cross_entropy(
        model.mlm_logits(hidden).reshape(-1, VOCAB), labels.reshape(-1), reduction="sum"
    )
    torch.testing.assert_close(terms["mlm"].loss_sum, mlm_expected)
    counts = objective.counts(batch)
    assert counts[term] == 4 and counts["mlm"] == 8


@pytest.mark.parametrize("padded", [False, True])
def test_clm_loss_is_the_shifted_cross_entropy_without_padding(padded: bool) -> None:
    model = tiny_model("gpt")
    ids = torch.randint(1, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids}
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 6:] = 0
        mask[2, 3:] = 0
        ids[mask == 0] = PAD
        batch["attention_mask"] = mask
    objective = build_objective("clm")
    term = objective(model, batch)["clm"]
    logits = model.lm_logits(model(ids, batch.get("attention_mask")))  # (B, T, V)
    expected, correct = torch.tensor(0.0), 0
    for row in range(3):
        n = int(mask[row].sum())  # real tokens: n - 1 predictions
        row_logits, targets = logits[row, : n - 1], ids[row, 1:n]
        expected = expected + F.cross_entropy(row_logits, targets, reduction="sum")
        correct += int((row_logits.argmax(-1) == targets).sum())
    torch.testing.assert_close(term.loss_sum, expected)
    assert term.correct == correct
    assert objective.counts(batch)["clm"] == (mask[:, 1:]).sum() == (9 + 5 + 2 if padded else 27)


def test_micro_batches_give_the_gradient_of_the_whole_batch() -> None:
    """Summing loss_sum / total_count over micro-batches equals one pass over the global batch,
    even when the micro-batches hold different numbers of predictions."""
    model = tiny_model("bert")
    objective = build_objective("mlm")
    first, second = mlm_batch([1, 2], seed=1), mlm_batch([6, 5, 4], seed=2)
    whole = {key: torch.cat([first[key], second[key]]) for key in first}
    total = sum(objective.counts(b)["mlm"] for b in (first, second))
    assert total == objective.counts(whole)["mlm"] == 18

    def gradients(micro_batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        model.zero_grad()
        for batch in micro_batches:
            (objective(model, batch)["mlm"].loss_sum / total).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    accumulated, single = gradients([first, second]), gradients([whole])
    # a plain mean per micro-batch would weigh the 3 predictions of `first` like the 15 of `second`
    assert any(g.abs().max() > 1e-4 for g in single)
    for acc, one in zip(accumulated, single):
        torch.testing.assert_close(acc, one, atol=1e-6, rtol=0)
