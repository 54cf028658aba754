#!/usr/bin/env bash
# GPU check: bf16 + torch.compile pretraining of bert-base (mlm) and gpt2 (clm, seq 1024) on the
# builtin corpus, the same gpt2 run without compile, the fp16 + GradScaler path, and
# scripts/bench.py against transformers. Prints the tokens/s (and MFU) of each run; the full logs
# and metrics.jsonl land in OUT_DIR.
#   bash scripts/gpu_check.sh [OUT_DIR]
set -uo pipefail
out=${1:-runs/gpu-check}
mkdir -p "$out"
export NLPTOOL_CACHE=${NLPTOOL_CACHE:-/tmp/nlptool-cache}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  local start=$SECONDS
  timeout "$limit" python3 -m nlptool pretrain "$@" hydra.run.dir="$out/$name" \
    trainer.progress=false trainer.eval_every=0 trainer.save_every=0 >"$out/$name.log" 2>&1
  echo "rc=$? $((SECONDS - start))s"
  grep -E "tok/s|valid/loss|Error|error" "$out/$name.log" | tail -4  # tok/s lines carry MFU
  cp "$out/$name/metrics.jsonl" "$out/$name.metrics.jsonl" 2>/dev/null
}

common="trainer=gpu trainer.warmup_steps=10 trainer.log_every=10 trainer.num_workers=4 model.vocab_multiple=64"
# shellcheck disable=SC2086
run bert-base-bf16-compile 170 model=bert-base $common trainer.max_steps=80 \
  trainer.batch_size=256 trainer.micro_batch_size=256 tokenizer.vocab_size=30522
# shellcheck disable=SC2086
run gpt2-bf16-compile 170 model=gpt2 objective=clm tokenizer=bpe tokenizer.vocab_size=50257 \
  $common data.max_seq_len=1024 trainer.max_steps=40 trainer.batch_size=32 trainer.micro_batch_size=16
# shellcheck disable=SC2086
run gpt2-bf16-eager 120 model=gpt2 objective=clm tokenizer=bpe tokenizer.vocab_size=50257 \
  $common trainer.compile=false data.max_seq_len=1024 trainer.max_steps=40 trainer.batch_size=32 \
  trainer.micro_batch_size=16
run bert-tiny-fp16 90 model=bert-tiny trainer.device=cuda trainer.precision=fp16 trainer.max_steps=30 \
  trainer.log_every=10
# FSDP2 and DDP on the one GPU (a process group of one, NCCL): bf16 gathers, sharded step, save.
# shellcheck disable=SC2086
run gpt2-fsdp-bf16 120 model=gpt2 objective=clm tokenizer=bpe tokenizer.vocab_size=50257 \
  $common trainer.compile=false trainer.strategy=fsdp data.max_seq_len=1024 trainer.max_steps=20 \
  trainer.batch_size=16 trainer.micro_batch_size=8
run bert-tiny-ddp 90 model=bert-tiny trainer.device=cuda trainer.strategy=ddp trainer.max_steps=20
# nlptool against transformers on the same GPU: bf16 autocast, fused AdamW and torch.compile on
# both sides; gpt2 (124M) at seq 1024 and bert-base at 128, MFU against the H200's dense bf16 peak.
echo "== bench"
timeout 200 python3 scripts/bench.py --device cuda --precision bf16 --compile --case clm \
  --model gpt2 --seq 1024 --batch 16 --steps 20 --out "$out/bench-gpt2.json" 2>&1 | tail -8
timeout 200 python3 scripts/bench.py --device cuda --precision bf16 --compile --case mlm_nsp \
  --model bert-base --seq 128 --batch 128 --steps 20 --memory --out "$out/bench-bert.json" 2>&1 \
  | tail -8
