"""Typed schemas of every config group, registered in Hydra's ConfigStore.

Each verb's YAML (`configs/pretrain.yaml` ...) starts its defaults list with the schema of that
verb, so Hydra merges every group file and every command-line override into a typed node: an
unknown key or a value of the wrong type fails at composition, naming the key. Range checks and
cross-field rules live in `validate()` methods that `check_config` runs before any work starts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nlptool.errors import UserError
from nlptool.models.config import ModelConfig

OBJECTIVES = ("mlm", "mlm_nsp", "sop", "clm")
DATA_SOURCES = ("builtin", "text", "hf")
TOKENIZER_KINDS = ("wordpiece", "bpe", "pretrained")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("linear", "cosine", "constant")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
LOGGERS = ("jsonl", "tensorboard", "wandb", "mlflow")
RESUME_HELP = "auto, never, or the path of a checkpoint folder"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass
class ObjectiveConfig:
    """What the pretraining loss is."""

    _target_: str | None = None
    """Your own objective class (module.Class, see nlptool.objectives.base.CustomObjective); it is
    built with objective.params as keyword arguments. null: the built-in objective `name`."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a _target_ objective (+objective.params.span=3 on the command line)."""
    name: str = "mlm"
    """mlm (masked LM), mlm_nsp (masked LM + next-sentence prediction), sop (masked LM +
    sentence-order prediction, ALBERT), clm (causal LM)."""
    mask_rate: float = 0.15
    """Fraction of non-special tokens selected for prediction (mlm, mlm_nsp)."""
    mask_token_prob: float = 0.8
    """Of the selected tokens, the fraction replaced by the mask token."""
    random_token_prob: float = 0.1
    """Of the selected tokens, the fraction replaced by a random token (the rest stay unchanged)."""
    nsp_random_prob: float = 0.5
    """mlm_nsp: probability that segment B is taken from another document."""
    whole_word: bool = False
    """mlm, mlm_nsp, sop: mask whole words (a WordPiece token and its "##" pieces together; each
    CJK character is a word) instead of single tokens."""
    sop_swap_prob: float = 0.5
    """sop: probability that the two consecutive segments are swapped (the label to predict)."""

    def validate(self) -> None:
        _check(
            self.name in OBJECTIVES or self._target_ is not None,
            f"objective.name={self.name!r}: expected one of {OBJECTIVES} (or objective._target_)",
        )
        _check(
            0.0 < self.mask_rate < 1.0, f"objective.mask_rate={self.mask_rate}: must be in (0, 1)"
        )
        for key in ("mask_token_prob", "random_token_prob", "nsp_random_prob", "sop_swap_prob"):
            value = getattr(self, key)
            _check(0.0 <= value <= 1.0, f"objective.{key}={value}: must be in [0, 1]")
        _check(
            self.mask_token_prob + self.random_token_prob <= 1.0,
            "objective.mask_token_prob + objective.random_token_prob must not exceed 1 "
            f"(got {self.mask_token_prob} + {self.random_token_prob})",
        )


