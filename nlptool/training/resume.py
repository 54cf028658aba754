"""The resume policy: which checkpoint a run continues from, and what a resume may not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nlptool.console import console
from nlptool.errors import UserError
from nlptool.training import checkpoint as ckpt

# Sections of a checkpoint's config that define the model and how its inputs are made: a run
# resumed from that checkpoint must not change them.
FIXED_ON_RESUME = ("model", "tokenizer", "objective")
# Trainer settings a resume must keep: they pick the data order and masks (batch_size, seed), or
# the checkpoint's optimizer and schedule state would silently override a new value. The rest may
# change (max_steps, micro_batch_size, the eval/save/log cadence, keep_last, device, precision...).
TRAINER_FIXED_ON_RESUME = (
    "batch_size", "seed", "lr", "schedule", "warmup_steps", "weight_decay", "beta1", "beta2", "eps",
)  # fmt: skip


def find_resume(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to continue from: none (never), the newest usable one of this run directory
    (auto; broken newer ones are named and passed over), or the one given (a broken one fails)."""
    if resume == "never":
        return None
    if resume != "auto":
        return ckpt.resolve_checkpoint(resume, "resume", for_resume=True)
    path, skipped = ckpt.find_resumable(run_dir / "checkpoints")
    for bad, reason in skipped:
        instead = f"resuming from {path.name}" if path else "no older one is usable"
        console.print(f"[yellow]resume=auto: passing over {bad.name}: {reason}; {instead}[/]")
    if skipped and path is None:
        console.print(
            "[yellow]resume=auto: no usable checkpoint in "
            f"{run_dir / 'checkpoints'}: starting from step 0 (the broken ones are left as they "
            "are until newer checkpoints replace them)[/]"
        )
    return path


def check_resume_compatible(
    cfg: Any, saved_yaml: str, path: Path, sections: tuple[str, ...] = FIXED_ON_RESUME
) -> None:
    saved = OmegaConf.create(saved_yaml)
    now = OmegaConf.structured(cfg)
    diffs = []
    for section in sections:
        before, after = OmegaConf.to_container(saved[section]), OmegaConf.to_container(now[section])
        for key in sorted(set(before) | set(after)):
            if section == "model" and key in ("vocab_size", "pad_token_id"):  # from the tokenizer
                continue
            if before.get(key) != after.get(key):
                diffs.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    if saved.data.max_seq_len != now.data.max_seq_len:
        diffs.append(f"data.max_seq_len: {saved.data.max_seq_len} -> {now.data.max_seq_len}")
    for key in TRAINER_FIXED_ON_RESUME:
        if key in saved.trainer and saved.trainer[key] != now.trainer[key]:
            diffs.append(f"trainer.{key}: {saved.trainer[key]!r} -> {now.trainer[key]!r}")
    if diffs:
        raise UserError(
            f"Cannot resume from {path}: the config changed in ways a resume cannot honour "
            f"({'; '.join(diffs)}). Restore those settings, pass resume=never to start over, or "
            "use another run directory (hydra.run.dir=...). Safe to change on resume: "
            "trainer.max_steps, micro_batch_size, the eval/save/log cadence, keep_last, device, "
            "precision."
        )
