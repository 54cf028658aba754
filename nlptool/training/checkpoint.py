"""Checkpoints: written atomically, found again on resume, pruned to the last k.

Layout of `<run_dir>/checkpoints/`:

    step-<N>/model.safetensors   weights (tied tensors stored once)
    step-<N>/config.yaml         the full composed config, plain YAML
    step-<N>/tokenizer.json
    step-<N>/training_state.pt   optimizer, scheduler, grad scaler, RNG states
    step-<N>/trainer_state.json  step, tokens seen, metrics
    step-<N>/manifest.json       written last: every file with its size
    last -> step-<N>             symlink to the newest complete checkpoint

A checkpoint is written into a hidden temporary folder and renamed into place only when every file
is on disk, so a crash or Ctrl-C during a save never leaves a partial folder under a final name,
and the previous checkpoint stays as it was.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, load_model, save_file, save_model

from nlptool.console import console
from nlptool.errors import UserError

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer.json"
TRAINING_STATE = "training_state.pt"
TRAINER_STATE = "trainer_state.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    *,
    model: torch.nn.Module | dict[str, torch.Tensor],
    config_yaml: str,
    tokenizer,
    training_state: dict[str, Any],
    trainer_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write `step-<step>` atomically, point `last` at it, prune old ones. Returns its path."""
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = write_checkpoint_folder(
        checkpoints_dir / f"step-{step}",
        model=model,
        config_yaml=config_yaml,
        tokenizer=tokenizer,
        trainer_state=trainer_state,
        training_state=training_state,
    )
    point_link(checkpoints_dir / "last", final.name)
    _fsync_dir(checkpoints_dir)
    prune(checkpoints_dir, keep_last)
    remove_leftovers(checkpoints_dir)
    return final


