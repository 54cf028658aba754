"""Hugging Face model folders <-> nlptool checkpoints.

- **Import** (`import_hf`): a folder as `save_pretrained` writes it (`config.json`; weights in
  `model.safetensors` or `pytorch_model.bin`, sharded or not; a tokenizer as `tokenizer.json`,
  `vocab.txt` or `vocab.json` + `merges.txt`) of a BERT or GPT-2 model becomes an nlptool
  checkpoint folder: `model.safetensors` in nlptool's names, `config.yaml`, `tokenizer.json`.
  Heads the source lacks are initialised fresh and listed.
- **Export** (`export_hf`): an nlptool BERT or GPT checkpoint becomes a folder that
  `transformers` loads with its Auto classes (the head decides the architecture: pretraining,
  sequence or token classification, question answering, causal LM, GPT-2 sequence
  classification), and `AutoTokenizer`, without remote code; safetensors only.

Reading the Hugging Face folder is `nlptool.interop.hf_folder`, the tensor mapping
`nlptool.interop.hf`; `transformers` is not needed here. `nlptool.interop.sources` lets every
`init=` / `checkpoint=` take either format.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nlptool.data.tokenizer import TextTokenizer
from nlptool.errors import UserError
from nlptool.interop.hf import (
    bert_from_hf,
    bert_to_hf,
    config_from_hf_bert,
    config_from_hf_gpt2,
    gpt2_from_hf,
    gpt2_to_hf,
)
from nlptool.interop.hf_folder import hf_tokenizer, read_hf_weights, read_json
from nlptool.models.bert import (
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from nlptool.models.config import ModelConfig
from nlptool.models.gpt import GPTForCausalLM, GPTForSequenceClassification
from nlptool.schema import FinetuneConfig, typed_section
from nlptool.tasks.config import TaskConfig
from nlptool.training import checkpoint as ckpt

# HF architecture -> the task kind of its head (None: a pretraining model or a bare encoder)
BERT_ARCHITECTURES: dict[str, str | None] = {
    "BertModel": None,
    "BertForPreTraining": None,
    "BertForMaskedLM": None,
    "BertForNextSentencePrediction": None,
    "BertForSequenceClassification": "classification",
    "BertForTokenClassification": "ner",
    "BertForQuestionAnswering": "qa",
}
GPT2_ARCHITECTURES: dict[str, str | None] = {
    "GPT2Model": None,
    "GPT2LMHeadModel": None,
    "GPT2ForSequenceClassification": "classification",
}
SUPPORTED = {"bert": BERT_ARCHITECTURES, "gpt2": GPT2_ARCHITECTURES}
# nlptool task kind -> the HF architecture of its head
EXPORT_ARCHITECTURES = {
    None: "BertForMaskedLM",  # BertForPreTraining when trained with mlm_nsp
    "classification": "BertForSequenceClassification",
    "pair_classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "ner": "BertForTokenClassification",
    "qa": "BertForQuestionAnswering",
}
GPT2_EXPORT_ARCHITECTURES = {
    None: "GPT2LMHeadModel",
    "lm": "GPT2LMHeadModel",
    "classification": "GPT2ForSequenceClassification",
    "pair_classification": "GPT2ForSequenceClassification",
    "regression": "GPT2ForSequenceClassification",
}
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
CONVERTED_BY = "nlptool.interop.convert"


def _supported_list() -> str:
    return "; ".join(f"{kind}: {', '.join(archs)}" for kind, archs in SUPPORTED.items())


@dataclass
class ImportReport:
    path: Path
    architecture: str
    fresh: list[str] = field(default_factory=list)  # modules initialised fresh (not in source)


def _labels(config: dict[str, Any]) -> list[str]:
    id2label = config.get("id2label") or {}
    num = int(config.get("num_labels") or len(id2label) or 2)
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num)]
    return labels


HEAD_MODULES = (
    "mlm_head", "nsp_head", "bert.pooler", "classifier", "qa_outputs", "lm_head", "score",
)  # fmt: skip


def _fresh_modules(missing: list[str]) -> list[str]:
    """Missing parameter names -> the head modules they belong to (mlm_head, bert.pooler ...)."""
    return [head for head in HEAD_MODULES if any(k.startswith(head + ".") for k in missing)]


def import_hf(src: Path, out: Path) -> ImportReport:
    """Convert the HF folder `src` into the nlptool checkpoint folder `out` (written atomically)."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    config = read_json(src / "config.json")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in SUPPORTED:
        raise UserError(
            f"{src}/config.json: model_type {model_type!r} "
            f"({', '.join(architectures) or 'no architectures'}) is not supported; nlptool "
            f"imports {_supported_list()}"
        )
    known = SUPPORTED[model_type]
    architecture = architectures[0] if architectures else next(iter(known))
    if architecture not in known:
        raise UserError(
            f"{src}/config.json: architecture {architecture!r} is not supported; nlptool "
            f"imports {_supported_list()}"
        )
    try:
        model_cfg = (config_from_hf_bert if model_type == "bert" else config_from_hf_gpt2)(config)
    except ValueError as err:
        raise UserError(f"{src}/config.json: {err}") from None
    model_cfg.name = f"hf:{src.resolve().name}"
    tokenizer = hf_tokenizer(src)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise UserError(
            f"{src}: the tokenizer has {tokenizer.vocab_size} tokens but the model's embeddings "
            f"only {model_cfg.vocab_size} (config.json vocab_size)"
        )
    model_cfg.pad_token_id = tokenizer.pad_id
    kind = known[architecture]
    labels = _labels(config) if kind == "classification" or kind == "ner" else None
    if kind == "classification" and config.get("problem_type") == "regression":
        kind, labels = "regression", None
    model = build_head_model(model_cfg, kind, labels)
    state = read_hf_weights(src)
    try:
        converted = (bert_from_hf if model_type == "bert" else gpt2_from_hf)(state)
    except ValueError as err:
        raise UserError(f"{src}: {err}") from None
    own = model.state_dict()
    wrong = [k for k, v in converted.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise UserError(
            f"{src}: the shapes of {', '.join(wrong[:4])} do not match config.json "
            f"({tuple(converted[wrong[0]].shape)} against {tuple(own[wrong[0]].shape)})"
        )
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if unexpected:
        raise UserError(f"{src}: weights that a {architecture} has no place for: {unexpected[:5]}")
    absent = [k for k in missing if not k.startswith(HEAD_MODULES)]
    if absent:
        raise UserError(f"{src}: the weights lack {', '.join(absent[:5])} (an incomplete file?)")
    fresh = _fresh_modules(list(missing))
    objective = "clm" if model_cfg.arch == "gpt" else "mlm"
    if model_cfg.arch == "bert" and "nsp_head" not in fresh and kind is None:
        objective = "mlm_nsp"
    full = checkpoint_config(model_cfg, tokenizer, objective, kind, labels, out, init=src)
    ckpt.write_checkpoint_folder(
        out,
        model=model,
        config_yaml=full,
        tokenizer=tokenizer,
        trainer_state={
            "step": 0,
            "imported_from": str(src.resolve()),
            "architecture": architecture,
            "fresh": fresh,
        },
    )
    return ImportReport(out, architecture, fresh)


def load_model(checkpoint: Path) -> torch.nn.Module:
    """The nlptool model of a checkpoint (the head its config names), weights loaded."""
    saved = ckpt.saved_config(checkpoint)
    task = saved.get("task")
    model_cfg = typed_section(saved, "model", ModelConfig)
    model = build_head_model(model_cfg, task.kind if task else None, task.labels if task else None)
    ckpt.load_weights(model, checkpoint)
    return model


def build_head_model(
    model_cfg: ModelConfig, kind: str | None, labels: list[str] | None
) -> torch.nn.Module:
    """A fresh nlptool model with the head of task `kind` (None: the pretraining heads)."""
    if model_cfg.arch == "gpt":
        if kind in ("classification", "pair_classification"):
            return GPTForSequenceClassification(model_cfg, len(labels or []))
        if kind == "regression":
            return GPTForSequenceClassification(model_cfg, 1)
        if kind not in (None, "lm"):
            raise UserError(
                f"A GPT model has no {kind} head: GPT checkpoints are language models "
                "(GPT2LMHeadModel) or sequence classifiers (GPT2ForSequenceClassification)"
            )
        return GPTForCausalLM(model_cfg)
    if kind in ("classification", "pair_classification"):
        return BertForSequenceClassification(model_cfg, len(labels or []))
    if kind == "regression":
        return BertForSequenceClassification(model_cfg, 1)
    if kind == "ner":
        return BertForTokenClassification(model_cfg, len(labels or []))
    if kind == "qa":
        return BertForQuestionAnswering(model_cfg)
    return BertForPreTraining(model_cfg)


def checkpoint_config(
    model_cfg: ModelConfig,
    tokenizer: TextTokenizer,
    objective: str,
    kind: str | None,
    labels: list[str] | None,
    out: Path,
    init: Path | None = None,
) -> str:
    """A complete config.yaml (the FinetuneConfig schema) for a checkpoint written at `out`
    outside a training run (an import)."""
    cfg = OmegaConf.structured(FinetuneConfig)
    cfg.model = OmegaConf.merge(cfg.model, asdict(model_cfg))
    cfg.tokenizer.kind = "pretrained"
    cfg.tokenizer.path = str(out.resolve())
    cfg.tokenizer.vocab_size = tokenizer.vocab_size
    cfg.tokenizer.lowercase = _lowercases(tokenizer)
    cfg.objective.name = objective
    cfg.init = str(Path(init).resolve()) if init is not None else None
    if kind is not None:
        task = OmegaConf.structured(TaskConfig)
        task.name, task.kind, task.labels = kind, kind, labels
        task.max_seq_len = min(model_cfg.max_seq_len, 384 if kind == "qa" else 128)
        cfg.task = task
    return OmegaConf.to_yaml(cfg)


def _lowercases(tokenizer: TextTokenizer) -> bool:
    normalizer = json.loads(tokenizer.tokenizer.to_str()).get("normalizer") or {}
    found = [normalizer, *normalizer.get("normalizers", [])]
    return any(n.get("lowercase") or n.get("type") == "Lowercase" for n in found if n)


# ---------------------------------------------------------------------------------------------
# Export


@dataclass
class ExportReport:
    path: Path
    architecture: str
    files: list[str]


def export_hf(checkpoint: Path, out: Path, overwrite: bool = False) -> ExportReport:
    """Write the nlptool checkpoint as a Hugging Face folder at `out` (atomically)."""
    from safetensors.torch import save_file

    saved = ckpt.saved_config(checkpoint)
    arch = saved.model.arch
    if arch not in ("bert", "gpt"):
        raise UserError(
            f"{checkpoint}: a {arch} model ({saved.model.name}) has no transformers "
            "counterpart here; export takes BERT and GPT checkpoints (pretrained or fine-tuned)"
        )
    task = saved.get("task")
    kind = task.kind if task is not None else None
    if arch == "gpt" and kind not in GPT2_EXPORT_ARCHITECTURES:
        raise UserError(f"{checkpoint}: exporting a GPT with a {kind} head is not supported")
    if kind == "translation":
        raise UserError(f"{checkpoint}: translation models cannot be exported")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"out={out}: the folder exists and is not empty (add overwrite=true)")
    # through the model: tied tensors are saved under one name, the state dict has them all
    ours = load_model(checkpoint).state_dict()
    model_cfg = saved.model
    tokenizer = TextTokenizer.load(checkpoint)
    if arch == "bert":
        architecture = EXPORT_ARCHITECTURES[kind]
        if kind is None and saved.objective.name == "mlm_nsp":
            architecture = "BertForPreTraining"
        tensors = bert_to_hf(ours)
        if architecture == "BertForMaskedLM":  # the NSP head was never trained
            tensors = {k: v for k, v in tensors.items() if not k.startswith("cls.seq_relationship")}
        tensors.pop("cls.predictions.decoder.bias", None)  # tied to cls.predictions.bias
        if model_cfg.tie_word_embeddings:
            tensors.pop("cls.predictions.decoder.weight", None)
        if kind in ("ner", "qa"):  # these HF models have no pooler
            tensors = {k: v for k, v in tensors.items() if not k.startswith("bert.pooler.")}
        config = _bert_config(
            model_cfg, architecture, kind, list(task.labels or []) if task else []
        )
    else:
        architecture = GPT2_EXPORT_ARCHITECTURES[kind]
        tensors = gpt2_to_hf(ours)
        # the classifier has no LM head; the LM's is the embeddings when they are tied
        if model_cfg.tie_word_embeddings or architecture != "GPT2LMHeadModel":
            tensors.pop("lm_head.weight", None)
        labels = list(task.labels or []) if task is not None and kind != "lm" else []
        config = _gpt2_config(model_cfg, tokenizer, architecture, kind, labels)
    config["pad_token_id"] = tokenizer.pad_id
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    _write_hf_tokenizer(tokenizer, tmp, arch, int(model_cfg.max_seq_len))
    files = sorted(p.name for p in tmp.iterdir())
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return ExportReport(out, architecture, files)