@dataclass
class DataConfig:
    """Where the pretraining text comes from and how it is cut into examples."""

    source: str = "builtin"
    """builtin (the embedded offline corpus), text (local files), hf (a Hugging Face data set)."""
    train_files: Any = None
    """data=text: paths or globs (a list, or one string; commas separate several)."""
    valid_files: Any = None
    """data=text: validation files; when unset a fraction of the training documents is held out."""
    text_column: str = "text"
    """Column holding the text in .jsonl/.json/.csv/.tsv/.parquet files and HF data sets."""
    name: str | None = None
    """data=hf: the data set's name on the hub (or a local path load_dataset accepts)."""
    config: str | None = None
    """data=hf: the data set's configuration (e.g. wikitext-103-raw-v1)."""
    train_split: str = "train"
    """data=hf: the split to train on."""
    valid_split: str | None = "validation"
    """data=hf: the validation split (null: hold out valid_fraction of the training split)."""
    max_seq_len: int = 128
    """Tokens per training example (packed block or sentence pair, special tokens included)."""
    valid_fraction: float = 0.05
    """Fraction of training documents held out for validation when no validation files are given."""
    max_valid_examples: int = 512
    """Cap on validation examples, so periodic evaluation stays cheap (0: no cap)."""
    num_proc: int | None = None
    """Processes for tokenization (datasets.map); null: one per CPU core, at most 8."""
    cache_dir: str | None = None
    """Where tokenized data and trained tokenizers are cached (default: $NLPTOOL_CACHE or ~/.cache/nlptool)."""
    encoding_errors: str = "strict"
    """Bytes that are not UTF-8 in any file read (corpus or task): strict (an error naming the
    file and line) or replace (U+FFFD, with a count of the lines affected)."""

    def validate(self) -> None:
        _check(
            self.source in DATA_SOURCES,
            f"data.source={self.source!r}: expected one of {DATA_SOURCES}",
        )
        _check(self.max_seq_len >= 8, f"data.max_seq_len={self.max_seq_len}: must be at least 8")
        _check(
            0.0 <= self.valid_fraction < 1.0,
            f"data.valid_fraction={self.valid_fraction}: must be in [0, 1)",
        )
        _check(self.max_valid_examples >= 0, "data.max_valid_examples must be >= 0")
        if self.source == "text":
            _check(
                bool(self.train_files),
                "data=text needs data.train_files (paths or globs), e.g. "
                "data.train_files='corpus/*.txt.gz'",
            )
        if self.source == "hf":
            _check(bool(self.name), "data=hf needs data.name, e.g. data.name=wikitext")
        if self.num_proc is not None:
            _check(self.num_proc >= 1, f"data.num_proc={self.num_proc}: must be >= 1")
        _check(
            self.encoding_errors in ("strict", "replace"),
            f"data.encoding_errors={self.encoding_errors!r}: expected strict or replace",
        )


@dataclass
class TokenizerConfig:
    """How text becomes token ids."""

    kind: str = "wordpiece"
    """wordpiece or bpe (trained on the corpus and cached), or pretrained (loaded from path)."""
    vocab_size: int = 8192
    """Vocabulary size of a trained tokenizer."""
    min_frequency: int = 2
    """A pair must occur this often to be merged when training."""
    lowercase: bool = True
    """wordpiece: lower-case and strip accents (uncased BERT)."""
    path: str | None = None
    """pretrained: a tokenizer.json, a folder holding one, or an nlptool checkpoint."""
    max_training_chars: int = 50_000_000
    """Train the tokenizer on at most this much text from the start of the corpus."""

    def validate(self) -> None:
        _check(
            self.kind in TOKENIZER_KINDS,
            f"tokenizer.kind={self.kind!r}: expected one of {TOKENIZER_KINDS}",
        )
        if self.kind == "pretrained":
            _check(
                bool(self.path),
                "tokenizer=pretrained needs tokenizer.path=<tokenizer.json or folder>",
            )
        else:
            _check(
                self.vocab_size >= 300,
                f"tokenizer.vocab_size={self.vocab_size}: must be at least 300 (bytes and special tokens)",
            )


