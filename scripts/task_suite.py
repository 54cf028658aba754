"""Fine-tune every downstream task from one small pretrained checkpoint, on a fixed budget.

The suite, each step a real `nlptool` command (logs and run directories under --out):

1. **Corpus**: the unlabelled training text of the tasks (read by nlptool's own task readers, so
   only training splits: SST-2 and ChnSentiCorp sentences, CoNLL-2003 sentences, STS-B pairs, the
   training articles of SQuAD) plus tiny Shakespeare, one text a line.
2. **Pretrain** `bert-mini` with masked LM on that corpus (a cased WordPiece vocabulary that also
   holds the Chinese characters).
3. **Fine-tune** each task from that checkpoint (`init=`), and, for the tasks named by --scratch,
   the same model, tokenizer and budget from random weights, then `nlptool eval` the best
   checkpoint on the validation split and, where the task has one, the test split. Translation
   needs an encoder-decoder, which a BERT checkpoint cannot initialise: multi30k always trains
   `transformer-tiny` from scratch.

The budget (steps, batch, learning rate of each run) is the table BUDGET below; --scale
multiplies every step count (for a quick look: --scale 0.1). The results table (task, init,
metric, valid, test, steps, minutes) is printed and written to --out as results.md and
results.json.

    python scripts/task_suite.py --data ../shared/data --out runs/suite
    python scripts/task_suite.py --tasks sst2,conll2003 --init runs/suite/pretrain/checkpoints/last
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
console = Console()


@dataclass(frozen=True)
class Run:
    """One fine-tuning run of the budget: its task preset, data folder and trainer settings."""

    task: str
    data_dir: str
    metric: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    eval_every: int
    overrides: tuple[str, ...] = ()
    pretrained: bool = True  # False: a model the BERT checkpoint cannot initialise
    extra_metrics: tuple[str, ...] = ()


PRETRAIN = {
    "model": "bert-mini",
    "objective": "mlm",
    "tokenizer": "wordpiece-cased",
    "vocab_size": 16000,
    "steps": 1500,
    "batch_size": 32,
    "max_seq_len": 128,
    "lr": 1e-3,
    "warmup_steps": 100,
}

# The fixed budget of each task. Classification-style tasks use one learning rate for the
# pretrained and the scratch runs alike (no per-side tuning).
BUDGET = {
    "sst2": Run("sst2", "sst2", "accuracy", 600, 32, 3e-4, 60, 100),
    "conll2003": Run("conll2003", "conll2003", "f1", 600, 32, 3e-4, 60, 100),
    "chnsenticorp": Run(
        "chnsenticorp", "chnsenticorp", "accuracy", 300, 32, 3e-4, 30, 100, ("task.max_seq_len=128",)
    ),
    "stsb": Run("stsb", "stsb", "pearson", 500, 32, 3e-4, 50, 100, extra_metrics=("spearman",)),
    "squad": Run(
        "squad", "squad_v1.1", "f1", 300, 32, 3e-4, 30, 150, ("task.max_seq_len=256",),
        extra_metrics=("exact_match",),
    ),
    "multi30k": Run(
        "multi30k", "multi30k", "bleu", 1400, 128, 1e-3, 200, 700,
        ("task.beam_size=1",), pretrained=False,
    ),
}  # fmt: skip
CORPUS_TASKS = ("sst2", "chnsenticorp", "stsb", "conll2003", "squad")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=None, help="default runs/suite/<time>")
    parser.add_argument("--tasks", default=",".join(BUDGET), help="comma-separated, in order")
    parser.add_argument("--scratch", default="sst2,conll2003", help="also run these from scratch")
    parser.add_argument("--init", type=Path, default=None, help="skip pretraining: use this")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args(argv)
    unknown = [t for t in args.tasks.split(",") + args.scratch.split(",") if t and t not in BUDGET]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; the suite has {', '.join(BUDGET)}")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.out is None:
        args.out = Path("runs/suite") / time.strftime("%Y-%m-%d_%H-%M-%S")
    return args


def scaled(steps: int, scale: float) -> int:
    return max(2, round(steps * scale))


def nlptool(args: list[str], log: Path) -> float:
    """Run one nlptool command, its output to `log`; its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "nlptool", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"},
        )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"nlptool {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return seconds


