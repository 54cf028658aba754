"""`nlptool <verb> [overrides]`: each verb is a Hydra application over configs/<verb>.yaml."""

from __future__ import annotations

import dataclasses
import difflib
import sys
from importlib import resources
from pathlib import Path
from typing import Any, get_type_hints

VERBS = {
    "pretrain": "Pretrain a model from scratch (BERT with mlm / mlm_nsp, GPT with clm).",
    "finetune": "Continue training from a checkpoint (init=PATH) on new data.",
    "eval": "Evaluate a checkpoint (checkpoint=PATH) on validation data; writes eval.json.",
    "convert": "Convert between Hugging Face and nlptool (src=PATH out=PATH to=nlptool|hf).",
    "generate": "Continue a prompt with a causal LM (checkpoint=PATH prompt=TEXT).",
    "predict": "A fine-tuned model's predictions for new records (checkpoint=PATH input=FILE|-).",
    "models": "List the model presets (model=...) with their shapes and parameter counts.",
}

USAGE = """usage: nlptool <verb> [key=value ...] [--cfg job] [-m] [--help]

Verbs:
{verbs}

Each verb is a Hydra application: override any key (trainer.lr=3e-4), choose config group
options (model=bert-mini objective=mlm_nsp), print the composed config (--cfg job), or sweep
(-m trainer.lr=1e-3,3e-4). `nlptool <verb> --help` lists the groups and their options.
"""


def config_dir() -> str:
    """The YAML configs: inside the installed package, or configs/ of a source checkout."""
    try:
        packaged = resources.files("nlptool.configs")
        if packaged.is_dir() and (packaged / "pretrain.yaml").is_file():
            return str(packaged)
    except (ModuleNotFoundError, TypeError):
        pass
    return str(Path(__file__).resolve().parent.parent / "configs")


def _print_error(message: str) -> None:
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


# -- checking override keys before Hydra sees them ------------------------------------------


def _schema(verb: str) -> Any:
    from nlptool.config import (
        ConvertConfig,
        EvalConfig,
        FinetuneConfig,
        GenerateConfig,
        PretrainConfig,
    )
    from nlptool.predict import PredictConfig

    return {
        "pretrain": PretrainConfig,
        "finetune": FinetuneConfig,
        "eval": EvalConfig,
        "convert": ConvertConfig,
        "generate": GenerateConfig,
        "predict": PredictConfig,
    }[verb]


def check_override_keys(verb: str, args: list[str]) -> str | None:
    """A message for the first `a.b.c=value` override whose key the schema does not have.

    Hydra would reject it too, but without listing the keys that exist; this names them, with
    the closest match first; a config group option that does not exist (`model=bert-xxl`) gets
    the list of options. Sweeps (`a,b`), `~` deletions and `hydra.*` keys are left to Hydra.
    """
    groups = {
        p.name: p for p in Path(config_dir()).iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    for arg in args:
        if arg.startswith(("-", "~")) or "=" not in arg:
            continue
        key, value = arg.lstrip("+").split("=", 1)
        if key.startswith("hydra") or key.startswith("/"):
            continue
        if (
            key in groups
            and verb not in ("convert", "generate", "predict")
            and "," not in value
            and value not in ("null", "")
        ):
            options = sorted(p.stem for p in groups[key].glob("*.yaml"))
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1)
                hint = f" Did you mean {key}={close[0]}?" if close else ""
                return (
                    f"Unknown {key} '{value}'.{hint} Valid choices for {key}: {', '.join(options)}."
                )
            continue
        node: Any = _schema(verb)
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


# -- the verbs ---------------------------------------------------------------------------------


