"""Checks of the command line before Hydra sees it, so that a mistake gets one paragraph naming
the key and the valid choices: override keys against the verb's schema, group options against
the config folders, the SLURM launcher against this machine; and the task `task.*` keys need."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, get_type_hints

from nlptool.cli.store import config_dir, load
from nlptool.errors import UserError
from nlptool.training.checkpoint import resolve_checkpoint, saved_config


def extra_config_dirs(args: list[str]) -> list[Path]:
    """Folders given with Hydra's --config-dir (-cd): their group options count too (a YAML of
    your own objective, say, in <dir>/objective/)."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            found.append(Path(args[i + 1]).expanduser())
        elif arg.startswith("--config-dir="):
            found.append(Path(arg.split("=", 1)[1]).expanduser())
    return found


def check_override_keys(schema_ref: str, args: list[str]) -> str | None:
    """A message for the first `a.b.c=value` override whose key the schema does not have.

    Hydra would reject it too, but without listing the keys that exist; this names them, with
    the closest match first; a config group option that does not exist (`model=bert-xxl`) gets
    the list of options. Sweeps (`a,b`), `~` deletions and `hydra.*` keys are left to Hydra.
    """
    groups: dict[str, list[Path]] = {}
    for folder in [Path(config_dir()), *extra_config_dirs(args)]:
        for group in folder.iterdir() if folder.is_dir() else ():
            if group.is_dir() and group.name != "__pycache__":
                groups.setdefault(group.name, []).append(group)
    schema = load(schema_ref)
    fields = {f.name for f in dataclasses.fields(schema)}
    for arg in args:
        if arg.startswith(("-", "~")) or "=" not in arg:
            continue
        key, value = arg.lstrip("+").split("=", 1)
        if key.startswith("hydra") or key.startswith("/"):
            continue
        if key in groups and key in fields and "," not in value and value not in ("null", ""):
            options = sorted({p.stem for folder in groups[key] for p in folder.glob("*.yaml")})
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" Did you mean {key}={close[0]}?" if close else ""
                return (
                    f"Unknown {key} '{value}'.{hint} Valid choices for {key}: {', '.join(options)}."
                )
            continue
        node: Any = schema
        path: list[str] = []
        for part in key.split("."):
            if not dataclasses.is_dataclass(node):
                break  # below a free-form node (e.g. a list or dict value)
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                where = ".".join(path) or "the top level"
                close = difflib.get_close_matches(part, names, n=1)
                hint = f" Did you mean {'.'.join([*path, close[0]])}?" if close else ""
                return (
                    f"Unknown config key '{key}': '{part}' is not a key of {where}.{hint} "
                    f"Valid keys there: {', '.join(names)}."
                )
            path.append(part)
            node = get_type_hints(node).get(part)
    return None


def check_launcher(args: list[str]) -> str | None:
    """A message when hydra/launcher=slurm cannot work here: the plugin or SLURM is missing."""
    import importlib.util
    import shutil

    launcher = next((a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")), None)
    if launcher not in ("slurm", "submitit_slurm"):
        return None
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return (
            f"hydra/launcher={launcher} needs Hydra's submitit launcher: "
            "pip install 'nlptool[slurm]' (hydra-submitit-launcher)."
        )
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        return (
            f"hydra/launcher={launcher} submits SLURM jobs, but sbatch and srun are not on this "
            "machine's PATH: run the command on a login node of the cluster (and -m, which the "
            "launcher needs: nlptool pretrain -m hydra/launcher=slurm ...)."
        )
    return None


def task_choice(verb: str, args: list[str]) -> list[str]:
    """`task.*` overrides need a task: for eval, the checkpoint's own task is chosen (its saved
    settings come back in `nlptool.verbs.evaluate.task_config`, the overrides on top); finetune asks
    for one."""
    keys = [a.split("=", 1)[0].lstrip("+") for a in args if "=" in a and not a.startswith("-")]
    if not any(k.startswith("task.") for k in keys) or "task" in keys:
        return args
    if "task._target_" in keys:  # the user's own task class: any preset is a base to fill in
        return ["task=classification", *args]
    if verb != "eval":
        return args if verb != "finetune" else need_task()
    checkpoint = next((a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")), None)
    if checkpoint is None:
        return args
    try:
        saved = saved_config(resolve_checkpoint(checkpoint, "checkpoint"))
    except (UserError, OSError):
        return args  # reported with the rest of the checks
    if saved.get("task") is None:
        return args
    options = {p.stem for p in (Path(config_dir()) / "task").glob("*.yaml")}
    choice = saved.task.name if saved.task.name in options else saved.task.kind
    return [f"task={choice}", *args]


def need_task() -> list[str]:
    raise UserError(
        "task.* settings need a task: choose one with task=<name> (see nlptool finetune --help)."
    )