def build_corpus(data: Path, out: Path) -> list[Path]:
    """The unlabelled training text of the tasks, each text a document (so that
    data.valid_fraction holds out texts of every source), plus tiny Shakespeare."""
    from hydra import compose, initialize_config_dir

    from nlptool.cli import config_dir, register_configs
    from nlptool.schema import check_config
    from nlptool.tasks import build_task

    out.mkdir(parents=True, exist_ok=True)
    files = []
    register_configs()
    for name in CORPUS_TASKS:
        path = out / f"{name}.txt"
        if not path.exists():
            overrides = [f"task={name}", f"task.data_dir={data / BUDGET[name].data_dir}"]
            with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
                cfg = check_config(compose(config_name="finetune", overrides=overrides))
            task = build_task(cfg.task)
            partial = path.with_suffix(".tmp")
            with open(partial, "w", encoding="utf-8") as f:
                for text in task.training_texts(task.read("train")):
                    line = " ".join(text.split())
                    if line:  # each text a document (blank line after it)
                        f.write(line + "\n\n")
            partial.replace(path)
        files.append(path)
    shakespeare = data / "tinyshakespeare" / "input.txt"
    if shakespeare.is_file():
        files.append(shakespeare)
    return files


def pretrain(files: list[Path], out: Path, scale: float, overrides: list[str]) -> tuple[Path, dict]:
    p = PRETRAIN
    steps = scaled(p["steps"], scale)
    listed = ",".join(str(f.resolve()) for f in files)
    seconds = nlptool(
        [
            "pretrain",
            f"model={p['model']}",
            f"objective={p['objective']}",
            f"tokenizer={p['tokenizer']}",
            f"tokenizer.vocab_size={p['vocab_size']}",
            "data=text",
            f"data.train_files=[{listed}]",
            f"data.max_seq_len={p['max_seq_len']}",
            f"trainer.max_steps={steps}",
            f"trainer.batch_size={p['batch_size']}",
            f"trainer.lr={p['lr']}",
            f"trainer.warmup_steps={min(p['warmup_steps'], steps // 2)}",
            f"trainer.eval_every={max(1, steps // 4)}",
            "trainer.progress=false",
            f"hydra.run.dir={out}",
            *overrides,
        ],
        out / "pretrain.log",
    )
    records = read_metrics(out / "metrics.jsonl")
    last_valid = [r for r in records if "valid/loss" in r][-1]
    summary = {
        "steps": steps,
        "minutes": seconds / 60,
        "train_minutes": train_seconds(records) / 60,
        "valid_loss": last_valid["valid/loss"],
        "valid_mlm_accuracy": last_valid.get("valid/mlm_accuracy"),
    }
    return out / "checkpoints" / "last", summary


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_seconds(records: list[dict[str, Any]]) -> float:
    return max((r["train/seconds"] for r in records if "train/seconds" in r), default=0.0)


def has_test_split(run: Run, data: Path) -> bool:
    return run.task in ("conll2003", "multi30k") and (data / run.data_dir).is_dir()


def finetune(
    run: Run,
    init: Path | None,
    tokenizer_from: Path | None,
    data: Path,
    out: Path,
    scale: float,
    overrides: list[str],
) -> dict[str, Any]:
    """Fine-tune from `init` (None: random weights, on the tokenizer of `tokenizer_from` if
    given, so that only the weights differ), then evaluate the best checkpoint; one table row."""
    steps = scaled(run.steps, scale)
    args = [
        "finetune",
        f"task={run.task}",
        f"task.data_dir={data / run.data_dir}",
        f"trainer.max_steps={steps}",
        f"trainer.batch_size={run.batch_size}",
        f"trainer.lr={run.lr}",
        f"trainer.warmup_steps={min(run.warmup_steps, steps // 2)}",
        f"trainer.eval_every={max(1, min(run.eval_every, steps))}",
        "trainer.progress=false",
        f"hydra.run.dir={out}",
        *run.overrides,
    ]
    if init is not None:
        args.append(f"init={init}")
    elif tokenizer_from is not None:
        args += [
            f"model={PRETRAIN['model']}",
            "tokenizer=pretrained",
            f"tokenizer.path={tokenizer_from}",
        ]
    seconds = nlptool([*args, *overrides], out / "finetune.log")
    records = read_metrics(out / "metrics.jsonl")
    best = out / "checkpoints" / "best"
    best = best if best.exists() else out / "checkpoints" / "last"
    row = {
        "task": run.task,
        "init": "pretrained" if init is not None else "scratch",
        "metric": run.metric,
        "steps": steps,
        "batch_size": run.batch_size,
        "lr": run.lr,
        "train_minutes": train_seconds(records) / 60,
    }
    splits = ["valid"] + (["test"] if has_test_split(run, data) else [])
    for split in splits:
        seconds += nlptool(
            [
                "eval",
                f"checkpoint={best}",
                f"split={split}",
                "trainer.progress=false",
                f"hydra.run.dir={out / f'eval-{split}'}",
                *overrides,
            ],
            out / f"eval-{split}.log",
        )
        metrics = json.loads((out / f"eval-{split}" / "eval.json").read_text())[split]
        row[split] = metrics[run.metric]
        for extra in run.extra_metrics:
            row[f"{split}_{extra}"] = metrics[extra]
    row["minutes"] = seconds / 60
    return row


