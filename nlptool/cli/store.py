"""Where the YAML configs are, the verbs' schemas in Hydra's ConfigStore, and the run-start
resolver that names run directories."""

from __future__ import annotations

import datetime
import importlib
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf


def config_dir() -> str:
    """The YAML configs: inside the installed package, or configs/ of a source checkout."""
    try:
        packaged = resources.files("nlptool.configs")
        if packaged.is_dir() and (packaged / "pretrain.yaml").is_file():
            return str(packaged)
    except (ModuleNotFoundError, TypeError):
        pass
    return str(Path(__file__).resolve().parent.parent.parent / "configs")


def load(reference: str) -> Any:
    """The object a "package.module:name" reference names."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def register_schemas(schemas: dict[str, str]) -> None:
    """Each verb's schema in Hydra's ConfigStore as `<verb>_schema`, the first entry of the verb's
    YAML; a verb without a YAML of its own is composed from its schema alone (`<verb>`)."""
    store = ConfigStore.instance()
    for verb, reference in schemas.items():
        schema = load(reference)
        store.store(name=f"{verb}_schema", node=schema)
        if not (Path(config_dir()) / f"{verb}.yaml").is_file():
            store.store(name=verb, node=schema)


_RUN_START: list[datetime.datetime] = []


def set_run_start(when: datetime.datetime) -> None:
    """Fix the time `${run_start:...}` gives (torchrun: rank 0's, so every rank names the same
    run directory)."""
    _RUN_START[:] = [when]


def run_start(pattern: str) -> str:
    """`${run_start:%Y-%m-%d}`: when this run started, formatted; the run directory's name.
    Like Hydra's `${now:...}`, but one instant for the whole run, on every rank."""
    if not _RUN_START:
        _RUN_START.append(datetime.datetime.now())
    return _RUN_START[0].strftime(pattern)


# At import: a job of Hydra's submitit launcher resolves the run directory in a process that
# unpickles the task (importing nlptool.cli) but never calls register_configs.
OmegaConf.register_new_resolver("run_start", run_start, use_cache=True, replace=True)
