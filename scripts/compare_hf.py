"""Train an nlptool model and the Hugging Face `transformers` model of the same shape side by side.

Everything but the model is shared: the config is composed as `nlptool pretrain` composes it, the
data come from `nlptool.verbs.prepare.prepare_data` (same tokenizer, examples and masks), every step's
batch is drawn once from the `Trainer`'s own sampler and fed to both models, and each model has
its own `Trainer` (same AdamW groups, schedule, clipping). The HF model keeps its own
initialisation and computes its own loss (`labels=`); an adapter turns HF's mean loss back into
the summed terms of nlptool's `Objective` protocol.

The two models are stepped alternately in one loop, so a slowdown of the machine hits both. The
validation losses are compared at step 0 and every --eval-every steps; the script exits with
status 1 when the final relative difference exceeds --tolerance.

    python scripts/compare_hf.py --model gpt-tiny --objective clm --steps 500
    python scripts/compare_hf.py --model bert-mini --objective mlm --tokenizer wordpiece
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from hf_models import hf_model_for  # scripts/, beside this file
from rich.table import Table
from torch import nn

from nlptool.cli import config_dir, register_configs
from nlptool.console import console, summary_table
from nlptool.data.pretraining import IGNORE_INDEX, collate
from nlptool.models import build_model, count_parameters
from nlptool.objectives import LossTerm, Objective, build_objective
from nlptool.objectives.base import optional_parts
from nlptool.plugins import complete
from nlptool.schema import check_config, to_yaml
from nlptool.training.loop import Trainer, TrainingJob
from nlptool.training.runtime import make_collate, num_tokens, resolve_device, seed_everything
from nlptool.verbs.prepare import model_config_for, prepare_data

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="gpt-tiny", help="model config (configs/model/): %(default)s"
    )
    parser.add_argument(
        "--objective", default=None, help="clm, mlm or mlm_nsp (default: clm for gpt, else mlm)"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="bpe or wordpiece (default: bpe for clm, else wordpiece)"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="training text file(s): %(default)s"
    )
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps: %(default)s")
    parser.add_argument(
        "--eval-every", type=int, default=50, help="steps between validations: %(default)s"
    )
    parser.add_argument("--seed", type=int, default=None, help="default: trainer.seed")
    parser.add_argument(
        "--tolerance", type=float, default=0.03, help="max final |relative difference|: %(default)s"
    )
    parser.add_argument(
        "--attn", default="sdpa", help="HF attn_implementation: %(default)s (or eager)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write both curves as JSON here")
    parser.add_argument(
        "overrides", nargs="*", help="more Hydra overrides, e.g. trainer.batch_size=16"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        parser.error("--steps and --eval-every must be positive")
    return args


def compose_config(args: argparse.Namespace) -> Any:
    """The typed PretrainConfig, composed from configs/ exactly as `nlptool pretrain` does."""
    from hydra import compose, initialize_config_dir

    model_arch = "gpt" if args.model.startswith("gpt") else "bert"
    objective = args.objective or ("clm" if model_arch == "gpt" else "mlm")
    tokenizer = args.tokenizer or ("bpe" if objective == "clm" else "wordpiece")
    files = ",".join(str(Path(p).resolve()) for p in str(args.data).split(","))
    overrides = [
        f"model={args.model}",
        f"objective={objective}",
        f"tokenizer={tokenizer}",
        "data=text",
        f"data.train_files='{files}'",
        f"trainer.max_steps={args.steps}",
        f"trainer.eval_every={args.eval_every}",
        "trainer.progress=false",
        *([f"trainer.seed={args.seed}"] if args.seed is not None else []),
        *args.overrides,
    ]
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return check_config(compose(config_name="pretrain", overrides=overrides))


# ---------------------------------------------------------------------------------------------
# The Hugging Face side


class HFObjective:
    """nlptool's `Objective` protocol over a `transformers` model that computes its own loss.

    HF returns the mean over the predictions; multiplying by the prediction count of the batch
    (the one nlptool's objective gives the training loop) turns it back into a sum. For mlm_nsp
    HF returns only mlm + nsp; the NSP part is HF's cross-entropy of `seq_relationship_logits`,
    recomputed here to split the two terms.
    """

    def __init__(self, ours: Objective) -> None:
        self.ours = ours
        self.name = ours.name
        self.terms = ours.terms
        self.perplexity_term = ours.perplexity_term
        complete(self, optional_parts(self))  # evaluation hooks and the rest, as the built-ins

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.ours.counts(batch)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, LossTerm]:
        counts = self.counts(batch)
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        if self.name == "clm":
            labels = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
            out = model(input_ids=ids, attention_mask=mask, labels=labels)  # shifts internally
            targets = labels[:, 1:]
            predicted = out.logits[:, :-1].argmax(dim=-1)  # (B, T-1)
            correct = ((predicted == targets) & (targets != IGNORE_INDEX)).sum()
            return {"clm": LossTerm(_mean_to_sum(out.loss, counts["clm"]), correct)}
        labels = batch["mlm_labels"]
        kwargs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        kwargs["token_type_ids"] = batch.get("token_type_ids")
        if self.name == "mlm_nsp":
            kwargs["next_sentence_label"] = batch["nsp_labels"]
        out = model(**kwargs)
        logits = out.logits if self.name == "mlm" else out.prediction_logits  # (B, T, V)
        selected = labels != IGNORE_INDEX
        mlm_correct = (logits[selected].argmax(dim=-1) == labels[selected]).sum()
        if self.name == "mlm":
            return {"mlm": LossTerm(_mean_to_sum(out.loss, counts["mlm"]), mlm_correct)}
        nsp_logits = out.seq_relationship_logits  # (B, 2)
        nsp_mean = F.cross_entropy(nsp_logits.float(), batch["nsp_labels"])
        nsp_correct = (nsp_logits.argmax(dim=-1) == batch["nsp_labels"]).sum()
        return {
            "mlm": LossTerm(_mean_to_sum(out.loss - nsp_mean, counts["mlm"]), mlm_correct),
            "nsp": LossTerm(_mean_to_sum(nsp_mean, counts["nsp"]), nsp_correct),
        }


def _mean_to_sum(mean: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    # HF's mean over no predictions is NaN; the sum over none is 0.
    return mean * count if int(count) > 0 else mean.nan_to_num(0.0) * 0.0


# ---------------------------------------------------------------------------------------------
# Training both


@dataclass
class Side:
    """One of the two models, with its trainer and what was measured of it."""

    name: str
    trainer: Trainer
    curve: list[dict[str, float]] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0

    def evaluate(self, step: int) -> None:
        metrics = self.trainer.evaluate()
        self.curve.append({"step": step, **{k.split("/", 1)[1]: v for k, v in metrics.items()}})

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def train_side_by_side(cfg: Any, sides: list[Side], eval_every: int) -> None:
    """A step of each in turn, on the same batch; validation of both every `eval_every` steps."""
    trainer_cfg = cfg.trainer
    for side in sides:
        side.evaluate(0)
    batches = sides[0].trainer.train_batches()  # the Trainer's own StepSampler and DataLoader
    accumulation = sides[0].trainer.accumulation
    started = time.perf_counter()
    for step in range(1, trainer_cfg.max_steps + 1):
        micro_batches = [next(batches) for _ in range(accumulation)]
        tokens = sum(num_tokens(b) for b in micro_batches)
        for side in sides:
            t0 = time.perf_counter()
            out = side.trainer.train_step(micro_batches)
            side.train_loss.append(float(out["loss"]))  # float() waits for the step to finish
            side.seconds += time.perf_counter() - t0
            side.tokens += tokens
            side.trainer.step = step
        if step % eval_every == 0 or step == trainer_cfg.max_steps:
            for side in sides:
                side.evaluate(step)
            a, b = (side.curve[-1]["loss"] for side in sides)
            console.print(
                f"step {step:>5}  train {sides[0].train_loss[-1]:.4f} / "
                f"{sides[1].train_loss[-1]:.4f}  valid {a:.4f} / {b:.4f}  "
                f"({_rel(a, b):+.2%})  {time.perf_counter() - started:.0f}s"
            )


def _rel(ours: float, theirs: float) -> float:
    """Relative difference of nlptool's value from the HF reference."""
    return (ours - theirs) / theirs


def curves_table(sides: list[Side], objective: Objective) -> Table:
    ours, theirs = sides
    table = Table(title=f"Validation loss ({objective.name})", title_justify="left")
    table.add_column("step", justify="right")
    table.add_column("nlptool", justify="right")
    table.add_column("transformers", justify="right")
    table.add_column("rel. diff", justify="right")
    per_term = len(objective.terms) > 1
    if per_term:
        for term in objective.terms:
            table.add_column(f"{term} (nlptool / HF)", justify="right")
    table.add_column("accuracy (nlptool / HF)", justify="right")
    acc = f"{objective.perplexity_term}_accuracy"
    for a, b in zip(ours.curve, theirs.curve):
        row = [str(a["step"]), f"{a['loss']:.4f}", f"{b['loss']:.4f}"]
        row.append(f"{_rel(a['loss'], b['loss']):+.2%}")
        if per_term:
            for term in objective.terms:
                row.append(f"{a[f'{term}_loss']:.4f} / {b[f'{term}_loss']:.4f}")
        row.append(f"{a[acc]:.4f} / {b[acc]:.4f}")
        table.add_row(*row)
    return table


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    datasets.disable_progress_bars()  # as the CLI does (it sets the environment variable)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose_config(args)
    device = resolve_device(cfg.trainer.device)
    data = prepare_data(cfg)
    model_cfg = model_config_for(cfg, data.tokenizer)
    objective_name = cfg.objective.name

    seed_everything(cfg.trainer.seed)
    our_model = build_model(model_cfg)
    seed_everything(cfg.trainer.seed)
    eos_id = data.tokenizer.require("eos", "clm") if objective_name == "clm" else None
    hf_model = hf_model_for(model_cfg, objective_name, args.attn, eos_id)

    ours_objective = build_objective(objective_name)
    with tempfile.TemporaryDirectory(prefix="compare_hf-") as tmp:
        sides = []
        for name, model, objective in (
            ("nlptool", our_model, ours_objective),
            ("transformers", hf_model, HFObjective(ours_objective)),
        ):
            job = TrainingJob(
                model=model,
                objective=objective,
                train_data=data.train,
                valid_data=data.valid,
                collate=make_collate(collate, pad_id=data.tokenizer.pad_id),
                tokenizer=data.tokenizer,
                config_yaml=to_yaml(cfg),
                run_dir=Path(tmp) / name,  # nothing is saved: the loop below never checkpoints
            )
            sides.append(Side(name, Trainer(cfg.trainer, job, device)))

        t = cfg.trainer
        console.print(
            summary_table(
                "compare_hf",
                [
                    ("model", f"{model_cfg.name} ({model_cfg.arch})"),
                    ("nlptool", f"{type(our_model).__name__}, {count_parameters(our_model):,}"),
                    (
                        "transformers",
                        f"{type(hf_model).__name__} ({hf_model.config._attn_implementation}), "
                        f"{count_parameters(hf_model):,}",
                    ),
                    ("objective", objective_name),
                    ("tokenizer", f"{cfg.tokenizer.kind}, {data.tokenizer.vocab_size:,} tokens"),
                    (
                        "data",
                        f"{data.description}: {len(data.train):,} train / {len(data.valid):,} "
                        f"valid examples of {cfg.data.max_seq_len} tokens",
                    ),
                    (
                        "trainer",
                        f"{t.max_steps} steps x {t.batch_size}, lr {t.lr:g} {t.schedule}, "
                        f"warm-up {t.warmup_steps}, seed {t.seed}, {device}, "
                        f"{torch.get_num_threads()} threads",
                    ),
                ],
            )
        )
        train_side_by_side(cfg, sides, args.eval_every)

    console.print(curves_table(sides, ours_objective))
    final = _rel(sides[0].curve[-1]["loss"], sides[1].curve[-1]["loss"])
    for side in sides:
        console.print(
            f"{side.name:>12}: final valid loss {side.curve[-1]['loss']:.4f}, "
            f"{side.tokens_per_s:,.0f} tokens/s ({side.seconds:.0f}s training)"
        )
    ok = abs(final) <= args.tolerance
    verdict = "[green]within[/]" if ok else "[red]outside[/]"
    console.print(f"final relative difference {final:+.2%}: {verdict} ±{args.tolerance * 100:g}%")
    if args.out:
        result = {
            "model": model_cfg.name,
            "objective": objective_name,
            "tokenizer": cfg.tokenizer.kind,
            "config": to_yaml(cfg),
            "final_rel_diff": final,
            "tolerance": args.tolerance,
            "passed": ok,
            "sides": {
                side.name: {
                    "valid": side.curve,
                    "train_loss": side.train_loss,
                    "tokens_per_s": side.tokens_per_s,
                    "parameters": count_parameters(side.trainer.model),
                }
                for side in sides
            },
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"Wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
