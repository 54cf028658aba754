"""Checkpoints are atomic, found again, validated, and pruned without touching last/best."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nlptool.errors import UserError
from nlptool.training import checkpoint as ckpt


class FakeTokenizer:
    def save(self, path: Path) -> None:
        path.write_text('{"fake": true}')


def save(dir_: Path, step: int, keep_last: int = 3) -> Path:
    model = torch.nn.Linear(3, 2)
    return ckpt.save_checkpoint(
        dir_,
        step,
        model=model,
        config_yaml="a: 1\n",
        tokenizer=FakeTokenizer(),
        training_state={"rng": ckpt.rng_state()},
        trainer_state={"step": step},
        keep_last=keep_last,
    )


def test_save_writes_every_file_and_points_last(tmp_path):
    path = save(tmp_path, 5)
    assert path == tmp_path / "step-5"
    assert os.readlink(tmp_path / "last") == "step-5"
    assert ckpt.is_complete(path)
    assert ckpt.read_checkpoint(path).step == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_keep_last_prunes_old_but_never_best(tmp_path):
    for step in (1, 2):
        save(tmp_path, step)
    os.symlink("step-1", tmp_path / "best")
    for step in (3, 4, 5):
        save(tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-1", "step-4", "step-5"]


def test_truncated_checkpoint_is_skipped_by_auto_resume(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2)
    weights = tmp_path / "step-2" / ckpt.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:10])
    assert not ckpt.is_complete(tmp_path / "step-2")
    assert ckpt.find_latest(tmp_path) == (tmp_path / "step-1").resolve()
    with pytest.raises(UserError, match="incomplete or corrupt"):
        ckpt.resolve_checkpoint(tmp_path / "step-2", "resume")


def test_partial_temporary_folder_is_ignored(tmp_path):
    save(tmp_path, 1)
    partial = tmp_path / ".tmp-step-2-123"
    partial.mkdir()
    (partial / ckpt.WEIGHTS).write_bytes(b"half")
    assert ckpt.find_latest(tmp_path) == (tmp_path / "step-1").resolve()


def test_resolve_accepts_run_dir_and_rejects_others(tmp_path):
    save(tmp_path / "run" / "checkpoints", 3)
    assert ckpt.resolve_checkpoint(tmp_path / "run", "init").name == "step-3"
    with pytest.raises(UserError, match="no such file"):
        ckpt.resolve_checkpoint(tmp_path / "missing", "init")
    with pytest.raises(UserError, match="not an nlptool checkpoint"):
        ckpt.resolve_checkpoint(tmp_path, "init")


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save(tmp_path, 4)
    save(tmp_path, 4)
    assert ckpt.is_complete(tmp_path / "step-4")
    assert os.readlink(tmp_path / "last") == "step-4"