def remove_leftovers(checkpoints_dir: Path) -> None:
    """Delete the hidden half-written folders of saves that were killed (other processes')."""
    own = f"-{os.getpid()}"
    for path in checkpoints_dir.iterdir():
        if not path.name.startswith((".tmp-", ".old-", ".last-", ".best-")):
            continue
        if path.name.endswith(own):
            continue
        if path.is_symlink():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def write_checkpoint_folder(
    final: Path,
    *,
    model: torch.nn.Module | dict[str, torch.Tensor],
    config_yaml: str,
    tokenizer,
    trainer_state: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write one checkpoint folder atomically: into a hidden sibling, fsynced, then renamed to
    `final` (replacing an older folder of that name). Without a training state it is a
    weights-only checkpoint (an import), good for init= and eval but not for resuming. `model` is
    a module, or a state dict with each tied tensor once (FSDP's gathered weights)."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if isinstance(model, dict):
        save_file({k: v.contiguous() for k, v in model.items()}, str(tmp / WEIGHTS))
    else:
        save_model(model, str(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(config_yaml)
    tokenizer.save(tmp / TOKENIZER)
    if training_state is not None:
        torch.save(training_state, tmp / TRAINING_STATE)
    (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2, sort_keys=True))
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
    step = int(trainer_state.get("step", 0))
    (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=2))
    for path in tmp.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (after a resume): swap the old one out
        old = parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(parent)
    return final


def point_link(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` (a sibling's name), atomically."""
    tmp = link.with_name(f".{link.name}-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)


def step_of(path: Path) -> int | None:
    match = STEP_DIR.match(path.name)
    return int(match.group(1)) if match else None


def prune(checkpoints_dir: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last checkpoints; never the targets of last or best."""
    protected = {
        (checkpoints_dir / name).resolve()
        for name in ("last", "best")
        if (checkpoints_dir / name).is_symlink()
    }
    steps = sorted(
        (p for p in checkpoints_dir.iterdir() if step_of(p) is not None), key=step_of, reverse=True
    )
    for path in steps[keep_last:]:
        if path.resolve() in protected:
            continue
        try:
            shutil.rmtree(path)
        except OSError as err:  # a failed delete must not stop training: say so and go on
            console.print(
                f"[yellow]Could not delete the old checkpoint {path} ({err}); training goes on, "
                "and the next save tries again.[/]"
            )


def problem(path: Path, for_resume: bool = False) -> str | None:
    """Why the checkpoint folder `path` cannot be used, or None when it can.

    Checks that the manifest is there and readable, that every file it lists exists with the
    recorded size (a truncated or missing file), that the files a checkpoint needs are among
    them, and that the small ones parse. With `for_resume`, also the structure of the weights
    (the safetensors header against the file) and of the training state (every member of the
    torch zip archive against its CRC), which costs one read of those files.
    """
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:
        return f"no {MANIFEST} (not a finished checkpoint)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable"
    for name, size in files.items():
        try:
            actual = (path / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} is {actual:,} bytes, the manifest says {size:,} (truncated or changed)"
    needed = [WEIGHTS, CONFIG, TOKENIZER, TRAINER_STATE] + ([TRAINING_STATE] if for_resume else [])
    absent = [name for name in needed if name not in files]
    if absent:
        what = " (an imported or exported model: use it with init=)" if for_resume else ""
        return f"it has no {', '.join(absent)}{what}"
    try:
        json.loads((path / TRAINER_STATE).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{TRAINER_STATE} is unreadable"
    if for_resume:
        return _weights_problem(path / WEIGHTS) or _training_state_problem(path / TRAINING_STATE)
    return None


def _weights_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            weights.keys()
    except Exception as err:  # safetensors raises its own error types for a bad header
        return f"{path.name} is corrupt ({err})"
    return None


def _training_state_problem(path: Path) -> str | None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"{path.name} is corrupt ({err})"
    return f"{path.name} is corrupt (member {bad} fails its CRC)" if bad else None


def is_complete(path: Path) -> bool:
    """A finished checkpoint folder: manifest, files with the recorded sizes, parseable state."""
    return problem(path) is None


def find_resumable(checkpoints_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint a run can resume from (`last` first, then `step-*` newest first),
    and the newer ones passed over as unusable, each with the reason."""
    if not checkpoints_dir.is_dir():
        return None, []
    candidates = sorted(
        (p for p in checkpoints_dir.iterdir() if step_of(p) is not None), key=step_of, reverse=True
    )
    last = checkpoints_dir / "last"
    if last.is_symlink() and last.exists():
        target = last.resolve()
        candidates = [target] + [p for p in candidates if p.resolve() != target]
    skipped = []
    for path in candidates:
        reason = problem(path, for_resume=True)
        if reason is None:
            return path.resolve(), skipped
        skipped.append((path, reason))
    return None, skipped


def find_latest(checkpoints_dir: Path) -> Path | None:
    """The newest usable checkpoint of a run, or None."""
    return find_resumable(checkpoints_dir)[0]


def resolve_checkpoint(path: str | Path, key: str, for_resume: bool = False) -> Path:
    """A user-given checkpoint: the folder itself, or a run / checkpoints folder holding `last`."""
    path = Path(path).expanduser()
    candidates = [path, path / "last", path / "checkpoints" / "last"]
    for candidate in candidates:
        if (candidate / MANIFEST).is_file() or (candidate / WEIGHTS).is_file():
            reason = problem(candidate, for_resume)
            if reason is not None:
                raise UserError(
                    f"{key}={path}: the checkpoint {candidate.resolve()} cannot be used: "
                    f"{reason}. Give an older checkpoint (checkpoints/step-<N>)"
                    + (" or resume=auto, which passes over broken ones." if for_resume else ".")
                )
            return candidate.resolve()
    if not path.exists():
        raise UserError(f"{key}={path}: no such file or folder")
    raise UserError(
        f"{key}={path}: not an nlptool checkpoint (no {MANIFEST} in it, nor in its "
        "last or checkpoints/last); give a checkpoints/step-<N> folder or a run directory"
    )


@dataclass
class LoadedCheckpoint:
    path: Path
    config_yaml: str
    trainer_state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.trainer_state["step"])


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    return LoadedCheckpoint(
        path=path,
        config_yaml=(path / CONFIG).read_text(),
        trainer_state=json.loads((path / TRAINER_STATE).read_text()),
    )


def saved_config(path: Path) -> Any:
    """The config a checkpoint was trained with (its config.yaml), as an OmegaConf node."""
    return OmegaConf.create(read_checkpoint(path).config_yaml)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False)
    if missing or unexpected:
        raise UserError(
            f"The weights in {path / WEIGHTS} do not fit the model: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / WEIGHTS))


def load_training_state(path: Path) -> dict[str, Any]:
    return torch.load(path / TRAINING_STATE, map_location="cpu", weights_only=False)


def load_matching_weights(model: torch.nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Load every tensor of the checkpoint whose name and shape the model shares.

    For starting a task model from a pretrained one: the backbone comes across, the pretraining
    heads are left out and the task's head stays freshly initialised. Returns the model's
    parameters that did not come from the checkpoint, and the checkpoint's tensors not used.
    """
    saved = load_file(str(path / WEIGHTS))
    own = model.state_dict()
    usable = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(
            f"init={path}: none of its weights fit this model (a different architecture or size)"
        )
    model.load_state_dict(usable, strict=False)
    # Tied parameters appear under several names; a name counts as loaded if its tensor was.
    loaded = {t.data_ptr() for k, t in model.state_dict().items() if k in usable}
    fresh = [
        k for k, t in model.state_dict().items() if k not in usable and t.data_ptr() not in loaded
    ]
    return fresh, sorted(set(saved) - set(usable))
