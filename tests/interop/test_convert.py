"""Hugging Face folders <-> nlptool checkpoints, checked against `transformers` itself.

Every HF model here is built by `transformers` from a config, given random weights and saved
with `save_pretrained`; tokenizers come from vocabularies trained in the test (uncased and cased
WordPiece as `vocab.txt`, the same as `tokenizer.json`, GPT-2 byte-level BPE as `vocab.json` +
`merges.txt`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlptool.data.tokenizer import TextTokenizer, train_tokenizer
from nlptool.errors import UserError
from nlptool.interop.convert import (
    build_head_model,
    checkpoint_config,
    export_hf,
    import_hf,
    load_model,
)
from nlptool.interop.hf import config_from_hf_bert
from nlptool.interop.hf_folder import hf_tokenizer
from nlptool.interop.sources import resolve_model_source
from nlptool.models.gpt import GPTForCausalLM
from nlptool.training import checkpoint as ckpt
from tests.interop.test_hf_mapping import batch as padded_batch

transformers = pytest.importorskip("transformers")

# Accents, CJK, emoji, long words, whitespace runs, casing, punctuation, numbers.
SAMPLE = [
    "Héllo Wörld! Ça va? naïve café résumé Ångström",
    "東京は日本の首都です。中文分词测试 한국어 텍스트",
    "emoji 😀👍🏽 and ❤️ symbols ™ © ½",
    "Supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis " + "x" * 120,
    "tabs\tand   multiple    spaces\n\nnew lines   ",
    "Mixed CASE like iPhone, NASA and McDonald's; 3.14159 and 1,000,000 -- done.",
    "   leading and trailing   ",
]
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "The Quick Brown Fox Jumps Over The Lazy Dog",
    "hello world, café and naïve résumé; numbers 123 456",
    "東京 日本 中文 测试 words and more words",
    "McDonald's iPhone NASA supercalifragilistic",
] * 20


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def close(ours: torch.Tensor, theirs: torch.Tensor, where: torch.Tensor | None = None) -> None:
    if where is not None:
        ours, theirs = ours[where], theirs[where]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# -- tokenizer folders -------------------------------------------------------------------------


def wordpiece_vocab(lowercase: bool) -> list[str]:
    tok = train_tokenizer("wordpiece", iter(CORPUS), 400, 1, lowercase).tokenizer
    vocab = tok.get_vocab(with_added_tokens=True)
    return sorted(vocab, key=vocab.get)


def write_vocab_folder(folder: Path, lowercase: bool) -> Path:
    """The classic layout: vocab.txt and tokenizer_config.json, no tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(wordpiece_vocab(lowercase)) + "\n")
    settings = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def write_bpe_folder(folder: Path) -> Path:
    """GPT-2's layout: vocab.json and merges.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer("bpe", iter(CORPUS), 400, 1, False).tokenizer
    tok.model.save(str(folder))
    settings = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    for role in ("bos", "eos", "unk"):
        settings[f"{role}_token"] = "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


TOKENIZER_FOLDERS = {
    "wordpiece-uncased": lambda f: write_vocab_folder(f, True),
    "wordpiece-cased": lambda f: write_vocab_folder(f, False),
    "tokenizer-json": lambda f: (
        transformers.BertTokenizer(str(write_vocab_folder(f / "src", False) / "vocab.txt"),
                                   do_lower_case=False).save_pretrained(str(f)) and f
    ),
    "gpt2-bpe": write_bpe_folder,
}  # fmt: skip


@pytest.mark.parametrize("kind", list(TOKENIZER_FOLDERS))
def test_imported_tokenizer_gives_autotokenizer_ids(tmp_path, kind):
    folder = tmp_path / kind
    TOKENIZER_FOLDERS[kind](folder)
    if kind == "tokenizer-json":
        assert (folder / "tokenizer.json").is_file() and not (folder / "vocab.txt").exists()
    ours = hf_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert ours.encode_batch(SAMPLE) == [
        theirs(text, add_special_tokens=False)["input_ids"] for text in SAMPLE
    ]
    for text in SAMPLE:  # with the model's special tokens, single and pair
        assert ours.tokenizer.encode(text).ids == theirs(text)["input_ids"], text
        assert (
            ours.tokenizer.encode(text, "second part").ids
            == theirs(text, "second part")["input_ids"]
        )
    if kind.startswith("wordpiece"):
        assert ours.ids["cls"] == theirs.cls_token_id and ours.ids["mask"] == theirs.mask_token_id
        assert ours.pad_id == theirs.pad_token_id


def test_cased_and_uncased_differ(tmp_path):
    cased = hf_tokenizer(write_vocab_folder(tmp_path / "c", False))
    uncased = hf_tokenizer(write_vocab_folder(tmp_path / "u", True))
    assert (
        cased.tokenizer.encode("NASA Café").tokens != uncased.tokenizer.encode("NASA Café").tokens
    )
    assert (
        uncased.tokenizer.encode("NASA Café").tokens[1:-1]
        == uncased.tokenizer.encode("nasa cafe").tokens[1:-1]
    )


# -- model folders -----------------------------------------------------------------------------


def bert_config(vocab_size: int, **kw):
    return transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="eager",
        **kw,
    )


def gpt2_config(vocab_size: int, **kw):
    return transformers.GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        attn_implementation="eager",
        **kw,
    )


LABELS = ["negative", "neutral", "positive"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BERT_HEADS = {
    "BertForPreTraining": {},
    "BertForMaskedLM": {},
    "BertModel": {},
    "BertForSequenceClassification": {
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
    },
    "BertForTokenClassification": {
        "id2label": dict(enumerate(TAGS)),
        "label2id": {tag: i for i, tag in enumerate(TAGS)},
    },
    "BertForQuestionAnswering": {},
}


def hf_bert_folder(folder: Path, architecture: str, lowercase: bool = True):
    write_vocab_folder(folder, lowercase)
    vocab_size = len((folder / "vocab.txt").read_text().split("\n")) - 1
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(
        bert_config(vocab_size, **BERT_HEADS[architecture])
    ).eval()
    randomize(model)
    model.save_pretrained(str(folder))
    return model


GPT2_HEADS = {
    "GPT2LMHeadModel": {},
    "GPT2Model": {},
    # GPT-2 has no pad token: padded with end-of-text (id 0 here), as people fine-tune it
    "GPT2ForSequenceClassification": {**BERT_HEADS["BertForSequenceClassification"], "pad_token_id": 0},
}  # fmt: skip


def hf_gpt2_folder(folder: Path, architecture: str = "GPT2LMHeadModel"):
    write_bpe_folder(folder)
    vocab_size = len(json.loads((folder / "vocab.json").read_text()))
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(
        gpt2_config(vocab_size, **GPT2_HEADS[architecture])
    ).eval()
    randomize(model)
    model.save_pretrained(str(folder))
    return model


def compare(architecture: str, ours: torch.nn.Module, theirs: torch.nn.Module, vocab: int):
    """Outputs of our model and the HF one on the same padded batch."""
    ids, mask, types = padded_batch(vocab)
    valid = mask.bool()
    ours.eval()
    with torch.no_grad():
        if architecture == "GPT2ForSequenceClassification":
            # HF pools at the last token that is not the pad id: pad with it, and only there
            pad = theirs.config.pad_token_id
            ids = torch.where(valid & (ids == pad), (pad + 1) % vocab, ids).masked_fill(~valid, pad)
            close(ours(ids, mask), theirs(input_ids=ids, attention_mask=mask).logits)
            return
        if architecture.startswith("GPT2"):
            out = theirs(input_ids=ids, attention_mask=mask)
            hidden = ours(ids, attention_mask=mask)
            if architecture == "GPT2Model":
                close(hidden, out.last_hidden_state, valid)
            else:
                close(ours.lm_logits(hidden), out.logits, valid)
            return
        out = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
        if architecture in ("BertForPreTraining", "BertForMaskedLM", "BertModel"):
            hidden = ours(ids, mask, types)
            if architecture == "BertModel":
                close(hidden, out.last_hidden_state, valid)
                close(ours.pool(hidden), out.pooler_output)
                return
            logits = out.prediction_logits if architecture == "BertForPreTraining" else out.logits
            close(ours.mlm_logits(hidden), logits, valid)
            if architecture == "BertForPreTraining":
                close(ours.nsp_logits(ours.pool(hidden)), out.seq_relationship_logits)
        elif architecture == "BertForQuestionAnswering":
            start, end = ours(ids, mask, types)
            close(start, out.start_logits, valid)
            close(end, out.end_logits, valid)
        elif architecture == "BertForTokenClassification":
            close(ours(ids, mask, types), out.logits, valid)
        else:
            close(ours(ids, mask, types), out.logits)


def vocab_of(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["vocab_size"]


@pytest.mark.parametrize("architecture", [*BERT_HEADS, *GPT2_HEADS])
def test_import_gives_the_source_logits(tmp_path, architecture):
    src = tmp_path / "hf"
    if architecture.startswith("GPT2"):
        theirs = hf_gpt2_folder(src, architecture)
    else:
        theirs = hf_bert_folder(src, architecture)
    report = import_hf(src, tmp_path / "ours")
    assert report.architecture == architecture
    assert ckpt.is_complete(tmp_path / "ours")
    ours = load_model(tmp_path / "ours")
    compare(architecture, ours, theirs, vocab_of(src))
    expected_fresh = {
        "BertForPreTraining": [],
        "BertForMaskedLM": ["nsp_head", "bert.pooler"],
        "BertModel": ["mlm_head", "nsp_head"],
        "BertForSequenceClassification": [],
        "BertForTokenClassification": ["bert.pooler"],
        "BertForQuestionAnswering": ["bert.pooler"],
        "GPT2LMHeadModel": [],
        "GPT2Model": [],
        "GPT2ForSequenceClassification": [],
    }[architecture]
    assert sorted(report.fresh) == sorted(expected_fresh)
    config = ckpt.read_checkpoint(tmp_path / "ours").config_yaml
    if architecture.endswith("ForSequenceClassification"):
        assert "- negative" in config and "kind: classification" in config
    if architecture == "BertForTokenClassification":
        assert "- B-PER" in config and "kind: ner" in config


@pytest.mark.parametrize(
    "architecture", [*BERT_HEADS, "GPT2LMHeadModel", "GPT2ForSequenceClassification"]
)
def test_round_trip_gives_the_source_tensors(tmp_path, architecture):
    src = tmp_path / "hf"
    if architecture.startswith("GPT2"):
        hf_gpt2_folder(src, architecture)
    else:
        hf_bert_folder(src, architecture)
    report = import_hf(src, tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "back")
    source, back = (
        load_file(str(src / "model.safetensors")),
        load_file(str(tmp_path / "back" / "model.safetensors")),
    )
    if architecture == "BertModel":  # saved without the prefix its task models load it with
        source = {f"bert.{key}": tensor for key, tensor in source.items()}
    assert set(source) <= set(back)
    for key, tensor in source.items():
        assert torch.equal(back[key], tensor), key
    # only the heads the source lacked (initialised fresh on import) are added
    hf_names = {"bert.pooler": "bert.pooler.", "mlm_head": "cls.predictions.", "nsp_head": "cls."}
    added = tuple(hf_names[module] for module in report.fresh)
    assert all(key.startswith(added) for key in set(back) - set(source)), report.fresh


def make_checkpoint(tmp_path: Path, kind: str | None, objective: str = "mlm") -> Path:
    """An nlptool checkpoint written the way nlptool writes them (random weights), with a
    cased WordPiece (BERT) or a byte-level BPE (GPT) tokenizer."""
    if objective == "clm":
        tokenizer = train_tokenizer("bpe", iter(CORPUS), 400, 1, False)
        arch = "gpt"
    else:
        tokenizer = train_tokenizer("wordpiece", iter(CORPUS), 400, 1, False)
        arch = "bert"
    model_cfg = config_from_hf_bert(bert_config(tokenizer.vocab_size))
    model_cfg.arch = arch
    if arch == "gpt":
        model_cfg.activation, model_cfg.layer_norm_eps = "gelu_tanh", 1e-5
    model_cfg.pad_token_id = tokenizer.pad_id
    labels = {"classification": LABELS, "ner": TAGS}.get(kind or "")
    model = build_head_model(model_cfg, kind, labels)
    randomize(model, seed=3)
    out = tmp_path / "nlptool"
    config = checkpoint_config(model_cfg, tokenizer, objective, kind, labels, out)
    ckpt.write_checkpoint_folder(
        out, model=model, config_yaml=config, tokenizer=tokenizer, trainer_state={"step": 7}
    )
    return out


EXPORTS = {
    # (task kind, objective) -> the Auto classes that must load the export
    (None, "mlm"): ["AutoModel", "AutoModelForMaskedLM"],
    (None, "mlm_nsp"): ["AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM"],
    ("classification", "mlm"): ["AutoModel", "AutoModelForSequenceClassification"],
    ("regression", "mlm"): ["AutoModelForSequenceClassification"],
    ("ner", "mlm"): ["AutoModel", "AutoModelForTokenClassification"],
    ("qa", "mlm"): ["AutoModelForQuestionAnswering"],
    (None, "clm"): ["AutoModel", "AutoModelForCausalLM"],
    ("classification", "clm"): ["AutoModel", "AutoModelForSequenceClassification"],
    ("regression", "clm"): ["AutoModelForSequenceClassification"],
}


@pytest.mark.parametrize("kind,objective", list(EXPORTS))
def test_export_loads_in_transformers_with_our_logits(tmp_path, kind, objective):
    checkpoint = make_checkpoint(tmp_path, kind, objective)
    report = export_hf(checkpoint, tmp_path / "export")
    assert "model.safetensors" in report.files and "pytorch_model.bin" not in report.files
    ours = load_model(checkpoint).eval()
    tokenizer = TextTokenizer.load(checkpoint)
    for auto in EXPORTS[(kind, objective)]:
        theirs = getattr(transformers, auto).from_pretrained(str(tmp_path / "export")).eval()
        architecture = {
            "AutoModel": "GPT2Model" if objective == "clm" else "BertModel",
            "AutoModelForCausalLM": "GPT2LMHeadModel",
            "AutoModelForMaskedLM": "BertForMaskedLM",
            "AutoModelForPreTraining": "BertForPreTraining",
        }.get(auto, report.architecture)
        assert type(theirs).__name__ == architecture
        if auto == "AutoModel" and kind is not None:  # the encoder of a task model
            ids, mask, types = padded_batch(tokenizer.vocab_size)
            with torch.no_grad():
                if objective == "clm":  # the decoder under the score layer
                    hidden = GPTForCausalLM.forward(ours, ids, mask)
                    out = theirs(input_ids=ids, attention_mask=mask)
                else:
                    hidden = ours.bert(ids, mask, types)
                    out = theirs(input_ids=ids, attention_mask=mask, token_type_ids=types)
            close(hidden, out.last_hidden_state, mask.bool())
            if kind == "classification" and objective != "clm":
                close(ours.bert.pool(hidden), out.pooler_output)
            continue
        compare(architecture, ours, theirs, tokenizer.vocab_size)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    if kind == "classification":
        assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
        assert config["label2id"]["positive"] == 2
    if kind == "ner":
        assert config["id2label"]["1"] == "B-PER"
    if kind == "regression":
        assert config["num_labels"] == 1 and config["problem_type"] == "regression"
    assert config["pad_token_id"] == tokenizer.pad_id
    # the exported tokenizer gives our ids through AutoTokenizer
    theirs_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    for text in SAMPLE:
        assert tokenizer.tokenizer.encode(text).ids == theirs_tok(text)["input_ids"], text


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    src = tmp_path / "roberta"
    src.mkdir()
    config = {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"]}
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"roberta.*not supported.*BertForMaskedLM.*GPT2LMHeadModel"
    ):
        import_hf(src, tmp_path / "out")
    (src / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertLMHeadModel"]})
    )
    with pytest.raises(UserError, match="BertLMHeadModel.*not supported"):
        import_hf(src, tmp_path / "out")


def test_bad_folders_get_clear_errors(tmp_path):
    src = tmp_path / "hf"
    hf_bert_folder(src, "BertForMaskedLM")
    (src / "config.json").write_text('{"model_type": "bert",\n  oops}')
    with pytest.raises(UserError, match=r"config.json: not valid JSON \(line 2"):
        import_hf(src, tmp_path / "out")
    hf_bert_folder(src, "BertForMaskedLM")
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(UserError, match="model.safetensors: cannot read the weights"):
        import_hf(src, tmp_path / "out")
    weights.unlink()
    with pytest.raises(UserError, match="no weights"):
        import_hf(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_pytorch_bin_and_sharded_weights(tmp_path):
    src = tmp_path / "hf"
    theirs = hf_bert_folder(src, "BertForMaskedLM")
    state = load_file(str(src / "model.safetensors"))
    (src / "model.safetensors").unlink()
    torch.save(state, src / "pytorch_model.bin")
    import_hf(src, tmp_path / "a")
    compare("BertForMaskedLM", load_model(tmp_path / "a"), theirs, vocab_of(src))
    (src / "pytorch_model.bin").unlink()
    from safetensors.torch import save_file

    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(src / name))
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    import_hf(src, tmp_path / "b")
    compare("BertForMaskedLM", load_model(tmp_path / "b"), theirs, vocab_of(src))


def test_init_and_checkpoint_accept_hf_folders_and_hub_names(tmp_path, monkeypatch):
    src = tmp_path / "hf"
    hf_bert_folder(src, "BertForMaskedLM")
    cache = tmp_path / "cache"
    first = resolve_model_source(str(src), "init", cache)
    assert ckpt.is_complete(first) and first.parent == (cache / "hf-imports").resolve()
    assert resolve_model_source(str(src), "init", cache) == first  # imported once
    # hf:<name> goes through the hub's snapshot_download (here answered from local files)
    import huggingface_hub

    calls = []

    def fake_download(name, **kw):
        calls.append(name)
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model_source("hf:someone/tiny-bert", "init", cache) == first
    assert calls == ["someone/tiny-bert"]
    # nlptool checkpoints pass through untouched
    assert resolve_model_source(str(first), "init", cache) == first


def test_hub_name_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(UserError, match="init=hf:nobody/no-such-model: could not fetch"):
        resolve_model_source("hf:nobody/no-such-model", "init", tmp_path / "cache")


def test_seq2seq_and_existing_output_are_refused(tmp_path):
    checkpoint = make_checkpoint(tmp_path, None)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not empty"):
        export_hf(checkpoint, tmp_path / "taken")
    export_hf(checkpoint, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "config.json").is_file()
    assert not (tmp_path / "taken" / "file").exists()