@dataclass
class TrainerConfig:
    """Steps, optimisation, precision, logging and checkpoints."""

    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "fp32"
    """fp32, bf16 (autocast) or fp16 (autocast with a gradient scaler; CUDA only)."""
    max_steps: int = 600
    """Optimizer steps to train for."""
    batch_size: int = 32
    """Global batch: sequences per optimizer step, whatever the number of devices."""
    micro_batch_size: int | None = None
    """Sequences per forward pass on one device; null: the whole per-device batch at once."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr (linear and cosine schedules)."""
    warmup_steps: int = 50
    """Linear warm-up steps from 0 to lr."""
    schedule: str = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    seed: int = 1234
    """Seeds weights, dropout, shuffling and masking."""
    log_every: int = 10
    """Steps between training log records."""
    eval_every: int = 100
    """Steps between validations (0: only before the first and after the last step)."""
    eval_batches: int = 0
    """Cap on validation batches per evaluation (0: all validation examples)."""
    save_every: int = 0
    """Steps between checkpoints (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept (the newest always survives)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    num_workers: int = 0
    """DataLoader worker processes."""
    group_by_length: bool = True
    """Batch examples of similar length together (tasks with variable-length inputs)."""
    progress: bool = True
    """Show a live progress bar on a terminal (plain log lines otherwise)."""
    quiet: bool = False
    """No start and end panels, no progress bar or log lines (warnings and errors still show;
    metrics.jsonl and the loggers get everything)."""
    nonfinite: str = "error"
    """A step whose loss or gradient norm is NaN or infinite: error (stop with a message, the last
    checkpoint untouched) or skip (no update; counted and logged)."""
    max_nonfinite_skips: int = 10
    """nonfinite=skip: stop after this many non-finite steps in a row."""
    peak_tflops: float | None = None
    """The device's peak TFLOP/s for MFU (train/mfu); null: the published dense peak of known
    GPUs for the precision, or on a CPU a measured fp32 matmul."""
    activation_checkpointing: bool = False
    """Recompute each block in the backward pass instead of keeping its activations: far less
    memory for long sequences or big models, about a third more compute."""
    tf32: bool = True
    """CUDA: fp32 matmuls and convolutions on TF32 tensor cores (torch "high" precision)."""
    slurm_requeue: bool = True
    """Inside a SLURM job, SIGUSR1 or SIGUSR2 (the time-limit warning of `#SBATCH
    --signal=USR1@120`) saves, stops and requeues the job (scontrol requeue; in jobs of
    hydra/launcher=slurm submitit does it); the requeued run resumes with resume=auto."""
    deterministic: bool = False
    """Deterministic kernels (torch.use_deterministic_algorithms): identical reruns, slower."""
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where training records go: jsonl (metrics.jsonl, always on), tensorboard, wandb, mlflow
    (optional extras: pip install 'nlptool[tensorboard]' ...)."""
    run_name: str | None = None
    """The run's name in W&B and MLflow (null: the run directory's name)."""
    wandb_project: str = "nlptool"
    mlflow_experiment: str = "nlptool"
    strategy: str = "auto"
    """How several processes (torchrun) share the work: auto (ddp under torchrun with more than one
    process, else single), single, ddp (DistributedDataParallel) or fsdp (FSDP2, sharded
    parameters, gradients and optimizer state)."""

    def validate(self) -> None:
        _check(
            self.nonfinite in ("error", "skip"),
            f"trainer.nonfinite={self.nonfinite!r}: expected error or skip",
        )
        _check(self.max_nonfinite_skips >= 1, "trainer.max_nonfinite_skips must be >= 1")
        if self.peak_tflops is not None:
            _check(self.peak_tflops > 0, f"trainer.peak_tflops={self.peak_tflops}: must be > 0")
        _check(self.device in DEVICES, f"trainer.device={self.device!r}: expected one of {DEVICES}")
        _check(
            self.precision in PRECISIONS,
            f"trainer.precision={self.precision!r}: expected one of {PRECISIONS}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"trainer.schedule={self.schedule!r}: expected one of {SCHEDULES}",
        )
        _check(self.max_steps >= 1, f"trainer.max_steps={self.max_steps}: must be >= 1")
        _check(self.batch_size >= 1, f"trainer.batch_size={self.batch_size}: must be >= 1")
        if self.micro_batch_size is not None:
            _check(
                self.micro_batch_size >= 1,
                f"trainer.micro_batch_size={self.micro_batch_size}: must be >= 1",
            )
        _check(self.lr > 0, f"trainer.lr={self.lr}: must be positive")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "trainer.min_lr_ratio must be in [0, 1]")
        _check(self.warmup_steps >= 0, "trainer.warmup_steps must be >= 0")
        _check(self.weight_decay >= 0, "trainer.weight_decay must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "trainer.beta1/beta2 must be in [0, 1)")
        _check(self.grad_clip >= 0, "trainer.grad_clip must be >= 0 (0 disables clipping)")
        for key in ("log_every", "eval_every", "save_every", "eval_batches", "num_workers"):
            _check(getattr(self, key) >= 0, f"trainer.{key} must be >= 0")
        _check(self.log_every >= 1, "trainer.log_every must be >= 1")
        _check(self.keep_last >= 1, "trainer.keep_last must be >= 1")
        unknown = [name for name in self.loggers if name not in LOGGERS]
        _check(
            not unknown,
            f"trainer.loggers: unknown {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(LOGGERS)}",
        )
        _check(
            self.strategy in STRATEGIES,
            f"trainer.strategy={self.strategy!r}: expected one of {', '.join(STRATEGIES)}",
        )


TASK_KINDS = (
    "classification", "pair_classification", "regression", "ner", "qa", "translation", "lm",
)  # fmt: skip


@dataclass
class TaskConfig:
    """A downstream task: what its files hold and how it is scored."""

    name: str = "classification"
    """Preset name, for logs and checkpoints."""
    kind: str = "classification"
    """classification, pair_classification, regression, ner, qa, translation or lm."""
    _target_: str | None = None
    """Your own task class (module.Class implementing nlptool.tasks.base.Task, for instance a
    subclass of a built-in task); built as Class(task config, **task.params)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of a _target_ task."""
    data_dir: str | None = None
    """Folder the split files are read from (they may also be absolute paths)."""
    train_file: str | None = None
    """Training file (.csv, .tsv, .jsonl, .json, .parquet; .gz too)."""
    valid_file: str | None = None
    """Validation file: best-checkpoint selection and `eval split=valid`."""
    test_file: str | None = None
    """Test file, for `eval split=test`."""
    header: bool = True
    """CSV/TSV files start with a header row; with false, columns are 0-based indices."""
    text_column: Any = "text"
    """Column of the text (a name, or a 0-based index)."""
    text_pair_column: Any = None
    """pair_classification and regression: column of the second text (segment B)."""
    label_column: Any = "label"
    """Column of the label (classification) or score (regression)."""
    labels: list[str] | None = None
    """The label set, in order; null: the sorted labels seen in the training file."""
    positive_label: str | None = None
    """pair_classification: the label whose F1 is reported (default: the second label)."""
    max_seq_len: int = 128
    """Tokens per example (longer inputs are truncated; QA contexts are split with a stride)."""
    early_stopping_patience: int = 0
    """Stop after this many validations without improvement of the main metric (0: never)."""
    token_column: int = 0
    """ner: the column of the word in CoNLL files (0-based, whitespace-separated)."""
    tag_column: int = -1
    """ner: the column of the tag in CoNLL files (-1: the last one)."""
    tag_scheme: str = "auto"
    """ner: auto (detected from the tags), IOB2 (BIO), IOBES or BMES."""
    train_articles: int | None = None
    """qa: a single SQuAD file split by article: the first N articles train, the rest evaluate."""
    doc_stride: int = 128
    """qa: tokens of overlap between the windows of a long context."""
    max_answer_len: int = 30
    """qa: the longest answer span, in tokens."""
    n_best: int = 20
    """qa: start and end candidates considered when decoding a span."""
    source_file: str | None = None
    """translation (line-aligned files): the training source file; valid/test by suffix."""
    target_file: str | None = None
    """translation: the training target file."""
    source_column: str | None = None
    """translation (record files): the source column."""
    target_column: str | None = None
    """translation (record files): the target column."""
    prompt_column: str | None = None
    """lm: the prompt of each record (with task.response_column: the loss is on the response)."""
    response_column: str | None = None
    """lm: the response the model learns to give to the prompt."""
    source_lang: str = "en"
    target_lang: str = "de"
    label_smoothing: float = 0.1
    """translation: label smoothing of the teacher-forced cross-entropy."""
    beam_size: int = 4
    """translation: beam size at evaluation (1: greedy)."""
    length_penalty: float = 0.6
    """translation: exponent alpha of the length normalisation log P / len**alpha."""
    max_decode_len: int = 128
    """translation: the longest output, in tokens."""

    def validate(self) -> None:
        _check(
            self.kind in TASK_KINDS or self._target_ is not None,
            f"task.kind={self.kind!r}: expected one of {TASK_KINDS} (or task._target_)",
        )
        _check(
            self.tag_scheme in ("auto", "IOB2", "IOBES", "BMES"),
            f"task.tag_scheme={self.tag_scheme!r}: expected auto, IOB2, IOBES or BMES",
        )
        _check(0 <= self.label_smoothing < 1, "task.label_smoothing must be in [0, 1)")
        if self.kind == "ner":
            _check(
                self.token_column != self.tag_column,
                f"task.token_column and task.tag_column are both {self.tag_column}",
            )
        _check(self.beam_size >= 1, "task.beam_size must be >= 1")
        _check(self.n_best >= 1, f"task.n_best={self.n_best}: must be >= 1")
        _check(
            self.doc_stride >= 1 and self.max_answer_len >= 1,
            "task.doc_stride and task.max_answer_len must be >= 1",
        )
        _check(self.max_seq_len >= 8, f"task.max_seq_len={self.max_seq_len}: must be at least 8")
        _check(self.early_stopping_patience >= 0, "task.early_stopping_patience must be >= 0")
        if self.kind == "pair_classification":
            _check(
                self.text_pair_column is not None,
                f"task.kind={self.kind} needs task.text_pair_column (the second text's column)",
            )


@dataclass
class PretrainConfig:
    """`nlptool pretrain`: train a model from scratch with a self-supervised objective."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    resume: str = "auto"
    """auto (continue from this run directory's last checkpoint if any), never, or a checkpoint."""


@dataclass
class FinetuneConfig(PretrainConfig):
    """`nlptool finetune`: continue training from `init` (a checkpoint)."""

    init: str | None = None
    """An nlptool checkpoint folder to start from (null: train from scratch)."""
    task: TaskConfig | None = None
    """The downstream task (config group `task`); null: continue the pretraining objective."""


@dataclass
class EvalConfig(PretrainConfig):
    """`nlptool eval`: evaluate a checkpoint on validation data."""

    checkpoint: str | None = None
    """The checkpoint folder to evaluate (required)."""
    split: str = "valid"
    """Which split to evaluate: valid, test (tasks), or train."""
    task: TaskConfig | None = None
    """The downstream task; null: the checkpoint's own (or its pretraining objective)."""


@dataclass
class ConvertConfig:
    """`nlptool convert`: a Hugging Face model folder <-> an nlptool checkpoint."""

    src: str | None = None
    """What to convert: a Hugging Face folder, hf:<hub name>, or an nlptool checkpoint."""
    out: str | None = None
    """The folder to write (created; must not exist unless overwrite=true)."""
    to: str = "nlptool"
    """nlptool (import a Hugging Face model) or hf (export an nlptool checkpoint)."""
    overwrite: bool = False
    """Replace an existing non-empty `out` folder."""

    def validate(self) -> None:
        _check(self.to in ("nlptool", "hf"), f"to={self.to!r}: expected nlptool or hf")
        _check(bool(self.src), "nlptool convert needs src=<model folder, hf:<name> or checkpoint>")
        _check(bool(self.out), "nlptool convert needs out=<folder to write>")


@dataclass
class GenerateConfig:
    """`nlptool generate`: continue a prompt with a causal LM checkpoint (gpt*)."""

    checkpoint: str | None = None
    """A causal-LM checkpoint: an nlptool checkpoint or run folder, a Hugging Face GPT-2 folder,
    or hf:<name>."""
    prompt: str = ""
    """The text to continue ("" starts from the end-of-text token)."""
    max_new_tokens: int = 100
    temperature: float = 1.0
    """Divides the scores before sampling; 0 is greedy (always the most likely token)."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0: all)."""
    top_p: float = 1.0
    """Sample among the most likely tokens whose probabilities add up to top_p (1: all)."""
    seed: int = 1234
    """Seeds the sampling: the same seed, the same text."""
    num_samples: int = 1
    """Continuations to write, one after the other (each from the same prompt)."""
    device: str = "auto"
    stream: bool = True
    """Print tokens as they are chosen; false: print each continuation when complete."""
    cache_dir: str | None = None
    """Where Hugging Face imports are kept (default: the nlptool cache)."""

    def validate(self) -> None:
        _check(bool(self.checkpoint), "nlptool generate needs checkpoint=<a gpt checkpoint>")
        _check(self.max_new_tokens >= 1, "max_new_tokens must be >= 1")
        _check(self.temperature >= 0, f"temperature={self.temperature}: must be >= 0 (0: greedy)")
        _check(self.top_k >= 0, f"top_k={self.top_k}: must be >= 0 (0: no cut)")
        _check(0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1]")
        _check(self.num_samples >= 1, "num_samples must be >= 1")
        _check(self.device in DEVICES, f"device={self.device!r}: expected one of {DEVICES}")


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
# unpickles the task (importing nlptool) but never calls register_configs.
OmegaConf.register_new_resolver("run_start", run_start, use_cache=True, replace=True)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore, under the names the verb YAMLs list first."""
    store = ConfigStore.instance()
    store.store(name="pretrain_schema", node=PretrainConfig)
    store.store(name="finetune_schema", node=FinetuneConfig)
    store.store(name="eval_schema", node=EvalConfig)
    store.store(name="convert_schema", node=ConvertConfig)
    store.store(name="generate_schema", node=GenerateConfig)
    from nlptool.predict import PredictConfig

    store.store(name="predict_schema", node=PredictConfig)


def check_config(cfg: DictConfig) -> Any:
    """Turn the composed config into typed objects and run every range and cross-field check.

    Returns the dataclass instance (PretrainConfig or a subclass). Raises UserError naming the key.
    """
    try:
        typed = OmegaConf.to_object(cfg)
    except (OmegaConfBaseException, ValueError) as err:
        raise UserError(f"Invalid config: {err}") from None
    try:
        for node in (typed.objective, typed.data, typed.tokenizer, typed.trainer):
            node.validate()
        if getattr(typed, "task", None) is not None:
            typed.task.validate()
        typed.model.validate()
        _check_combinations(typed)
    except ValueError as err:
        raise UserError(f"Invalid config: {err}") from None
    return typed


def _check_combinations(cfg: PretrainConfig) -> None:
    if getattr(cfg, "task", None) is not None:
        _check_task_combinations(cfg)
        return
    arch, objective = cfg.model.arch, cfg.objective.name
    if cfg.objective._target_ is not None:
        objective = "custom"  # (its own examples and loss: no combination to check here)
    if objective in ("mlm", "mlm_nsp", "sop"):
        _check(
            arch == "bert",
            f"objective={objective} needs a bidirectional encoder (model=bert-*), "
            f"but model={cfg.model.name} is a {arch} model; use objective=clm with gpt models",
        )
    if objective == "clm":
        _check(
            arch == "gpt",
            f"objective=clm needs a causal decoder (model=gpt-*), but model={cfg.model.name} "
            f"is a {arch} model; use objective=mlm or mlm_nsp with bert models",
        )
    _check(
        cfg.data.max_seq_len <= cfg.model.max_seq_len,
        f"data.max_seq_len={cfg.data.max_seq_len} exceeds model.max_seq_len="
        f"{cfg.model.max_seq_len} (the model's number of positions)",
    )
    if cfg.trainer.precision == "fp16":
        _check(
            cfg.trainer.device != "cpu",
            "trainer.precision=fp16 needs a CUDA device (CPU has no fast fp16 kernels); "
            "use fp32 or bf16 on CPU",
        )
    mb = cfg.trainer.micro_batch_size
    if mb is not None:
        _check(
            cfg.trainer.batch_size % mb == 0,
            f"trainer.batch_size={cfg.trainer.batch_size} is not a multiple of "
            f"trainer.micro_batch_size={mb}",
        )
    _check(
        cfg.resume in ("auto", "never") or bool(cfg.resume),
        f"resume={cfg.resume!r}: expected {RESUME_HELP}",
    )


def to_yaml(cfg: Any) -> str:
    """A plain-YAML rendering of a config (DictConfig or dataclass), for checkpoints and logs."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_yaml(cfg, resolve=True)


def _check_task_combinations(cfg: PretrainConfig) -> None:
    task, arch = cfg.task, cfg.model.arch
    if task._target_ is not None:  # the task's own build_model says what it needs
        pass
    elif task.kind == "translation":
        _check(
            arch == "seq2seq", f"task={task.name} needs an encoder-decoder (model=transformer-*)"
        )
    elif task.kind == "lm":
        _check(
            arch == "gpt",
            f"task={task.name} trains a causal language model: it needs a decoder "
            f"(model=gpt-*, or init= a GPT checkpoint), not model={cfg.model.name}",
        )
    elif task.kind in ("classification", "pair_classification", "regression"):
        _check(
            arch in ("bert", "gpt"),
            f"task={task.name} ({task.kind}) needs an encoder (model=bert-*) or a decoder "
            f"(model=gpt-*), not model={cfg.model.name}",
        )
    else:
        _check(
            arch == "bert",
            f"task={task.name} ({task.kind}) needs an encoder (model=bert-*), "
            f"not model={cfg.model.name}",
        )
    _check(
        task.max_seq_len <= cfg.model.max_seq_len,
        f"task.max_seq_len={task.max_seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}",
    )
    if cfg.trainer.precision == "fp16":
        _check(cfg.trainer.device != "cpu", "trainer.precision=fp16 needs a CUDA device")