def results_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | init | metric | valid | test | steps x batch | train min | total min |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        metric = r["metric"] + "".join(f" / {k[6:]}" for k in r if k.startswith("valid_"))
        valid = f"{r['valid']:.4g}" + "".join(
            f" / {v:.4g}" for k, v in r.items() if k.startswith("valid_")
        )
        test = f"{r['test']:.4g}" if "test" in r else "-"
        lines.append(
            f"| {r['task']} | {r['init']} | {metric} | {valid} | {test} | "
            f"{r['steps']} x {r['batch_size']} | {r['train_minutes']:.1f} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def show(rows: list[dict[str, Any]]) -> None:
    table = Table(title="nlptool task suite")
    for name in ("task", "init", "metric", "valid", "test", "steps", "train min", "total min"):
        table.add_column(name, justify="left" if name in ("task", "init", "metric") else "right")
    for r in rows:
        table.add_row(
            r["task"],
            r["init"],
            r["metric"],
            f"{r['valid']:.4f}",
            f"{r['test']:.4f}" if "test" in r else "-",
            f"{r['steps']} x {r['batch_size']}",
            f"{r['train_minutes']:.1f}",
            f"{r['minutes']:.1f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data.resolve()
    tasks = [t for t in args.tasks.split(",") if t]
    scratch = [t for t in args.scratch.split(",") if t and t in tasks]
    started = time.perf_counter()
    result: dict[str, Any] = {"budget": {"pretrain": PRETRAIN, "scale": args.scale}, "rows": []}
    init = args.init.resolve() if args.init else None
    # A rerun into the same --out keeps the other tasks' rows and a finished pretraining.
    earlier = (
        json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    )
    result["rows"] = [row for row in earlier.get("rows", []) if row["task"] not in tasks]
    if init is None and "pretrain" in earlier and (out / "pretrain/checkpoints/last").exists():
        init, result["pretrain"] = (
            (out / "pretrain/checkpoints/last").resolve(),
            earlier["pretrain"],
        )
        console.print(f"Reusing the pretrained {init}")
    if init is None and any(BUDGET[t].pretrained for t in tasks):
        console.print("[bold]Corpus[/] from the training splits")
        files = build_corpus(data, out / "corpus")
        console.print(f"[bold]Pretraining[/] {PRETRAIN['model']} ({out / 'pretrain'})")
        init, result["pretrain"] = pretrain(files, out / "pretrain", args.scale, args.overrides)
        console.print(result["pretrain"])
    for task in tasks:
        run = BUDGET[task]
        sides = ["pretrained", "scratch"] if run.pretrained and task in scratch else []
        sides = sides or (["pretrained"] if run.pretrained else ["scratch"])
        for side in sides:
            console.print(f"[bold]{task}[/] ({side})")
            row = finetune(
                run,
                init if side == "pretrained" else None,
                init if run.pretrained else None,
                data,
                out / f"{task}-{side}",
                args.scale,
                args.overrides,
            )
            console.print(row)
            result["rows"].append(row)
            (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    order = list(BUDGET)
    result["rows"].sort(key=lambda row: (order.index(row["task"]), row["init"] != "pretrained"))
    result["minutes"] = (time.perf_counter() - started) / 60
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(result["rows"]))
    show(result["rows"])
    console.print(f"Wrote {out / 'results.md'} and results.json ({result['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