def _common_config(model_cfg: Any) -> dict[str, Any]:
    return {
        "initializer_range": model_cfg.initializer_range,
        "tie_word_embeddings": bool(model_cfg.tie_word_embeddings),
        "vocab_size": model_cfg.vocab_size,
        "torch_dtype": "float32",
        "converted_by": CONVERTED_BY,
    }


def _bert_config(model_cfg: Any, architecture: str, kind: str | None, labels: list[str]):
    config = {
        "model_type": "bert",
        "architectures": [architecture],
        "hidden_size": model_cfg.hidden_size,
        "num_hidden_layers": model_cfg.num_layers,
        "num_attention_heads": model_cfg.num_heads,
        "intermediate_size": model_cfg.intermediate_size or 4 * model_cfg.hidden_size,
        "hidden_act": HF_ACTIVATION[model_cfg.activation],
        "hidden_dropout_prob": model_cfg.dropout,
        "attention_probs_dropout_prob": model_cfg.attention_dropout,
        "max_position_embeddings": model_cfg.max_seq_len,
        "type_vocab_size": model_cfg.type_vocab_size,
        "layer_norm_eps": model_cfg.layer_norm_eps,
        "position_embedding_type": "absolute",
        **_common_config(model_cfg),
    }
    _label_config(config, kind, labels)
    return config


