"""What each verb does, from a composed config to a trained, saved and evaluated model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from nlptool.cache import nlptool_cache_dir
from nlptool.config import TaskConfig, check_config, to_yaml
from nlptool.data.corpus import load_corpus, tokenize_documents
from nlptool.data.pretraining import (
    MaskingConfig,
    PretrainingExamples,
    collate,
    nsp_instances,
    pack_blocks,
)
from nlptool.data.readers import decoding, describe_replaced
from nlptool.data.tokenizer import TextTokenizer, get_tokenizer
from nlptool.errors import UserError
from nlptool.models import build_model, count_parameters
from nlptool.models.config import ModelConfig
from nlptool.objectives import build_objective
from nlptool.training import checkpoint as ckpt
from nlptool.training import distributed, signals
from nlptool.training.distributed import Dist
from nlptool.training.loggers import Loggers, check_loggers
from nlptool.training.logging import console, metrics_table, show_end, show_start
from nlptool.training.loop import (
    Trainer,
    TrainingInterrupted,
    TrainingJob,
    make_collate,
    resolve_device,
    seed_everything,
)

# Sections of a checkpoint's config that define the model and how its inputs are made: a run
# resumed from that checkpoint must not change them.
FIXED_ON_RESUME = ("model", "tokenizer", "objective")
# Trainer settings a resume must keep: they pick the data order and masks (batch_size, seed), or
# the checkpoint's optimizer and schedule state would silently override a new value. The rest may
# change (max_steps, micro_batch_size, the eval/save/log cadence, keep_last, device, precision...).
TRAINER_FIXED_ON_RESUME = (
    "batch_size", "seed", "lr", "schedule", "warmup_steps", "weight_decay", "beta1", "beta2", "eps",
)  # fmt: skip


@dataclass
class PreparedData:
    tokenizer: TextTokenizer
    train: PretrainingExamples
    valid: PretrainingExamples
    description: str
    seconds: float


def cache_dir_for(cfg) -> Path:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else nlptool_cache_dir()


@contextlib.contextmanager
def reading(cfg) -> Iterator[None]:
    """Read files under the data.encoding_errors policy; say afterwards what was replaced."""
    with decoding(cfg.data.encoding_errors) as replaced:
        yield
    if replaced:
        console.print(f"[yellow]{describe_replaced(replaced)}[/]")


def prepare_data(
    cfg, tokenizer: TextTokenizer | None = None, objective: Any = None
) -> PreparedData:
    """Corpus -> tokenizer (given, cached or trained) -> tokenized documents -> examples."""
    start = time.perf_counter()
    datasets.disable_progress_bars()  # the console status lines say what is happening
    cache_dir = cache_dir_for(cfg)
    with console.status("Reading the corpus"), reading(cfg):
        corpus = load_corpus(cfg.data, cache_dir)
    if tokenizer is None:
        with console.status(f"Preparing the {cfg.tokenizer.kind} tokenizer"):
            tokenizer, cached = get_tokenizer(
                cfg.tokenizer,
                corpus.fingerprint,
                corpus.training_texts(cfg.tokenizer.max_training_chars),
                cache_dir,
            )
        if not cached and not cfg.trainer.quiet:
            console.print(
                f"Trained a {cfg.tokenizer.kind} tokenizer: {tokenizer.vocab_size:,} tokens"
            )
    with console.status("Tokenizing"):
        train_docs = tokenize_documents(corpus.train, tokenizer, cfg.data.num_proc)
        valid_docs = tokenize_documents(corpus.valid, tokenizer, cfg.data.num_proc)
    train = build_examples(cfg, tokenizer, train_docs, instance=objective)
    valid = build_examples(cfg, tokenizer, valid_docs, valid=True, instance=objective)
    if len(train) == 0:
        raise UserError(
            f"The training data ({corpus.description}) are too small for one example of "
            f"data.max_seq_len={cfg.data.max_seq_len} tokens; add text or lower data.max_seq_len"
        )
    if len(valid) == 0:
        raise UserError(
            f"The validation data of {corpus.description} are too small for one example of "
            f"data.max_seq_len={cfg.data.max_seq_len} tokens; give more validation text "
            "(data.valid_files or a larger data.valid_fraction) or lower data.max_seq_len"
        )
    return PreparedData(tokenizer, train, valid, corpus.description, time.perf_counter() - start)


def build_examples(
    cfg, tokenizer: TextTokenizer, docs: datasets.Dataset, valid: bool = False, instance=None
) -> PretrainingExamples:
    objective, max_len = cfg.objective.name, cfg.data.max_seq_len
    seed = cfg.trainer.seed
    if cfg.objective._target_:  # the user's objective makes its own examples
        custom = instance if instance is not None else build_objective(cfg.objective)
        return custom.build_examples(docs, tokenizer, max_len, seed, valid)
    if objective == "clm":
        eos = tokenizer.require("eos", "objective=clm")
        examples = pack_blocks(docs, max_len, eos)
        kind_args: dict[str, Any] = {}
    else:
        kind_args = {
            "masking": MaskingConfig(
                mask_rate=cfg.objective.mask_rate,
                mask_token_prob=cfg.objective.mask_token_prob,
                random_token_prob=cfg.objective.random_token_prob,
                mask_id=tokenizer.require("mask", f"objective={objective}"),
                vocab_size=tokenizer.vocab_size,
                special_ids=np.asarray(tokenizer.special_ids, dtype=np.int64),
                continuation=continuation_pieces(tokenizer) if cfg.objective.whole_word else None,
            ),
            "cls_id": tokenizer.require("cls", f"objective={objective}"),
            "sep_id": tokenizer.require("sep", f"objective={objective}"),
            "max_seq_len": max_len,
        }
        if objective == "mlm":
            examples = pack_blocks(docs, max_len - 2, kind_args["sep_id"])
        else:
            examples = nsp_instances(docs, max_len)
            kind_args["docs"] = docs
            kind_args["nsp_random_prob"] = cfg.objective.nsp_random_prob
            kind_args["sop_swap_prob"] = cfg.objective.sop_swap_prob
    if valid and cfg.data.max_valid_examples and len(examples) > cfg.data.max_valid_examples:
        examples = examples.select(range(cfg.data.max_valid_examples))
    # Validation draws its masks from a stream of its own (a different seed offset).
    return PretrainingExamples(objective, examples, seed + (7919 if valid else 0), **kind_args)


def continuation_pieces(tokenizer: TextTokenizer) -> np.ndarray:
    """objective.whole_word: which ids continue a word (WordPiece's "##" pieces)."""
    continuation = np.zeros(tokenizer.vocab_size, dtype=bool)
    for token, index in tokenizer.tokenizer.get_vocab(with_added_tokens=True).items():
        continuation[index] = token.startswith("##") and len(token) > 2
    if not continuation.any():
        raise UserError(
            "objective.whole_word=true groups WordPiece pieces into words ('##' continuations), "
            "but this tokenizer has none: use tokenizer=wordpiece (or wordpiece-cased)"
        )
    return continuation


def objective_collate(objective: Any, tokenizer: TextTokenizer) -> Any:
    """The objective's own batching (a custom objective's collate), or the built-in one."""
    if hasattr(objective, "collate"):
        return objective.collate
    return make_collate(collate, pad_id=tokenizer.pad_id)


def model_config_for(cfg, tokenizer: TextTokenizer) -> ModelConfig:
    model_cfg = cfg.model
    if model_cfg.vocab_size == 0:
        multiple = model_cfg.vocab_multiple
        model_cfg.vocab_size = -(-tokenizer.vocab_size // multiple) * multiple
    elif model_cfg.vocab_size < tokenizer.vocab_size:
        raise UserError(
            f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.vocab_size} tokens; leave it at 0 to take the tokenizer's size"
        )
    model_cfg.pad_token_id = tokenizer.pad_id
    return model_cfg


def run_dir_now() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


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
    cfg, saved_yaml: str, path: Path, sections: tuple[str, ...] = FIXED_ON_RESUME
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


def print_summary(
    cfg, model: torch.nn.Module, data: PreparedData, run_dir: Path, device, dist: Dist
) -> None:
    t = cfg.trainer
    micro = t.micro_batch_size or t.batch_size
    rows = [
        ("model", f"{cfg.model.name} ({cfg.model.arch}), {count_parameters(model):,} parameters"),
        ("objective", cfg.objective.name),
        (
            "data",
            f"{data.description}: {len(data.train):,} train / {len(data.valid):,} valid "
            f"examples of {cfg.data.max_seq_len} tokens (prepared in {data.seconds:.1f}s)",
        ),
        ("tokenizer", f"{cfg.tokenizer.kind}, {data.tokenizer.vocab_size:,} tokens"),
        (
            "trainer",
            f"{t.max_steps} steps x {t.batch_size} sequences "
            f"({micro} per forward, {t.batch_size // micro} accumulated in all), lr {t.lr:g} "
            f"{t.schedule} with {t.warmup_steps} warm-up",
        ),
        ("tokens/step", f"{t.batch_size * cfg.data.max_seq_len:,} (at most; padding excluded)"),
        (
            "device",
            f"{device}, {t.precision}"
            + (", compiled" if t.compile else "")
            + f"; {describe_processes(dist)}",
        ),
        ("run dir", str(run_dir)),
    ]
    verb = "finetune (continued pretraining)" if getattr(cfg, "init", None) else "pretrain"
    show_start(f"nlptool {verb}", rows, cfg.trainer.quiet)


def end_rows(trainer: Trainer, minutes: float, checkpoint: Path) -> list[tuple[str, str]]:
    """The end panel's lines under the metrics: time, throughput, MFU, checkpoint."""
    rows = [("time", f"{minutes:.1f} min ({trainer.train_seconds / 60:.1f} training)")]
    if trainer.train_seconds > 0:
        rows.append(("tokens/s", f"{trainer.tokens_seen / trainer.train_seconds:,.0f} average"))
    if trainer.last_mfu is not None:
        rows.append(("MFU", f"{trainer.last_mfu:.2f} (last log window)"))
    rows.append(("checkpoint", str(checkpoint)))
    return rows


def describe_processes(d: Dist) -> str:
    if d.strategy == "single":
        return "one process"
    return f"{d.strategy}, {d.world_size} process{'es' * (d.world_size != 1)}"


@dataclass
class RunStart:
    run_dir: Path
    device: torch.device
    resume_path: Path | None
    tokenizer: TextTokenizer | None  # the resumed run's or init's; None: make one
    dist: Dist = distributed.SINGLE


def start_run(cfg, init: Path | None, fixed: tuple[str, ...] = FIXED_ON_RESUME) -> RunStart:
    """Run directory, device, the checkpoint to resume (checked against the config) and the
    tokenizer that comes with it or with `init`."""
    run_dir = run_dir_now()
    check_loggers(list(cfg.trainer.loggers))  # a missing tracker package: before any work
    dist = distributed.setup(cfg.trainer.strategy)
    device = distributed.device_for(str(resolve_device(cfg.trainer.device)), dist)
    resume_path = find_resume(cfg.resume, run_dir)
    tokenizer = None
    if resume_path is not None:
        saved = ckpt.read_checkpoint(resume_path)
        check_resume_compatible(cfg, saved.config_yaml, resume_path, fixed)
        tokenizer = TextTokenizer.load(resume_path)
    elif init is not None:
        tokenizer = TextTokenizer.load(init)
    return RunStart(run_dir, device, resume_path, tokenizer, dist)


def restore_if_resuming(trainer: Trainer, start: RunStart) -> None:
    if start.resume_path is not None:
        trainer.restore(start.resume_path)
        if not trainer.cfg.quiet:
            console.print(f"Resuming from {start.resume_path} at step {trainer.step}")


def fit(trainer: Trainer, start: RunStart) -> tuple[dict[str, Any], float]:
    """Train, logging to metrics.jsonl; the validation history and the minutes it took."""
    import yaml

    resumed_step = trainer.step if start.resume_path else None
    log = Loggers(
        start.run_dir,
        list(trainer.cfg.loggers),
        yaml.safe_load(trainer.job.config_yaml),
        trainer.cfg,
        resume_step=resumed_step,
        enabled=start.dist.is_main,
    )
    started = time.perf_counter()
    try:
        history = trainer.fit(log)
    except TrainingInterrupted as stop:
        stopped_by_signal(stop, trainer.cfg.slurm_requeue and start.dist.is_main)
    finally:
        log.close()  # (curves.png; trackers finish, also when training failed)
    return history, (time.perf_counter() - started) / 60


def stopped_by_signal(stop: TrainingInterrupted, slurm_requeue: bool) -> None:
    """After a signal stopped training (the checkpoint is saved): hand the signal on to the handler
    training stood in for (in a job of Hydra's submitit launcher, submitit's: it requeues the job
    and exits), or requeue a SLURM job that got its time-limit warning (SIGUSR1/2) ourselves;
    then exit with 128 + the signal number, as a shell reports a process ended by that signal, so
    scripts and schedulers do not take the run for finished."""
    name = signal.Signals(stop.signum).name
    console.print(
        f"Training stopped at step {stop.step} on {name}; checkpoint {stop.path}. Run the same "
        "command in the same run directory to continue (resume=auto)."
    )
    job = signals.slurm_job_id()
    if stop.previous is not None:
        stop.previous(stop.signum, None)
    elif stop.signum in signals.REQUEUE_SIGNALS and job and slurm_requeue:
        signals.slurm_requeue(job)
    raise SystemExit(128 + stop.signum)


def train_from_config(cfg_dict: DictConfig, init: Path | None = None) -> dict[str, Any]:
    """pretrain (and finetune, which starts from `init`): the whole run."""
    cfg = check_config(cfg_dict)
    start = start_run(cfg, init)
    run_dir, device, resume_path = start.run_dir, start.device, start.resume_path
    with distributed.main_first():  # rank 0 fills the caches, the others read them
        objective = build_objective(cfg.objective)  # (one instance: its data and its batches)
        data = prepare_data(cfg, start.tokenizer, objective)
    model_cfg = model_config_for(cfg, data.tokenizer)
    seed_everything(cfg.trainer.seed)
    model = build_model(model_cfg)
    if init is not None and resume_path is None:
        ckpt.load_weights(model, init)
        if not cfg.trainer.quiet:
            console.print(f"Initialised from {init}")
    job = TrainingJob(
        model=model,
        objective=objective,
        train_data=data.train,
        valid_data=data.valid,
        collate=objective_collate(objective, data.tokenizer),
        tokenizer=data.tokenizer,
        config_yaml=to_yaml(cfg),
        run_dir=run_dir,
        extra_state={"init": str(init) if init else None},
    )
    trainer = Trainer(cfg.trainer, job, device, start.dist)
    restore_if_resuming(trainer, start)
    print_summary(cfg, model, data, run_dir, device, start.dist)
    history, minutes = fit(trainer, start)
    last = run_dir / "checkpoints" / "last"
    show_end("Validation", history, end_rows(trainer, minutes, last), cfg.trainer.quiet)
    return history


def with_checkpoint_model(cfg_dict: DictConfig, saved: DictConfig) -> DictConfig:
    """A copy of the config whose model and tokenizer are the checkpoint's (the architecture and
    vocabulary are fixed by the weights); everything else stays as composed."""
    cfg_dict = cfg_dict.copy()
    cfg_dict.model = OmegaConf.merge(cfg_dict.model, saved.model)
    cfg_dict.tokenizer = OmegaConf.merge(cfg_dict.tokenizer, saved.tokenizer)
    return cfg_dict


def model_source(cfg_dict: DictConfig, key: str) -> Path:
    """`init=` / `checkpoint=`: an nlptool checkpoint, a Hugging Face model folder or hf:<name>
    (imported into the cache once)."""
    from nlptool.interop.convert import resolve_model_source

    cache = cfg_dict.data.get("cache_dir")
    cache_dir = Path(cache).expanduser() if cache else nlptool_cache_dir()
    return resolve_model_source(cfg_dict[key], key, cache_dir)


def convert(cfg_dict: DictConfig) -> Path:
    """nlptool convert: import a Hugging Face model (to=nlptool) or export a checkpoint (to=hf)."""
    from nlptool.config import ConvertConfig
    from nlptool.interop import convert as interop

    try:
        cfg: ConvertConfig = OmegaConf.to_object(cfg_dict)  # type: ignore[assignment]
        cfg.validate()
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    out = Path(cfg.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise UserError(f"out={out}: exists and is not an empty folder (add overwrite=true)")
    if cfg.to == "nlptool":
        src = str(cfg.src)
        folder = interop.download_hf(src[3:], "src") if src.startswith("hf:") else Path(src)
        if not interop.is_hf_folder(folder):
            raise UserError(
                f"src={cfg.src}: not a Hugging Face model folder (no config.json)"
                + (
                    " but an nlptool checkpoint already"
                    if (folder / ckpt.MANIFEST).exists()
                    else ""
                )
            )
        report = interop.import_hf(folder, out)
        fresh = f"; new, untrained: {', '.join(report.fresh)}" if report.fresh else ""
        console.print(f"Imported {folder} ({report.architecture}) -> {out}{fresh}")
        return out
    source = model_source(OmegaConf.create({"src": cfg.src, "data": {}}), "src")
    report = interop.export_hf(source, out, overwrite=cfg.overwrite)
    console.print(
        f"Exported {source} as {report.architecture} -> {out} ({', '.join(report.files)})"
    )
    return out


def task_model_from_checkpoint(path: Path) -> tuple[Any, torch.nn.Module, DictConfig]:
    """A fine-tuned checkpoint's task (with its labels and tokenizer) and its model, loaded."""
    from nlptool.tasks import build_task

    saved = OmegaConf.create(ckpt.read_checkpoint(path).config_yaml)
    if saved.get("task") is None:
        raise UserError(
            f"checkpoint={path} was pretrained, not fine-tuned on a task: predictions need a "
            "fine-tuned checkpoint (nlptool finetune task=... init=...)"
        )
    task_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TaskConfig), saved.task))
    task = build_task(task_cfg, saved.model.arch)
    task.set_tokenizer(TextTokenizer.load(path))
    task.labels = list(task_cfg.labels or [])
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), saved.model))
    model = task.build_model(model_cfg)
    ckpt.load_weights(model, path)
    return task, model, saved


