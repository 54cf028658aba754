"""`nlptool <verb> [overrides]`: the only layer that knows Hydra.

Each verb but `models` is a Hydra application over configs/<verb>.yaml (or, for a verb without a
YAML, its schema alone). This layer checks the command line, registers the schemas, composes the
config, builds the verb's `RunContext` (run directory, what the user overrode) and calls the
verb, a plain function of nlptool.verbs. A new verb is a module there and one line in `VERBS`.
"""

from __future__ import annotations

import datetime
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlptool.cli.store import config_dir, load, register_schemas, set_run_start
from nlptool.errors import UserError


@dataclass(frozen=True)
class Verb:
    run: str
    """The verb's function, "module:name": `(cfg, ctx) -> result` (or `(args) -> None` without
    a schema)."""
    schema: str | None
    """Its typed config, "module:Class" (None: a plain command, no Hydra)."""
    help: str


VERBS = {
    "pretrain": Verb("nlptool.verbs.train:pretrain", "nlptool.schema:PretrainConfig", "Pretrain a model from scratch (BERT with mlm / mlm_nsp, GPT with clm)."),
    "finetune": Verb("nlptool.verbs.train:finetune", "nlptool.schema:FinetuneConfig", "Continue training from a checkpoint (init=PATH) on new data."),
    "eval": Verb("nlptool.verbs.evaluate:evaluate", "nlptool.schema:EvalConfig", "Evaluate a checkpoint (checkpoint=PATH) on validation data; writes eval.json."),
    "convert": Verb("nlptool.verbs.convert:convert", "nlptool.verbs.convert:ConvertConfig", "Convert between Hugging Face and nlptool (src=PATH out=PATH to=nlptool|hf)."),
    "generate": Verb("nlptool.verbs.generate:generate", "nlptool.verbs.generate:GenerateConfig", "Continue a prompt with a causal LM (checkpoint=PATH prompt=TEXT)."),
    "predict": Verb("nlptool.verbs.predict:predict", "nlptool.verbs.predict:PredictConfig", "A fine-tuned model's predictions for new records (checkpoint=PATH input=FILE|-)."),
    "models": Verb("nlptool.cli.models:list_models", None, "List the model presets (model=...) with their shapes and parameter counts."),
}  # fmt: skip

USAGE = """usage: nlptool <verb> [key=value ...] [--cfg job] [-m] [--help]

Verbs:
{verbs}

Each verb is a Hydra application: override any key (trainer.lr=3e-4), choose config group
options (model=bert-mini objective=mlm_nsp), print the composed config (--cfg job), or sweep
(-m trainer.lr=1e-3,3e-4). `nlptool <verb> --help` lists the groups and their options.
"""

__all__ = ["VERBS", "Verb", "config_dir", "main", "register_configs"]


def register_configs() -> None:
    """Every verb's schema in Hydra's ConfigStore (`<verb>_schema`)."""
    register_schemas({name: verb.schema for name, verb in VERBS.items() if verb.schema})


def print_error(message: str) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console(stderr=True, highlight=False)
    if not console.is_terminal:  # a log file: one line, no box, nothing broken mid-path
        console.print(f"nlptool: error: {message}", soft_wrap=True, markup=False)
        return
    console.print(
        Panel(
            Text(message),
            title="nlptool: error",
            title_align="left",
            border_style="red",
            expand=False,
        )
    )


def run_context() -> Any:
    """The verb's RunContext from Hydra's runtime: the run directory, and the keys (and their
    top-level sections) set on the command line."""
    from hydra.core.hydra_config import HydraConfig

    from nlptool.verbs import RunContext

    hydra = HydraConfig.get()
    overridden = set()
    for override in hydra.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        overridden.add(key.split(".", 1)[0].split("@", 1)[0])
        overridden.add(key)
    return RunContext(Path(hydra.runtime.output_dir), frozenset(overridden))


def run_verb(name: str, args: list[str]) -> None:
    import hydra

    from nlptool.cli.overrides import check_launcher, check_override_keys, task_choice

    verb = VERBS[name]
    args = task_choice(name, args)
    message = check_override_keys(verb.schema, args) or check_launcher(args)
    if message:
        raise UserError(message)
    register_configs()
    args = join_process_group(args)
    function = load(verb.run)

    def run(cfg) -> None:
        try:
            function(cfg, run_context())
        except UserError as err:
            print_error(str(err))
            sys.exit(2)

    run.__name__ = name  # Hydra names the job (and its log file) after the function
    main = hydra.main(version_base="1.3", config_path=config_dir(), config_name=name)(run)
    sys.argv = [f"nlptool {name}", *args]
    main()


def join_process_group(args: list[str]) -> list[str]:
    """Under torchrun: join the process group before Hydra starts, take rank 0's start time (the
    run directory's name), and keep the other ranks from writing Hydra's files and logs."""
    from nlptool.training import distributed

    rank, world, _ = distributed.launched()
    if world <= 1:
        return args
    distributed.init_from_env()
    set_run_start(distributed.broadcast_object(datetime.datetime.now()))
    if rank == 0:
        return args
    return [
        *args,
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        verbs = "\n".join(f"  {name:<10} {verb.help}" for name, verb in VERBS.items())
        print(USAGE.format(verbs=verbs))
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from nlptool import __version__

        print(f"nlptool {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in VERBS:
        close = difflib.get_close_matches(name, list(VERBS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print_error(f"Unknown verb '{name}'.{hint} Valid verbs: {', '.join(VERBS)}.")
        sys.exit(2)
    try:
        if VERBS[name].schema is None:
            load(VERBS[name].run)(rest)
        else:
            run_verb(name, rest)
    except UserError as err:
        print_error(str(err))
        sys.exit(2)


if __name__ == "__main__":
    main()