def _label_config(config: dict[str, Any], kind: str | None, labels: list[str]) -> None:
    """problem_type, num_labels, id2label and label2id of a task head's config.json."""
    if kind == "regression":
        config.update(num_labels=1, problem_type="regression")
        labels = ["score"]
    elif kind in ("classification", "pair_classification"):
        config["problem_type"] = "single_label_classification"
    if labels:
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}


def _gpt2_config(
    model_cfg: Any, tokenizer: TextTokenizer, architecture: str, kind: str | None, labels: list[str]
) -> dict[str, Any]:
    """config.json of a GPT-2 export. A `GPT2ForSequenceClassification` pools at the last token
    that is not `pad_token_id` (set by the caller to the tokenizer's pad id): with right padding,
    the last real token, as nlptool's attention-mask pooling does."""
    eos = tokenizer.ids["eos"] if tokenizer.ids["eos"] is not None else 0
    config = {
        "model_type": "gpt2",
        "architectures": [architecture],
        "n_embd": model_cfg.hidden_size,
        "n_layer": model_cfg.num_layers,
        "n_head": model_cfg.num_heads,
        "n_inner": model_cfg.intermediate_size,
        "n_positions": model_cfg.max_seq_len,
        "activation_function": HF_ACTIVATION[model_cfg.activation],
        "resid_pdrop": model_cfg.dropout,
        "embd_pdrop": model_cfg.dropout,
        "attn_pdrop": model_cfg.attention_dropout,
        "layer_norm_epsilon": model_cfg.layer_norm_eps,
        "bos_token_id": eos,
        "eos_token_id": eos,
        **_common_config(model_cfg),
    }
    _label_config(config, kind, labels)
    return config