def _task_choice(verb: str, args: list[str]) -> list[str]:
    """`task.*` overrides need a task: for eval, the checkpoint's own task is chosen (its saved
    settings come back in `nlptool.app.evaluate_task`, the overrides on top); finetune asks
    for one."""
    keys = [a.split("=", 1)[0].lstrip("+") for a in args if "=" in a and not a.startswith("-")]
    if not any(k.startswith("task.") for k in keys) or "task" in keys:
        return args
    if "task._target_" in keys:  # the user's own task class: any preset is a base to fill in
        return ["task=classification", *args]
    if verb != "eval":
        return args if verb != "finetune" else _need_task()
    checkpoint = next((a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")), None)
    if checkpoint is None:
        return args
    from omegaconf import OmegaConf

    from nlptool.errors import UserError
    from nlptool.training.checkpoint import CONFIG, resolve_checkpoint

    try:
        saved = OmegaConf.load(resolve_checkpoint(checkpoint, "checkpoint") / CONFIG)
    except UserError:
        return args  # reported with the rest of the checks
    if saved.get("task") is None:
        return args
    options = {p.stem for p in (Path(config_dir()) / "task").glob("*.yaml")}
    choice = saved.task.name if saved.task.name in options else saved.task.kind
    return [f"task={choice}", *args]


def _need_task() -> list[str]:
    _print_error(
        "task.* settings need a task: choose one with task=<name> (see nlptool finetune --help)."
    )
    sys.exit(2)


def _run_verb(verb: str, args: list[str]) -> None:
    import hydra

    from nlptool import app
    from nlptool.config import register_configs
    from nlptool.errors import UserError

    args = _task_choice(verb, args)
    message = check_override_keys(verb, args) or check_launcher(args)
    if message:
        _print_error(message)
        sys.exit(2)
    register_configs()
    args = _join_process_group(args)
    task = {
        "pretrain": app.pretrain,
        "finetune": app.finetune,
        "eval": app.evaluate,
        "convert": app.convert,
        "generate": app.generate,
        "predict": app.predict,
    }[verb]

    def run(cfg) -> None:
        try:
            task(cfg)
        except UserError as err:
            _print_error(str(err))
            sys.exit(2)

    run.__name__ = verb  # Hydra names the job (and its log file) after the function
    main = hydra.main(version_base="1.3", config_path=config_dir(), config_name=verb)(run)
    sys.argv = [f"nlptool {verb}", *args]
    main()


def _join_process_group(args: list[str]) -> list[str]:
    """Under torchrun: join the process group before Hydra starts, take rank 0's start time (the
    run directory's name), and keep the other ranks from writing Hydra's files and logs."""
    import datetime

    from nlptool.config import set_run_start
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


# Vocabulary sizes the presets are counted at: the originals' (BERT's WordPiece, GPT-2's BPE, the
# shared BPE of "Attention Is All You Need"). nlptool takes the vocabulary from the tokenizer.
PRESET_VOCAB = {"bert": 30522, "gpt": 50257, "seq2seq": 37000}


def preset_rows() -> list[dict[str, Any]]:
    """Each preset of the model group: its shape and parameter count (at PRESET_VOCAB)."""
    import torch
    from omegaconf import OmegaConf

    from nlptool.models import build_model, count_parameters
    from nlptool.models.config import ModelConfig

    rows = []
    for path in sorted(Path(config_dir(), "model").glob("*.yaml")):
        merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
        cfg: ModelConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
        cfg.vocab_size = PRESET_VOCAB[cfg.arch]
        with torch.device("meta"):  # shapes only: no memory for the weights
            parameters = count_parameters(build_model(cfg))
        layers = str(cfg.num_layers)
        if cfg.arch == "seq2seq":
            layers += f"+{cfg.num_decoder_layers or cfg.num_layers}"
        rows.append(
            {
                "name": path.stem,
                "arch": cfg.arch,
                "layers": layers,
                "hidden": cfg.hidden_size,
                "heads": cfg.num_heads,
                "ffn": cfg.ffn_size,
                "positions": cfg.max_seq_len,
                "parameters": parameters,
            }
        )
    return sorted(rows, key=lambda r: (r["arch"], r["parameters"]))


def list_models() -> None:
    """`nlptool models`: the presets as an aligned plain-text table (fits 80 columns)."""
    columns = ("name", "arch", "layers", "hidden", "heads", "ffn", "positions", "params")
    rows = [
        [*(str(row[k]) for k in columns[:-1]), f"{row['parameters'] / 1e6:,.1f}M"]
        for row in preset_rows()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        )

    print("Model presets (model=<name>)\n")
    print(line(list(columns)))
    print(line(["-" * w for w in widths]))
    for cells in rows:
        print(line(cells))
    vocab = ", ".join(f"{arch} {size:,}" for arch, size in PRESET_VOCAB.items())
    print(
        f"\nParameters at the original vocabulary sizes ({vocab}).\n"
        "A run takes its vocabulary from the tokenizer (tokenizer.vocab_size), which sizes the\n"
        "embedding and output layers."
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        verbs = "\n".join(f"  {name:<10} {text}" for name, text in VERBS.items())
        print(USAGE.format(verbs=verbs))
        sys.exit(0 if argv else 2)
    if argv[0] in ("-V", "--version"):
        from nlptool import __version__

        print(f"nlptool {__version__}")
        return
    verb, rest = argv[0], argv[1:]
    if verb == "models":
        list_models()
        return
    if verb not in VERBS:
        close = difflib.get_close_matches(verb, list(VERBS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        _print_error(f"Unknown verb '{verb}'.{hint} Valid verbs: {', '.join(VERBS)}.")
        sys.exit(2)
    _run_verb(verb, rest)


if __name__ == "__main__":
    main()