def generate(cfg_dict: DictConfig) -> list[str]:
    """nlptool generate: continue the prompt with a causal LM, streaming the text to stdout."""
    import sys

    from nlptool.config import GenerateConfig
    from nlptool.interop.convert import resolve_model_source
    from nlptool.models.sampling import Sampling
    from nlptool.models.sampling import generate as generate_tokens

    console.stderr = True  # stdout carries the generated text alone (pipe it anywhere)
    try:
        cfg: GenerateConfig = OmegaConf.to_object(cfg_dict)  # type: ignore[assignment]
        cfg.validate()
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else nlptool_cache_dir()
    path = resolve_model_source(str(cfg.checkpoint), "checkpoint", cache)
    saved = OmegaConf.create(ckpt.read_checkpoint(path).config_yaml)
    if saved.model.arch != "gpt" or (saved.get("task") and saved.task.kind != "lm"):
        what = f"fine-tuned on {saved.task.name}" if saved.get("task") else saved.model.arch
        raise UserError(
            f"checkpoint={path} is not a causal language model ({what}): nlptool generate needs "
            "a gpt* checkpoint pretrained with objective=clm, or a Hugging Face GPT-2"
        )
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), saved.model))
    tokenizer = TextTokenizer.load(path)
    device = resolve_device(cfg.device)
    model = build_model(model_cfg)
    ckpt.load_weights(model, path)
    model.to(device).eval()
    eos = tokenizer.ids.get("eos")
    prompt = tokenizer.encode_batch([cfg.prompt])[0] if cfg.prompt else []
    if not prompt:
        prompt = [tokenizer.require("eos", "an empty prompt")]
    room = model_cfg.max_seq_len - 1
    if len(prompt) > room:
        console.print(
            f"[yellow]The prompt has {len(prompt)} tokens; the model sees {model_cfg.max_seq_len}"
            f" positions: generating after its last {room}.[/]"
        )
        prompt = prompt[-room:]
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    out, texts = sys.stdout, []
    for sample in range(cfg.num_samples):
        if sample:
            out.write("\n" + "-" * 40 + "\n")
        out.write(cfg.prompt)
        out.flush()
        ids: list[int] = []
        shown = ""
        started = time.perf_counter()
        for token in generate_tokens(model, prompt, cfg.max_new_tokens, sampling, eos, generator):
            ids.append(token)
            text = tokenizer.decode(ids)
            if cfg.stream and not text.endswith("\ufffd"):  # (not in the middle of a character)
                out.write(text[len(shown) :])
                out.flush()
                shown = text
        text = tokenizer.decode(ids)
        out.write(text[len(shown) :] + "\n")
        out.flush()
        texts.append(text)
        seconds = time.perf_counter() - started
        print(
            f"[{len(ids)} tokens in {seconds:.2f}s, {len(ids) / max(seconds, 1e-9):.1f} tokens/s]",
            file=sys.stderr,
        )
    return texts


