"""Every config in configs/ composes for every verb, and the typed checks catch bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nlptool.cli import config_dir, register_configs
from nlptool.errors import UserError
from nlptool.schema import check_config

CONFIGS = Path(config_dir())
GROUPS = {
    group.name: sorted(p.stem for p in group.glob("*.yaml"))
    for group in sorted(CONFIGS.iterdir())
    if group.is_dir() and group.name != "__pycache__"
}
OBJECTIVE_FOR_ARCH = {"bert": "mlm", "gpt": "clm"}


def compose_cfg(verb: str, overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=verb, overrides=overrides)


def test_groups_of_the_contract_exist():
    assert set(GROUPS) >= {"model", "objective", "data", "tokenizer", "trainer", "task"}
    assert set(GROUPS["model"]) >= {
        "bert-tiny", "bert-mini", "bert-small", "bert-base", "bert-large",
        "gpt-tiny", "gpt-mini", "gpt2", "gpt2-medium", "gpt2-large",
        "transformer-tiny", "transformer-base",
    }  # fmt: skip
    assert set(GROUPS["objective"]) == {"mlm", "mlm_nsp", "sop", "clm"}
    assert set(GROUPS["data"]) == {"builtin", "text", "hf"}
    assert set(GROUPS["tokenizer"]) >= {"wordpiece", "bpe", "pretrained"}
    assert set(GROUPS["trainer"]) >= {"default", "smoke", "gpu"}


@pytest.mark.parametrize("verb", ["pretrain", "finetune", "eval"])
@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_config_composes(verb, group, option):
    if group == "task" and verb == "pretrain":
        pytest.skip("tasks belong to finetune and eval")
    cfg = compose_cfg(verb, [f"{group}={option}"])
    assert OmegaConf.select(cfg, group) is not None
    # Every option also survives conversion to the typed dataclasses.
    typed = OmegaConf.to_object(cfg)
    assert typed.trainer.max_steps >= 1


@pytest.mark.parametrize("model", GROUPS["model"])
def test_models_pass_validation_with_their_objective(model):
    arch = OmegaConf.load(CONFIGS / "model" / f"{model}.yaml").arch
    if arch not in OBJECTIVE_FOR_ARCH:
        pytest.skip("encoder-decoder models are trained by the translation task")
    cfg = compose_cfg("pretrain", [f"model={model}", f"objective={OBJECTIVE_FOR_ARCH[arch]}"])
    typed = check_config(cfg)
    assert typed.model.name == model


def test_valid_group_combinations_pass():
    for overrides in (
        ["objective=mlm_nsp"],
        ["trainer=smoke"],
        ["trainer=gpu"],
        ["model=gpt-tiny", "objective=clm", "tokenizer=bpe"],
        ["data=text", "data.train_files=a.txt"],
        ["data=hf", "data.name=wikitext", "data.config=wikitext-103-raw-v1"],
        ["tokenizer=pretrained", "tokenizer.path=tok.json"],
    ):
        check_config(compose_cfg("pretrain", overrides))


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["trainer.lr=-1"], "trainer.lr"),
        (["trainer.batch_size=0"], "trainer.batch_size"),
        (["objective.mask_rate=1.5"], "objective.mask_rate"),
        (["model=gpt-tiny"], "objective=mlm needs a bidirectional encoder"),
        (["model=gpt-tiny", "objective=mlm_nsp"], "objective=mlm_nsp"),
        (["objective=clm"], "objective=clm needs a causal decoder"),
        (["trainer.device=cpu", "trainer.precision=fp16"], "trainer.precision=fp16"),
        (["trainer.batch_size=10", "trainer.micro_batch_size=4"], "trainer.micro_batch_size"),
        (["data.max_seq_len=1024"], "model.max_seq_len"),
        (["data=text"], "data.train_files"),
        (["data=hf"], "data.name"),
        (["tokenizer=pretrained"], "tokenizer.path"),
        (["model.hidden_size=100", "model.num_heads=3"], "model.num_heads"),
        (["trainer.schedule=triangle"], "trainer.schedule"),
        (
            ["data.encoding_errors=ignore"],
            "data.encoding_errors='ignore': expected strict or replace",
        ),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=needle.replace(".", r"\.").replace("+", r"\+")):
        check_config(compose_cfg("pretrain", overrides))


@pytest.mark.parametrize("task", GROUPS.get("task", []))
def test_every_task_passes_validation_with_its_model(task):
    kind = OmegaConf.load(CONFIGS / "task" / f"{task}.yaml").kind
    model, arch = {"translation": ("transformer-tiny", "seq2seq"), "lm": ("gpt-mini", "gpt")}.get(
        kind, ("bert-mini", "bert")
    )
    typed = check_config(compose_cfg("finetune", [f"task={task}", f"model={model}"]))
    assert typed.task.name == task
    assert typed.model.arch == arch


def test_translation_presets_choose_their_model_and_tokenizer():
    cfg = compose_cfg("finetune", ["task=multi30k"])
    assert cfg.model.name == "transformer-tiny" and cfg.tokenizer.kind == "bpe"
    cfg = compose_cfg("finetune", ["task=multi30k", "model=transformer-base"])
    assert cfg.model.name == "transformer-base"


def test_token_and_span_tasks_with_a_decoder_are_refused():
    for task in ("conll2003", "squad"):
        with pytest.raises(UserError, match="needs an encoder"):
            check_config(compose_cfg("finetune", [f"task={task}", "model=gpt-tiny"]))
    # Sequence classification reads a decoder's last token: allowed.
    check_config(compose_cfg("finetune", ["task=sst2", "model=gpt-tiny"]))


def test_convert_config_composes_and_validates():
    from nlptool.verbs.convert import ConvertConfig

    cfg = compose_cfg("convert", ["src=a", "out=b", "to=hf"])
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, ConvertConfig) and (typed.src, typed.out, typed.to) == ("a", "b", "hf")
    typed.validate()
    for bad, message in (
        (["out=b"], "needs src"),
        (["src=a", "out=b", "to=onnx"], "nlptool or hf"),
    ):
        with pytest.raises(ValueError, match=message):
            OmegaConf.to_object(compose_cfg("convert", bad)).validate()