def _write_hf_tokenizer(tokenizer: TextTokenizer, folder: Path, arch: str, max_len: int) -> None:
    """tokenizer.json as it is, plus a tokenizer_config.json naming the special tokens (and, for
    WordPiece, the normalizer's settings, which `BertTokenizer` would otherwise reset)."""
    tokenizer.save(folder / "tokenizer.json")
    spec = json.loads(tokenizer.tokenizer.to_str())
    model_type = (spec.get("model") or {}).get("type")
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    names = {
        role: tokenizer.tokenizer.id_to_token(i)
        for role, i in tokenizer.ids.items()
        if i is not None
    }
    settings: dict[str, Any] = {"model_max_length": max_len, "clean_up_tokenization_spaces": False}
    if model_type == "WordPiece":
        normalizer = spec.get("normalizer") or {}
        settings.update(
            tokenizer_class="BertTokenizer",
            do_lower_case=bool(normalizer.get("lowercase", False)),
            strip_accents=normalizer.get("strip_accents"),
            tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
        )
        roles = ("unk", "cls", "sep", "pad", "mask")
    elif model_type == "BPE" and arch == "gpt":
        settings.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False)
        eos = names.get("eos")
        settings.update(bos_token=eos, eos_token=eos, unk_token=eos)
        roles = ("pad",)  # (end-of-text when there is no pad token): batches pad as ours do
    else:
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        roles = ("unk", "cls", "sep", "pad", "mask", "eos")
    for role in roles:
        if names.get(role) is not None and names[role] in vocab:
            settings[f"{role}_token"] = names[role]
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=2) + "\n")