def predict(cfg_dict: DictConfig) -> list[dict[str, Any]]:
    from nlptool.predict import predict as run_predict

    return run_predict(cfg_dict)


def pretrain(cfg_dict: DictConfig) -> dict[str, Any]:
    return train_from_config(cfg_dict)


def finetune(cfg_dict: DictConfig) -> dict[str, Any]:
    """Fine-tune on a downstream task (`task=...`), from `init` or from scratch; without a task,
    continue training `init` on new text with its objective (domain-adaptive pretraining)."""
    init = model_source(cfg_dict, "init") if cfg_dict.get("init") else None
    if init is not None:
        saved = OmegaConf.create(ckpt.read_checkpoint(init).config_yaml)
        cfg_dict = with_checkpoint_model(cfg_dict, saved)
    if cfg_dict.get("task") is not None:
        return train_task(cfg_dict, init)
    return train_from_config(cfg_dict, init=init)


def prepare_task(cfg, tokenizer: TextTokenizer | None, splits: tuple[str, ...]):
    """Read the splits; the tokenizer given, or one trained on the task's training text (from
    scratch); the labels; the encoded splits."""
    from nlptool.tasks import build_task

    datasets.disable_progress_bars()
    task = build_task(cfg.task, cfg.model.arch)
    with console.status(f"Reading {cfg.task.name}"), reading(cfg):
        raw = {split: task.read(split) for split in splits}
    if tokenizer is None:
        texts = list(task.training_texts(raw["train"]))
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode("utf-8", "replace") + b"\n")
        with console.status(f"Training a {cfg.tokenizer.kind} tokenizer on {cfg.task.name}"):
            tokenizer, _ = get_tokenizer(
                cfg.tokenizer, f"task:{digest.hexdigest()}", iter(texts), cache_dir_for(cfg)
            )
    task.set_tokenizer(tokenizer)
    if "train" in raw:
        task.set_labels_from(raw["train"])
        cfg.task.labels = list(task.labels) or None
    with console.status("Encoding"):
        encoded = {split: task.encode(raw[split]) for split in splits}
    return tokenizer, task, encoded


