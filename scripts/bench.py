"""Training speed of nlptool against Hugging Face `transformers`: same model shape, data, batch,
optimizer and machine, measured in one process.

Cases (`--case`, several allowed):
- `mlm_nsp`: BERT pretraining (bert-mini, seq 128) against `BertForPreTraining`;
- `clm`: GPT pretraining (gpt-mini, seq 128) against `GPT2LMHeadModel`;
- `sst2`: fine-tuning on the real SST-2 training sentences against
  `BertForSequenceClassification` fed by `DataCollatorWithPadding` in random order (what the
  `transformers` Trainer does by default), counted in examples/s.

nlptool runs its real training step (`Trainer.train_step`: its objective, collate, batching and
AdamW); `transformers` runs the loop its Trainer runs (forward with labels, backward, clip the
gradient norm to 1, AdamW step, schedule step), with the same AdamW settings and parameter groups.
Both pretraining sides get the very same batches (tokens, masks, NSP pairs); fine-tuning sides
draw their own batches from the same encoded examples, each the way its library batches.

Machines drift (2-core cloud machines by 3-4x for minutes), so the two are stepped alternately
(A B, B A, ...), warm-up steps are dropped, a 1024 x 1024 fp32 matmul probe is timed beside every
step, and the speed ratio is the median of the per-pair ratios, with its interquartile range.
MFU is the FLOPs each side actually executes (3x the forward matmuls: linear layers, attention
scores and mixing, the heads at the positions each computes them, padding included) over the
probe's FLOP/s (CPU) or the device's dense bf16/fp32 peak (`--peak-tflops`, CUDA).

Peak memory (`--memory`) runs each side alone in a fresh subprocess: peak RSS growth over the
process before the model was built on CPU, `torch.cuda.max_memory_allocated` on CUDA.

    python scripts/bench.py                       # all three cases on CPU
    python scripts/bench.py --case sst2 --steps 60
    python scripts/bench.py --device cuda --precision bf16 --compile --case clm --model gpt2 \
        --seq 1024 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hf_models import hf_model_for  # scripts/, beside this file

from nlptool.cli import config_dir, register_configs
from nlptool.console import console
from nlptool.models.config import ModelConfig
from nlptool.schema import check_config
from nlptool.training.flops import device_peak_flops, matmul_flops_per_s
from nlptool.training.runtime import autocast_context

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = {
    "mlm_nsp": {"model": "bert-mini", "objective": "mlm_nsp", "tokenizer": "wordpiece"},
    "clm": {"model": "gpt-mini", "objective": "clm", "tokenizer": "bpe"},
    "sst2": {"model": "bert-mini", "task": "sst2", "tokenizer": "wordpiece"},
}
# Timed step pairs: fine-tuning batches differ in length from step to step, so more of them.
DEFAULT_STEPS = {"mlm_nsp": 40, "clm": 40, "sst2": 200}
# Target speed-ups (nlptool / transformers), from the performance issue.
TARGETS = {"mlm_nsp": 1.3, "clm": 1.0, "sst2": 1.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="%(default)s")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed step pairs (default: 40 for pretraining, 200 for sst2, whose batches vary)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed pairs first: %(default)s")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step: %(default)s")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence: %(default)s")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: %(default)s")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16: %(default)s")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--attn", default="sdpa", help="transformers attn_implementation: %(default)s"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="GPU dense peak (default: known GPUs')"
    )
    parser.add_argument("--model", default=None, help="another model preset for every case")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile both models (trainer.compile)"
    )
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--only", choices=["nlptool", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.steps is not None and args.steps < 3) or args.warmup < 0:
        parser.error("--steps must be >= 3 and --warmup >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# Configs and data, exactly as the CLI composes and prepares them


def compose(case: str, args: argparse.Namespace, cache: Path) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    spec = CASES[case]
    overrides = [
        f"model={args.model or spec['model']}",
        f"trainer.compile={str(args.compile).lower()}",
        f"tokenizer={spec['tokenizer']}",
        f"trainer.batch_size={args.batch}",
        f"trainer.device={args.device}",
        f"trainer.precision={args.precision}",
        "trainer.progress=false",
        f"data.cache_dir={cache}",
    ]
    if "task" in spec:
        verb = "finetune"
        overrides += [
            f"task={spec['task']}",
            f"task.data_dir={args.data / 'sst2'}",
            f"task.max_seq_len={args.seq}",
        ]
    else:
        verb = "pretrain"
        overrides += [
            f"objective={spec['objective']}",
            "data=text",
            f"data.train_files={args.data / 'tinyshakespeare' / 'input.txt'}",
            f"data.max_seq_len={args.seq}",
        ]
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return check_config(hydra_compose(config_name=verb, overrides=overrides))


@dataclass
class Prepared:
    cfg: Any
    model_cfg: ModelConfig
    objective: Any  # nlptool Objective, or the task
    train: Any  # the encoded training examples
    collate: Any
    tokenizer: Any
    seconds: float  # data preparation, tokenizer training included
    num_labels: int | None = None


def prepare(case: str, args: argparse.Namespace, cache: Path) -> Prepared:
    from nlptool.objectives import build_objective
    from nlptool.verbs.prepare import model_config_for, prepare_data, prepare_task

    cfg = compose(case, args, cache)
    started = time.perf_counter()
    if "task" in CASES[case]:
        tokenizer, task, data = prepare_task(cfg, None, ("train",))
        seconds = time.perf_counter() - started
        model_cfg = model_config_for(cfg, tokenizer)
        return Prepared(
            cfg, model_cfg, task, data["train"], task.collate, tokenizer, seconds, len(task.labels)
        )
    objective = build_objective(cfg.objective)
    data = prepare_data(cfg, None, objective)
    seconds = time.perf_counter() - started
    model_cfg = model_config_for(cfg, data.tokenizer)
    return Prepared(
        cfg, model_cfg, objective, data.train, objective.collate, data.tokenizer, seconds
    )


# ---------------------------------------------------------------------------------------------
# The two sides


class NlptoolSide:
    """nlptool's own Trainer: its batching (length-grouped for tasks), objective and step."""

    name = "nlptool"

    def __init__(self, prep: Prepared, device: torch.device) -> None:
        from nlptool.training.loop import Trainer, TrainingJob

        torch.manual_seed(0)
        model = prep.objective.build_model(prep.model_cfg)
        job = TrainingJob(
            model=model,
            objective=prep.objective,
            train_data=prep.train,
            valid_data=prep.train,
            collate=prep.collate,
            tokenizer=prep.tokenizer,
            config_yaml="",
            run_dir=Path(tempfile.mkdtemp(prefix="nlptool-bench-")),
        )
        self.trainer = Trainer(prep.cfg.trainer, job, device)
        self.trainer.cfg.max_steps = 10**9
        self.batches = self.trainer.train_batches()
        self.model = model

    def next_batch(self) -> dict[str, torch.Tensor]:
        return next(self.batches)

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        out = self.trainer.train_step([batch])
        float(out["loss"])  # wait for the step (CUDA)
        self.trainer.step += 1


