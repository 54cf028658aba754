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


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:10])


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _garble_start(path: Path) -> None:  # same size, header destroyed
    data = bytearray(path.read_bytes())
    data[: min(16, len(data))] = b"\xff" * min(16, len(data))
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated weights": (ckpt.WEIGHTS, _truncate, "model.safetensors is 10 bytes, the manifest"),
    "truncated state": (ckpt.TRAINING_STATE, _truncate, "training_state.pt is 10 bytes"),
    "missing tokenizer": (ckpt.TOKENIZER, Path.unlink, "tokenizer.json is missing"),
    "missing manifest": (ckpt.MANIFEST, Path.unlink, "no manifest.json"),
    "bad weights header": (ckpt.WEIGHTS, _garble_start, "model.safetensors is corrupt"),
    "bit flip in state": (ckpt.TRAINING_STATE, _flip_middle_byte, "training_state.pt is corrupt"),
    "bad trainer state": (ckpt.TRAINER_STATE, _garble_start, "trainer_state.json is unreadable"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_is_detected_and_auto_resume_falls_back(tmp_path, damage):
    name, spoil, reason = DAMAGE[damage]
    save(tmp_path, 1)
    save(tmp_path, 2)
    assert ckpt.problem(tmp_path / "step-2", for_resume=True) is None
    spoil(tmp_path / "step-2" / name)
    assert reason in ckpt.problem(tmp_path / "step-2", for_resume=True)
    path, skipped = ckpt.find_resumable(tmp_path)  # `last` points at the damaged step-2
    assert path == (tmp_path / "step-1").resolve()
    assert [(p.name, why) for p, why in skipped] == [
        ("step-2", ckpt.problem(p, True)) for p, _ in skipped
    ]
    assert reason in skipped[0][1]
    with pytest.raises(UserError, match=r"resume=.*step-2 cannot be used: .*resume=auto"):
        ckpt.resolve_checkpoint(tmp_path / "step-2", "resume", for_resume=True)


def test_a_failed_delete_warns_and_the_next_save_tries_again(tmp_path, monkeypatch, capsys):
    real_rmtree = ckpt.shutil.rmtree

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    for step in (1, 2):
        save(tmp_path, step, keep_last=2)
    monkeypatch.setattr(ckpt.shutil, "rmtree", refuse)
    save(tmp_path, 3, keep_last=2)  # would delete step-1: refused, but the save stands
    assert "Could not delete the old checkpoint" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-1", "step-2", "step-3"]
    assert ckpt.find_latest(tmp_path) == (tmp_path / "step-3").resolve()
    monkeypatch.setattr(ckpt.shutil, "rmtree", real_rmtree)
    save(tmp_path, 4, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-3", "step-4"]


def test_auto_resume_with_no_checkpoint_or_only_broken_ones(tmp_path):
    assert ckpt.find_resumable(tmp_path / "none") == (None, [])
    save(tmp_path, 1)
    _truncate(tmp_path / "step-1" / ckpt.WEIGHTS)
    path, skipped = ckpt.find_resumable(tmp_path)
    assert path is None and [p.name for p, _ in skipped] == ["step-1"]


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path):
    folder = ckpt.write_checkpoint_folder(
        tmp_path / "imported",
        model=torch.nn.Linear(3, 2),
        config_yaml="a: 1\n",
        tokenizer=FakeTokenizer(),
        trainer_state={"step": 0},
    )
    assert ckpt.resolve_checkpoint(folder, "init") == folder.resolve()  # fine for init=
    with pytest.raises(UserError, match=r"no training_state\.pt \(an imported .* init=\)"):
        ckpt.resolve_checkpoint(folder, "resume", for_resume=True)


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
