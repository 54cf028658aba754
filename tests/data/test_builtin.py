"""The built-in corpus (built once for this module) and the cache directory it lives in."""

import sys
import threading
from pathlib import Path

import pytest

from nlptool.cache import nlptool_cache_dir
from nlptool.data import builtin
from nlptool.data.builtin import CORPUS_VERSION, builtin_corpus
from nlptool.data.readers import iter_documents
from nlptool.errors import UserError

NAME = f"corpus-py{sys.version_info[0]}{sys.version_info[1]}-v{CORPUS_VERSION}.txt"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return builtin_corpus(tmp_path_factory.mktemp("cache"))


def test_layout_and_size(corpus):
    assert corpus.name == NAME and corpus.parent.name == "builtin"
    assert 500_000 <= corpus.stat().st_size <= 4_000_000
    text = corpus.read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n") and "\n\n\n" not in text
    documents = text[:-1].split("\n\n")
    assert len(documents) >= 2_000
    assert all(len(document.split("\n")) >= 2 for document in documents)
    # The readers see the same documents: the file is a plain BERT-style .txt corpus.
    assert list(iter_documents(corpus)) == [document.split("\n") for document in documents]
    assert len(set(documents)) == len(documents)  # no repeats


def test_sentences_are_prose(corpus):
    lines = corpus.read_text(encoding="utf-8").split("\n")
    sentences = [line for line in lines if line]
    assert len(sentences) >= 10_000
    assert all(line == line.strip() for line in lines)
    assert not any(line.startswith((">>>", "...")) or ">>> " in line for line in sentences)
    assert not any(set(line) <= set("=-~*^#+| ") for line in sentences)
    assert all(len(line.split()) >= 3 for line in sentences)
    # Spot checks from the two sources: a help topic and a module docstring.
    assert any("assert statement" in line for line in sentences)
    assert any("JSON" in line for line in sentences)


def test_build_is_deterministic(corpus, tmp_path):
    again = builtin_corpus(tmp_path)
    assert again.read_bytes() == corpus.read_bytes()
    assert [p.name for p in again.parent.iterdir()] == [NAME]  # no temporary files left


def test_cached_corpus_is_not_rebuilt(corpus, monkeypatch):
    before = corpus.stat().st_mtime_ns
    monkeypatch.setattr(builtin, "_documents", _fail)
    assert builtin_corpus(corpus.parent.parent) == corpus
    assert corpus.stat().st_mtime_ns == before


def test_default_cache_dir_from_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("NLPTOOL_CACHE", str(tmp_path / "nlptool-cache"))
    cached = tmp_path / "nlptool-cache" / "builtin" / NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(corpus.read_bytes())
    monkeypatch.setattr(builtin, "_documents", _fail)
    assert builtin_corpus() == cached


def test_concurrent_builds(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "_documents", lambda: iter([["One a b.", "Two c d."]] * 5000))
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(builtin_corpus(tmp_path))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 1 and len(paths) == 4
    assert paths[0].read_text(encoding="utf-8") == "\n\n".join(["One a b.\nTwo c d."] * 5000) + "\n"
    assert [p.name for p in paths[0].parent.iterdir()] == [NAME]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        builtin, "_raw_texts", lambda: iter(["This is too little. Just two whole sentences."])
    )
    with pytest.raises(
        UserError, match=r"too small \(1 documents\).*data=text data\.train_files=PATH"
    ):
        builtin_corpus(tmp_path)
    assert not (tmp_path / "builtin").exists() or not any((tmp_path / "builtin").iterdir())


def test_cleaning():
    text = (
        "Summary line of the function.\n"
        "\n"
        "Longer text wrapped over\n"
        "two lines, e.g. Like this. And a second sentence!\n"
        "\n"
        "Example\n"
        "-------\n"
        ">>> f(1)\n"
        "Traceback (most recent call last):\n"
        "\n"
        "It works as follows::\n"
        "\n"
        "    indented_code = call(x)  # a literal block\n"
        "+------+------+\n"
        "Too short.\n"
        "\n"
        "lowercase starts are not sentences.\n"
    )
    assert builtin._sentences(text) == [
        "Summary line of the function.",
        "Longer text wrapped over two lines, e.g. Like this.",
        "And a second sentence!",
        "It works as follows:",
    ]


def _fail():
    raise AssertionError("the corpus was rebuilt")


# --- the cache directory ---------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NLPTOOL_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nlptool_cache_dir() == tmp_path / "explicit" and (tmp_path / "explicit").is_dir()
    monkeypatch.delenv("NLPTOOL_CACHE")
    assert nlptool_cache_dir() == tmp_path / "xdg" / "nlptool"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert nlptool_cache_dir() == tmp_path / "home" / ".cache" / "nlptool"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert nlptool_cache_dir() == tmp_path / "home" / ".cache" / "nlptool"


def test_cache_dir_not_creatable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("NLPTOOL_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(UserError, match=r"cache directory .*NLPTOOL_CACHE"):
        nlptool_cache_dir()