def train_task(cfg_dict: DictConfig, init: Path | None) -> dict[str, Any]:
    """finetune task=...: train the task's model, keep the best checkpoint by its main metric."""
    cfg = check_config(cfg_dict)
    start = start_run(cfg, init, ("model", "tokenizer"))
    run_dir, device, resume_path = start.run_dir, start.device, start.resume_path
    started = time.perf_counter()
    with distributed.main_first():
        tokenizer, task, data = prepare_task(cfg, start.tokenizer, ("train", "valid"))
    seconds = time.perf_counter() - started
    model_cfg = model_config_for(cfg, tokenizer)
    seed_everything(cfg.trainer.seed)
    model = task.build_model(model_cfg)
    if init is not None and resume_path is None:
        fresh, _ = ckpt.load_matching_weights(model, init)
        if not cfg.trainer.quiet:
            console.print(
                f"Initialised from {init}"
                + (f"; new, untrained: {', '.join(fresh)}" if fresh else "")
            )
    job = TrainingJob(
        model=model,
        objective=task,
        train_data=data["train"],
        valid_data=data["valid"],
        collate=task.collate,
        tokenizer=tokenizer,
        config_yaml=to_yaml(cfg),
        run_dir=run_dir,
        extra_state={"init": str(init) if init else None},
        early_stopping_patience=cfg.task.early_stopping_patience,
    )
    trainer = Trainer(cfg.trainer, job, device, start.dist)
    restore_if_resuming(trainer, start)
    t = cfg.trainer
    show_start(
        "nlptool finetune",
        [
            (
                "task",
                f"{cfg.task.name} ({cfg.task.kind})"
                + (f", labels {', '.join(task.labels)}" if task.labels else ""),
            ),
            ("model", f"{cfg.model.name}, {count_parameters(model):,} parameters"),
            ("init", str(init) if init else "none (from scratch)"),
            (
                "data",
                f"{len(data['train']):,} train / {len(data['valid']):,} valid examples "
                f"(prepared in {seconds:.1f}s)",
            ),
            (
                "trainer",
                f"{t.max_steps} steps x {t.batch_size}, lr {t.lr:g}, "
                f"{t.schedule} with {t.warmup_steps} warm-up",
            ),
            ("device", f"{device}, {t.precision}; {describe_processes(start.dist)}"),
            ("run dir", str(run_dir)),
        ],
        cfg.trainer.quiet,
    )
    history, minutes = fit(trainer, start)
    if trainer.best is not None:
        history["best"] = {f"valid/{task.main_metric}": trainer.best}
    best = run_dir / "checkpoints" / "best"
    kept = best if best.exists() else run_dir / "checkpoints" / "last"
    show_end("Validation", history, end_rows(trainer, minutes, kept), cfg.trainer.quiet)
    return history