class HFSide:
    """The `transformers` model with the loop of the `transformers` Trainer."""

    name = "transformers"

    def __init__(self, prep: Prepared, device: torch.device, args: argparse.Namespace) -> None:
        from nlptool.training.optim import build_optimizer, build_scheduler

        torch.manual_seed(0)
        objective = getattr(prep.cfg, "objective", None)
        self.kind = "task" if prep.num_labels is not None else objective.name
        eos = prep.tokenizer.ids.get("eos")
        self.model = hf_model_for(
            prep.model_cfg,
            "" if self.kind == "task" else objective.name,
            args.attn,
            eos,
            num_labels=prep.num_labels,
        ).to(device)
        self.model.train()
        self.device, self.precision = device, args.precision
        tcfg = prep.cfg.trainer
        # The same AdamW (decay groups, betas, eps, fused) and schedule as nlptool's.
        self.optimizer = build_optimizer(self.model, tcfg, device)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.scheduler = build_scheduler(self.optimizer, tcfg)
        self.grad_clip = tcfg.grad_clip
        if self.kind == "task":
            self.batches = self._padded_random_batches(prep, tcfg.batch_size, tcfg.seed)

    def _padded_random_batches(self, prep: Prepared, batch_size: int, seed: int):
        """Random order, padded per batch by DataCollatorWithPadding (the HF Trainer default)."""
        from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

        hf_tok = PreTrainedTokenizerFast(
            tokenizer_object=prep.tokenizer.tokenizer, pad_token="[PAD]"
        )
        hf_tok.pad_token_id = prep.tokenizer.pad_id
        collator = DataCollatorWithPadding(hf_tok, return_tensors="pt")
        features = prep.train.features.with_format(None)
        ids, types, labels = (
            features["input_ids"],
            features["token_type_ids"],
            features["labels"],
        )
        rng = np.random.default_rng(seed)
        while True:
            order = rng.permutation(len(ids))
            for start in range(0, len(order) - batch_size + 1, batch_size):
                rows = [
                    {"input_ids": ids[i], "token_type_ids": types[i], "labels": labels[i]}
                    for i in order[start : start + batch_size]
                ]
                yield collator(rows)

    def next_batch(self) -> dict[str, torch.Tensor]:
        return next(self.batches)

    def hf_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """nlptool's batch under the names `transformers` models take."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.kind == "task":
            return batch
        out = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
        if self.kind == "clm":
            ids, mask = out["input_ids"], out["attention_mask"]
            out["labels"] = ids if mask is None else ids.masked_fill(mask == 0, -100)
            return out
        out["token_type_ids"] = batch.get("token_type_ids")
        out["labels"] = batch["mlm_labels"]
        if self.kind == "mlm_nsp":
            out["next_sentence_label"] = batch["nsp_labels"]
        return out

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        inputs = self.hf_inputs(batch)
        with autocast_context(self.device, self.precision):
            loss = self.forward(**inputs).loss
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        float(loss.detach())


# ---------------------------------------------------------------------------------------------
# Measuring helpers


def examples_and_tokens(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    mask = batch.get("attention_mask")
    ids = batch["input_ids"]
    return ids.shape[0], int(mask.sum()) if mask is not None else ids.numel()


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Timing:
    seconds: list[float]
    examples: list[int]
    tokens: list[int]
    flops: list[float]


def run_case(case: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    device = torch.device(args.device)
    prep = prepare(case, args, cache)
    kind = "task" if prep.num_labels is not None else prep.cfg.objective.name
    ours, theirs = NlptoolSide(prep, device), HFSide(prep, device, args)
    n_params = {s.name: sum(p.numel() for p in s.model.parameters()) for s in (ours, theirs)}
    timings = {s.name: Timing([], [], [], []) for s in (ours, theirs)}
    probes: list[float] = []
    shared = kind != "task"  # pretraining: both sides get the very same batch
    console.print(
        f"[bold]{case}[/]: {prep.cfg.model.name}, {n_params['nlptool']:,} / "
        f"{n_params['transformers']:,} parameters, batch {args.batch} x {args.seq}, "
        f"{args.device} {args.precision}, {torch.get_num_threads()} threads"
    )
    steps = args.steps or DEFAULT_STEPS[case]
    for pair in range(args.warmup + steps):
        batch = ours.next_batch() if shared else None
        order = (ours, theirs) if pair % 2 == 0 else (theirs, ours)
        for side in order:
            b = batch if shared else side.next_batch()
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            side.step(b)
            seconds = time.perf_counter() - started
            probe = matmul_flops_per_s(device) if device.type == "cpu" else None
            if pair < args.warmup:
                continue
            if probe:
                probes.append(probe)
            t = timings[side.name]
            examples, tokens = examples_and_tokens(b)
            t.seconds.append(seconds)
            t.examples.append(examples)
            t.tokens.append(tokens)
            # The blocks are the same on both sides; transformers' MLM head runs everywhere.
            head = prep.objective.head_flops(prep.model_cfg, b)
            if side is theirs and kind in ("mlm", "mlm_nsp", "sop"):
                head = prep.objective.head_flops(prep.model_cfg, b, all_positions=True)
            t.flops.append(3.0 * (ours.model.forward_flops(b) + head))
    return summarize(case, kind, prep, timings, probes, n_params, args)


def summarize(case, kind, prep, timings, probes, n_params, args) -> dict[str, Any]:
    unit = "examples" if kind == "task" else "tokens"
    rates = {
        name: [
            (t.examples[i] if unit == "examples" else t.tokens[i]) / t.seconds[i]
            for i in range(len(t.seconds))
        ]
        for name, t in timings.items()
    }
    ratios = sorted(x / y for x, y in zip(rates["nlptool"], rates["transformers"]))
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    if args.device == "cpu":
        peak = statistics.median(probes)
        peak_note = f"matmul probe {peak / 1e9:.1f} GFLOP/s"
    else:
        known = device_peak_flops(torch.device(args.device), args.precision)
        peak = args.peak_tflops * 1e12 if args.peak_tflops else known
        if peak is None:
            raise SystemExit("unknown GPU: give its dense peak with --peak-tflops")
        peak_note = f"peak {peak / 1e12:.0f} TFLOP/s"
    result = {
        "case": case,
        "unit": unit,
        "model": prep.cfg.model.name,
        "batch": args.batch,
        "seq": args.seq,
        "device": args.device,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "steps": len(ratios),
        "ratio_median": float(median),
        "ratio_q1": float(q1),
        "ratio_q3": float(q3),
        "target": TARGETS[case],
        "peak_flops": peak,
        "peak_note": peak_note,
        "data_prep_seconds": prep.seconds,
        "train_examples": len(prep.train),
        "parameters": n_params,
    }
    for name, t in timings.items():
        total = sum(t.seconds)
        result[name] = {
            f"{unit}_per_s": statistics.median(rates[name]),
            "tokens_per_example": float(np.mean(t.tokens)) / float(np.mean(t.examples)),
            "mfu": sum(t.flops) / total / peak,
            "seconds_per_step": statistics.median(t.seconds),
        }
    per_epoch = len(prep.train) / result["nlptool"][f"{unit}_per_s"]
    if unit == "tokens":
        per_epoch = len(prep.train) * args.seq / result["nlptool"]["tokens_per_s"]
    result["epoch_seconds_nlptool"] = per_epoch
    return result


def print_result(r: dict[str, Any]) -> None:
    unit = r["unit"]
    ours, theirs = r["nlptool"], r["transformers"]
    verdict = "[green]met[/]" if r["ratio_median"] >= r["target"] else "[red]missed[/]"
    console.print(
        f"  {unit}/s  nlptool {ours[f'{unit}_per_s']:,.0f}   transformers "
        f"{theirs[f'{unit}_per_s']:,.0f}   ratio median {r['ratio_median']:.2f}x "
        f"(IQR {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}, {r['steps']} pairs; target "
        f"{r['target']}x {verdict})"
    )
    console.print(
        f"  MFU     nlptool {ours['mfu']:.2f}   transformers {theirs['mfu']:.2f}   "
        f"({r['peak_note']})"
    )
    if "memory_mb" in ours:
        console.print(
            f"  peak memory  nlptool {ours['memory_mb']:,.0f} MB   transformers "
            f"{theirs['memory_mb']:,.0f} MB"
        )
    console.print(
        f"  data preparation {r['data_prep_seconds']:.1f} s (tokenizer training included) vs "
        f"one epoch of training {r['epoch_seconds_nlptool']:.0f} s "
        f"({r['train_examples']:,} examples)"
    )


# ---------------------------------------------------------------------------------------------
# Memory: each side alone in a fresh process


def measure_memory_alone(case: str, side: str, args: argparse.Namespace, cache: Path) -> float:
    """Peak memory (MB) of `side` training alone for a few steps, in a subprocess."""
    cmd = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--only",
        side,
        "--steps",
        "3",
        "--warmup",
        "2",
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--data",
        str(args.data),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    if args.compile:
        cmd.append("--compile")
    env = {**os.environ, "NLPTOOL_BENCH_CACHE": str(cache)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK_MB "):
            return float(line.split()[1])
    raise SystemExit(f"memory run of {side} failed:\n{proc.stdout}\n{proc.stderr}")


def only_one_side(args: argparse.Namespace, cache: Path) -> None:
    """--only: build one side, train it a few steps, print its peak memory growth."""
    case = args.case[0]
    device = torch.device(args.device)
    prep = prepare(case, args, cache)
    # Pretraining batches come from nlptool's pipeline for both sides: drawn before measuring.
    batches = None
    if prep.num_labels is None:
        feeder = NlptoolSide(prep, torch.device("cpu"))
        batches = [feeder.next_batch() for _ in range(args.warmup + args.steps)]
        del feeder
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _reset_peak_rss()
    before = _status_mb("VmRSS")
    side = NlptoolSide(prep, device) if args.only == "nlptool" else HFSide(prep, device, args)
    for i in range(args.warmup + args.steps):
        side.step(batches[i] if batches else side.next_batch())
    if device.type == "cuda":
        print(f"PEAK_MB {torch.cuda.max_memory_allocated() / 2**20:.1f}")
    else:
        print(f"PEAK_MB {_status_mb('VmHWM') - before:.1f}")


def _reset_peak_rss() -> None:
    """Linux: start the peak-RSS mark (VmHWM) afresh from the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(os.environ.get("NLPTOOL_BENCH_CACHE") or tempfile.mkdtemp(prefix="bench-cache-"))
    if args.only:
        only_one_side(args, cache)
        return 0
    results = []
    for case in args.case:
        result = run_case(case, args, cache)
        if args.memory:
            for side in ("nlptool", "transformers"):
                result[side]["memory_mb"] = measure_memory_alone(case, side, args, cache)
        print_result(result)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
