"""Data-parallel scaling: the same pretraining run on 1 process and on N (torchrun, DDP or FSDP).

    python scripts/scaling.py                          # bert-mini mlm_nsp, 1 vs 2 processes, CPU
    python scripts/scaling.py --nproc 1 2 4 --strategy fsdp --model gpt-mini --objective clm
    python scripts/scaling.py --device cuda --nproc 1 8 --model bert-base --batch 256

Every run uses the same global batch, data and seed, so they take the same steps (the script
checks the last logged loss agrees); what changes is how the work is spread. Throughput is the
median of the logged tokens/s windows after the first (warm-up) one, in total and per process.
On CPU the machine's cores are shared out: `--threads` per run in total, divided among the
processes (torchrun's OMP_NUM_THREADS), so the comparison is at equal compute; a 1-process run
with the threads of one rank is added as the per-rank baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(nproc: int, threads: int, args: argparse.Namespace, workdir: Path) -> dict:
    run_dir = workdir / f"np{nproc}-t{threads}"
    overrides = [
        f"model={args.model}",
        f"objective={args.objective}",
        f"tokenizer={'bpe' if args.objective == 'clm' else 'wordpiece'}",
        f"trainer.device={args.device}",
        f"trainer.precision={args.precision}",
        f"trainer.max_steps={args.steps}",
        f"trainer.batch_size={args.batch}",
        f"trainer.micro_batch_size={args.micro or args.batch // max(args.nproc)}",
        f"data.max_seq_len={args.seq}",
        f"trainer.log_every={args.log_every}",
        "trainer.eval_every=0",
        "trainer.eval_batches=1",
        "trainer.schedule=constant",
        "trainer.warmup_steps=0",
        "trainer.progress=false",
        "model.dropout=0",  # (dropout masks are per rank: off, so the losses can be compared)
        "model.attention_dropout=0",
        f"trainer.strategy={args.strategy if nproc > 1 else 'single'}",
        f"hydra.run.dir={run_dir}",
        *args.overrides,
    ]
    per_process = max(1, threads // nproc)  # (torchrun keeps an OMP_NUM_THREADS it is given)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(per_process)}
    if nproc == 1:
        cmd = [sys.executable, "-m", "nlptool", "pretrain", *overrides]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", "-m", "nlptool", "pretrain", *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/tokens_per_s" in r]
    speeds = [r["train/tokens_per_s"] for r in train[1:]] or [train[0]["train/tokens_per_s"]]
    total = statistics.median(speeds)
    return {
        "processes": nproc,
        "threads_per_process": per_process,
        "tokens_per_s": total,
        "tokens_per_s_per_process": total / nproc,
        "last_loss": train[-1]["train/loss"],
        "mfu": train[-1].get("train/mfu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bert-mini")
    parser.add_argument("--objective", default="mlm_nsp")
    parser.add_argument("--strategy", default="ddp", choices=("ddp", "fsdp"))
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--micro", type=int, default=0, help="micro-batch (default: batch / max nproc)"
    )
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("overrides", nargs="*", help="more nlptool overrides")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        plan = [(n, args.threads) for n in args.nproc]
        if args.device == "cpu" and max(args.nproc) > 1:  # one rank's share, as one process
            plan.insert(1, (1, max(1, args.threads // max(args.nproc))))
        for nproc, threads in plan:
            print(f"running {nproc} process(es), {threads} thread(s) in all ...", flush=True)
            results.append(run(nproc, threads, args, Path(tmp)))
    base = results[0]["tokens_per_s"]
    print(
        f"\n{args.model} {args.objective}, global batch {args.batch} x {args.seq} tokens, "
        f"{args.device} {args.precision}, {args.strategy}\n"
    )
    print("| processes | threads each | tokens/s total | per process | vs 1 process | last loss |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['processes']} | {r['threads_per_process']} | {r['tokens_per_s']:,.0f} | "
            f"{r['tokens_per_s_per_process']:,.0f} | {r['tokens_per_s'] / base:.2f}x | "
            f"{r['last_loss']:.6f} |"
        )
    losses = {round(r["last_loss"], 4) for r in results}
    if len(losses) > 1:
        print(f"\nwarning: the runs' last losses differ: {sorted(losses)}")
    if args.out:
        args.out.write_text(
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