def overridden_sections() -> set[str]:
    """Top-level config sections (and full keys) the user set on the command line."""
    from hydra.core.hydra_config import HydraConfig

    sections = set()
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        sections.add(key.split(".", 1)[0].split("@", 1)[0])
        sections.add(key)
    return sections


def evaluate(cfg_dict: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint with its objective on validation (or training) data -> eval.json."""
    if not cfg_dict.get("checkpoint"):
        raise UserError("nlptool eval needs checkpoint=<checkpoint folder or run directory>")
    path = model_source(cfg_dict, "checkpoint")
    saved = OmegaConf.create(ckpt.read_checkpoint(path).config_yaml)
    touched = overridden_sections()
    if saved.get("task") is not None or cfg_dict.get("task") is not None:
        return evaluate_task(cfg_dict, path, saved, touched)
    if cfg_dict.split not in ("valid", "train"):
        raise UserError(f"split={cfg_dict.split!r}: expected valid or train")
    cfg_dict = with_checkpoint_model(cfg_dict, saved)
    for section in ("data", "objective"):  # the checkpoint's, unless given on the command line
        if section not in touched:
            cfg_dict[section] = OmegaConf.merge(cfg_dict[section], saved[section])
    if "trainer.seed" not in touched:  # the seed fixes the validation masks: keep the run's
        cfg_dict.trainer.seed = saved.trainer.seed
    data = cfg_dict.data
    if data.get("valid_files") and not data.get("train_files") and cfg_dict.split == "valid":
        # Scoring text files (perplexity of a causal LM on any text): no training files needed.
        data.train_files = data.valid_files
    cfg = check_config(cfg_dict)
    run_dir = run_dir_now()
    device = resolve_device(cfg.trainer.device)
    with distributed.main_first():
        objective = build_objective(cfg.objective)
        data = prepare_data(cfg, TextTokenizer.load(path), objective)
    model = build_model(model_config_for(cfg, data.tokenizer))
    ckpt.load_weights(model, path)
    job = TrainingJob(
        model=model,
        objective=objective,
        train_data=data.train,
        valid_data=data.train if cfg_dict.split == "train" else data.valid,
        collate=objective_collate(objective, data.tokenizer),
        tokenizer=data.tokenizer,
        config_yaml=to_yaml(cfg),
        run_dir=run_dir,
    )
    metrics = Trainer(cfg.trainer, job, device).evaluate(split=cfg_dict.split)
    result = {cfg_dict.split: {k.split("/", 1)[1]: v for k, v in metrics.items()}}
    result["checkpoint"] = str(path)
    if distributed.is_main_process():
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(metrics_table(f"Evaluation of {path}", {cfg_dict.split: metrics}))
    console.print(f"Wrote {run_dir / 'eval.json'}")
    return result


def evaluate_task(cfg_dict: DictConfig, path: Path, saved: DictConfig, touched: set[str]):
    """eval of a fine-tuned checkpoint: metrics -> eval.json, one line per example ->
    predictions.jsonl (input, gold, prediction)."""
    if saved.get("task") is None:
        raise UserError(
            f"checkpoint={path} was pretrained, not fine-tuned on a task: evaluate it without "
            "task=..., or fine-tune it first (nlptool finetune task=... init=...)"
        )
    split = cfg_dict.split
    if split not in ("valid", "test", "train"):
        raise UserError(f"split={split!r}: expected valid, test or train")
    cfg_dict = with_checkpoint_model(cfg_dict, saved)
    # The task as trained (its labels above all), with the task.* keys given on the command line.
    task_cfg = saved.task.copy()
    if cfg_dict.get("task") is not None:
        if cfg_dict.task.kind != saved.task.kind:
            raise UserError(
                f"task={cfg_dict.task.name} ({cfg_dict.task.kind}) does not fit the checkpoint, "
                f"which was fine-tuned on {saved.task.name} ({saved.task.kind})"
            )
        for key in cfg_dict.task:
            if f"task.{key}" in touched:
                task_cfg[key] = cfg_dict.task[key]
    cfg_dict.task = OmegaConf.merge(OmegaConf.structured(TaskConfig), task_cfg)
    cfg = check_config(cfg_dict)
    run_dir = run_dir_now()
    device = resolve_device(cfg.trainer.device)
    labels = list(cfg.task.labels or [])
    with distributed.main_first():
        tokenizer, task, data = prepare_task(cfg, TextTokenizer.load(path), (split,))
    task.labels = labels or task.labels
    model = task.build_model(model_config_for(cfg, tokenizer))
    ckpt.load_weights(model, path)
    job = TrainingJob(
        model=model,
        objective=task,
        train_data=data[split],
        valid_data=data[split],
        collate=task.collate,
        tokenizer=tokenizer,
        config_yaml=to_yaml(cfg),
        run_dir=run_dir,
    )
    predictions = run_dir / "predictions.jsonl"
    # (under torchrun every rank evaluates everything; rank 0 writes)
    main = distributed.is_main_process()
    metrics = Trainer(cfg.trainer, job, device).evaluate(predictions if main else None, split)
    result = {split: {k.split("/", 1)[1]: v for k, v in metrics.items()}, "checkpoint": str(path)}
    if main:
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(metrics_table(f"{cfg.task.name} on {split} ({path})", {split: metrics}))
    console.print(f"Wrote {run_dir / 'eval.json'} and {predictions}")
    return result
