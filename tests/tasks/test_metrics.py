"""The task metrics agree with their references (scikit-learn, scipy, seqeval, the official
SQuAD v1.1 formula, sacrebleu) on many seeded random cases, and streaming in chunks changes
nothing."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import sacrebleu
import seqeval.metrics as seqeval
from scipy import stats
from seqeval.metrics.sequence_labeling import get_entities as seqeval_get_entities
from seqeval.scheme import IOBES, Tokens
from sklearn import metrics as sk

from nlptool.tasks.metrics import (
    BleuMetrics,
    ClassificationMetrics,
    EntityMetrics,
    RegressionMetrics,
    SquadMetrics,
    detect_scheme,
    get_entities,
    normalize_answer,
    squad_exact_match,
    squad_f1,
)

CASES = 150


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True)


def chunked(metric, preds, golds, rng: np.random.Generator):
    """Feed the metric in a random number of random-sized chunks; return its compute()."""
    cuts = np.sort(rng.integers(0, len(preds) + 1, size=rng.integers(0, 4)))
    for start, end in zip([0, *cuts], [*cuts, len(preds)]):
        metric.update(preds[start:end], golds[start:end])
    return metric.compute()


# --- classification ---------------------------------------------------------------------------


def test_classification_matches_sklearn():
    rng = np.random.default_rng(0)
    for case in range(CASES):
        num_labels = int(rng.integers(2, 7))
        size = int(rng.integers(1, 40))
        # Draw from a random subset of the labels so that some are absent from both sides.
        used = rng.choice(num_labels, size=rng.integers(1, num_labels + 1), replace=False)
        golds = rng.choice(used, size=size)
        preds = np.where(rng.random(size) < 0.6, golds, rng.choice(used, size=size))
        positive = int(rng.integers(num_labels))
        result = chunked(ClassificationMetrics(num_labels, positive), preds, golds, rng)

        labels = list(range(num_labels))
        expected = {
            "accuracy": sk.accuracy_score(golds, preds),
            "macro_f1": sk.f1_score(golds, preds, average="macro", labels=labels, zero_division=0),
        }
        for name, score in (("f1", sk.f1_score), ("precision", sk.precision_score)):
            expected[name] = score(golds, preds, average=None, labels=labels, zero_division=0)[
                positive
            ]
        expected["recall"] = sk.recall_score(
            golds, preds, average=None, labels=labels, zero_division=0
        )[positive]
        if num_labels == 2:  # the binary form the pair tasks use
            binary = {"pos_label": positive, "zero_division": 0}
            assert expected["f1"] == approx(sk.f1_score(golds, preds, **binary))
        assert result == {key: approx(value) for key, value in expected.items()}, case


def test_classification_without_positive_label_and_bad_input():
    metric = ClassificationMetrics(3)
    metric.update([0, 1, 2, 2], [0, 1, 1, 2])
    assert set(metric.compute()) == {"accuracy", "macro_f1"}
    with pytest.raises(ValueError, match="outside"):
        metric.update([3], [0])
    with pytest.raises(TypeError, match="integer"):
        metric.update([0.5], [0])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update([0, 1], [0])
    with pytest.raises(ValueError, match="positive_label"):
        ClassificationMetrics(2, positive_label=2)
    with pytest.raises(ValueError, match="before any example"):
        ClassificationMetrics(2).compute()


# --- regression -------------------------------------------------------------------------------


def test_regression_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    for case in range(CASES):
        size = int(rng.integers(3, 60))
        golds = rng.normal(size=size)
        preds = golds + rng.normal(scale=rng.uniform(0.1, 2.0), size=size)
        if case % 2:  # coarse values: many ties on both sides, as STS-B's 0-5 scores have
            golds, preds = np.round(golds * 2) / 2, np.round(preds)
        if np.all(golds == golds[0]) or np.all(preds == preds[0]):
            continue
        result = chunked(RegressionMetrics(), preds.tolist(), golds.tolist(), rng)
        assert result == {
            "pearson": approx(stats.pearsonr(preds, golds).statistic),
            "spearman": approx(stats.spearmanr(preds, golds).statistic),
            "mse": approx(sk.mean_squared_error(golds, preds)),
        }, case


def test_regression_constant_input_is_nan_like_scipy():
    metric = RegressionMetrics()
    metric.update(np.array([[1.0], [1.0], [1.0]]), [0.0, 1.0, 2.0])  # (B, 1) head output
    result = metric.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = stats.pearsonr([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]).statistic
    assert np.isnan(reference) and np.isnan(result["pearson"]) and np.isnan(result["spearman"])
    assert result["mse"] == approx(2 / 3)


# --- named entities ---------------------------------------------------------------------------


def random_tags(rng: np.random.Generator, prefixes: str, size: int) -> list[str]:
    """Any prefix after any other: ill-formed sequences (I- after O, type switches, ...)."""
    vocabulary = ["O", "O", *(f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "ORG"))]
    vocabulary += list(prefixes)  # untyped tags, which seqeval types as "_"
    return [str(tag) for tag in rng.choice(vocabulary, size=size)]


def well_formed_tags(rng: np.random.Generator, scheme: str, size: int) -> list[str]:
    inside, single = {"IOB2": ("I", "B"), "IOBES": ("I", "S"), "BMES": ("M", "S")}[scheme]
    tags: list[str] = []
    while len(tags) < size:
        length, entity_type = int(rng.integers(0, 4)), str(rng.choice(["PER", "LOC"]))
        if length == 0:
            tags.append("O")
        elif length == 1:
            tags.append(f"{single}-{entity_type}")
        else:
            last = "I" if scheme == "IOB2" else "E"
            middle = [f"{inside}-{entity_type}"] * (length - 2)
            tags += [f"B-{entity_type}", *middle, f"{last}-{entity_type}"]
    return tags[:size]


def sentence_pairs(rng: np.random.Generator, scheme: str, prefixes: str):
    """Gold sentences (random or well-formed) and predictions that copy ~80% of their tags."""
    golds, preds = [], []
    for _ in range(int(rng.integers(1, 12))):
        size = int(rng.integers(0, 12))
        if rng.random() < 0.5:
            gold = random_tags(rng, prefixes, size)
        else:
            gold = well_formed_tags(rng, scheme, size)
        noise = random_tags(rng, prefixes, size)
        golds.append(gold)
        preds.append([n if rng.random() < 0.2 else g for g, n in zip(gold, noise)])
    return preds, golds


def seqeval_scores(preds, golds, **mode) -> dict[str, float]:
    scores = {
        "precision": seqeval.precision_score(golds, preds, zero_division=0, **mode),
        "recall": seqeval.recall_score(golds, preds, zero_division=0, **mode),
        "f1": seqeval.f1_score(golds, preds, zero_division=0, **mode),
    }
    per_type = seqeval.f1_score(golds, preds, average=None, zero_division=0, **mode)
    if mode:
        types = {e.tag for tags in golds + preds for e in Tokens(tags, IOBES).entities}
    else:
        types = {t for tags in golds + preds for t, _, _ in seqeval_get_entities(tags)}
    scores.update({f"f1/{t}": f for t, f in zip(sorted(types), per_type)})
    return scores


def test_iob2_matches_seqeval_default_mode():
    rng = np.random.default_rng(2)
    for case in range(CASES):
        preds, golds = sentence_pairs(rng, "IOB2", "BI")
        for tags in preds:
            assert get_entities(tags, "IOB2") == seqeval_get_entities(tags), tags
        result = chunked(EntityMetrics("IOB2"), preds, golds, rng)
        expected = seqeval_scores(preds, golds)
        assert result == {key: approx(value) for key, value in expected.items()}, case


@pytest.mark.parametrize("scheme", ["IOBES", "BMES"])
def test_iobes_and_bmes_match_seqeval_strict_iobes(scheme: str):
    rng = np.random.default_rng(3)
    prefixes = "BIES" if scheme == "IOBES" else "BMES"
    for case in range(CASES):
        preds, golds = sentence_pairs(rng, scheme, prefixes)
        # seqeval has no BMES: compare against strict IOBES with M- renamed to I-.
        as_iobes = [[("I" + tag[1:]) if tag[0] == "M" else tag for tag in s] for s in preds + golds]
        iobes_preds, iobes_golds = as_iobes[: len(preds)], as_iobes[len(preds) :]
        for tags, iobes_tags in zip(preds, iobes_preds):
            reference = [(e.tag, e.start, e.end - 1) for e in Tokens(iobes_tags, IOBES).entities]
            assert get_entities(tags, scheme) == reference, tags
        result = chunked(EntityMetrics(scheme), preds, golds, rng)
        expected = seqeval_scores(iobes_preds, iobes_golds, mode="strict", scheme=IOBES)
        assert result == {key: approx(value) for key, value in expected.items()}, case


def test_chunking_rules_by_hand():
    # Lenient IOB2: an I- after O or after another type opens an entity; B- always does.
    tags = ["I-PER", "I-PER", "I-LOC", "O", "B-PER", "B-PER", "I-PER", "I-ORG"]
    assert get_entities(tags, "IOB2") == [
        ("PER", 0, 1),
        ("LOC", 2, 2),
        ("PER", 4, 4),
        ("PER", 5, 6),
        ("ORG", 7, 7),
    ]
    # Strict IOBES: only S-x and B-x I-x* E-x count; the broken B- run does not hide the S-.
    tags = ["B-PER", "I-PER", "S-LOC", "B-LOC", "I-LOC", "E-LOC", "I-PER", "E-PER", "B-ORG"]
    assert get_entities(tags, "IOBES") == [("LOC", 2, 2), ("LOC", 3, 5)]
    assert get_entities(["B-GPE", "M-GPE", "M-GPE", "E-GPE", "S-PER"], "BMES") == [
        ("GPE", 0, 3),
        ("PER", 4, 4),
    ]


def test_detect_scheme_and_invalid_tags():
    assert detect_scheme(["O", "B-PER", "I-PER"]) == "IOB2"
    assert detect_scheme(["O", "B-PER", "I-PER", "E-PER", "S-PER"]) == "IOBES"
    assert detect_scheme(iter(["O", "B-PER", "M-PER", "E-PER", "S-PER"])) == "BMES"
    with pytest.raises(ValueError, match="not a IOB2 tag"):
        get_entities(["E-PER"], "IOB2")
    with pytest.raises(ValueError, match="not a BMES tag"):
        get_entities(["I-PER"], "BMES")
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        EntityMetrics("BIO")
    with pytest.raises(ValueError, match="sentence 0 of the batch has 1 predicted tags"):
        EntityMetrics("IOB2").update([["O"]], [["O", "O"]])


# --- SQuAD ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Quick, Brown Fox!", "quick brown fox"),
        ("  an   apple\tand\na  pear ", "apple and pear"),
        ("theater of the absurd", "theater of absurd"),  # articles only as whole words
        ("a-the-an", "athean"),  # punctuation goes first, so no word boundary is left
        ("A.B.C.", "abc"),
        ("$1,000.50", "100050"),
        ("don't", "dont"),
        ("THE", ""),
        ("the idéa, a naïve one", "idéa naïve one"),  # Unicode letters are word characters
        ("«Les Misérables» — the musical", "«les misérables» — musical"),  # ASCII punct only
        ("x\u00a0\u2003y", "x y"),  # Unicode whitespace collapses
        ("«the»end", "« »end"),  # an article becomes a space, not nothing
    ],
)
def test_normalize_answer_like_the_official_script(text: str, expected: str):
    assert normalize_answer(text) == expected


def test_squad_scores_by_hand():
    assert squad_exact_match("the Eiffel Tower", ["Eiffel Tower.", "tower"]) == 1.0
    assert squad_f1("in Paris, France", ["Paris"]) == approx(0.5)  # P 1/3, R 1
    assert squad_exact_match("in Paris, France", "Paris") == 0.0
    assert squad_f1("x x y", ["x y y"]) == approx(2 / 3)  # 2 shared tokens of 3 each
    assert squad_f1("big red barn", ["barn", "red barn", "b"]) == approx(0.8)
    # Both normalise to "": equal for exact match, but v1.1's F1 is 0 (no common token).
    assert squad_exact_match("", ["The"]) == 1.0 and squad_f1("", ["The"]) == 0.0
    with pytest.raises(ValueError, match="at least one gold answer"):
        squad_f1("x", [])

    preds = ["the Eiffel Tower", "in Paris, France", "x x y", "nothing"]
    golds = [["Eiffel Tower.", "tower"], ["Paris"], ["x y y"], ["something"]]
    rng = np.random.default_rng(4)
    for _ in range(5):
        assert chunked(SquadMetrics(), preds, golds, rng) == {
            "exact_match": approx(25.0),
            "f1": approx(100 * (1 + 0.5 + 2 / 3 + 0) / 4),
        }


# --- BLEU -------------------------------------------------------------------------------------

HYPOTHESES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "It is raining today, isn't it?",
    "Hello world",
    "Nothing matches here at all",
]
REFERENCES = [
    "The cat is sitting on the mat.",
    "The quick brown fox jumps over the lazy dog.",
    "It's raining today, isn't it?",
    "Hello, world!",
    "Completely different words",
]


@pytest.mark.parametrize("tokenize", ["13a", "intl"])
def test_bleu_matches_sacrebleu(tokenize: str):
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES], tokenize=tokenize)
    rng = np.random.default_rng(5)
    for _ in range(3):
        result = chunked(BleuMetrics(tokenize), HYPOTHESES, REFERENCES, rng)
        assert result == {"bleu": approx(expected.score), "bleu_bp": approx(expected.bp)}


def test_bleu_names_the_missing_package(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    with pytest.raises(ImportError, match="sacrebleu"):
        BleuMetrics()


# --- the common protocol ----------------------------------------------------------------------


def test_every_metric_reports_its_main_key():
    examples = [
        (ClassificationMetrics(2, positive_label=1), [0, 1], [1, 1]),
        (RegressionMetrics(), [0.1, 0.5, 0.2], [0.0, 1.0, 0.5]),
        (EntityMetrics("IOB2"), [["B-PER", "O"]], [["B-PER", "I-PER"]]),
        (SquadMetrics(), ["a cat"], [["cat"]]),
        (BleuMetrics(), ["a cat"], ["a cat"]),
    ]
    for metric, preds, golds in examples:
        with pytest.raises(ValueError, match="before any example"):
            metric.compute()
        metric.update(preds, golds)
        result = metric.compute()
        assert metric.main in result and all(isinstance(v, float) for v in result.values())
