"""The built-in corpus: English prose that every Python installation carries.

`data=builtin` must work offline on any machine without shipping third-party text, so the corpus is
built at run time from (a) the help topics of `pydoc_data.topics` (the language reference as plain
text) and (b) the docstrings of the standard library, read by parsing its source files with `ast`
(importing them could run code with side effects). Code, doctests, tables and headings are dropped,
wrapped lines are joined and paragraphs are split into sentences. The result is a `.txt` corpus
in the BERT layout: one sentence per line, a blank line between documents (one docstring or help
topic each). It is built once per Python version and cached.
"""

import ast
import os
import re
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from nlptool.cache import nlptool_cache_dir
from nlptool.errors import UserError

CORPUS_VERSION = 1
"""Bump when the extraction or cleaning changes, so cached corpora are rebuilt."""

_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "lib2to3",
    "__pycache__",
}
_MIN_WORDS = 3  # shorter fragments are headings, labels or stray code
_MIN_SENTENCES = 2  # documents with fewer say little beyond "Return x."
_MIN_DOCUMENTS = 100  # fewer means the standard library's sources are missing

_PROMPT = re.compile(r"(>>>|\.\.\.)(\s|$)")
_UNDERLINE = re.compile(r"([-=~*^#+\"'`.])\1{2,}")
_ROLE = re.compile(r":[\w:.-]+:`~?([^`]*)`")  # reST roles such as :func:`name`
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = ("e.g.", "i.e.", "cf.", "vs.", "Mr.", "Dr.", "Ms.")
_SENTENCE_OK = re.compile(r"[\"'(\[]?[A-Z][^\n]*[.!?:][\"')\]]?")


def builtin_corpus(cache_dir: Path | None = None) -> Path:
    """Return the path of the built-in corpus, building and caching it on first use.

    The file is `<cache_dir>/builtin/corpus-py<major><minor>-v<CORPUS_VERSION>.txt`, with
    `cache_dir` defaulting to `nlptool_cache_dir()`. It is written atomically, so concurrent
    builders are safe and a half-written corpus is never read.
    """
    cache_dir = nlptool_cache_dir() if cache_dir is None else Path(cache_dir)
    major, minor = sys.version_info[:2]
    path = cache_dir / "builtin" / f"corpus-py{major}{minor}-v{CORPUS_VERSION}.txt"
    if path.is_file():
        return path
    text = "\n\n".join("\n".join(sentences) for sentences in _documents()) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(
            f"Cannot write the built-in corpus to {path.parent}: {err.strerror or err}. Point the "
            "environment variable NLPTOOL_CACHE at a writable directory."
        ) from err
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        os.replace(tmp, path)  # atomic; a concurrent builder writes the same bytes
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _documents() -> Iterator[list[str]]:
    """Yield the corpus documents, each a list of sentences, deduplicated, in a fixed order."""
    seen: set[str] = set()
    count = 0
    for text in _raw_texts():
        sentences = _sentences(text)
        document = "\n".join(sentences)
        if len(sentences) < _MIN_SENTENCES or document in seen:  # dropped, or a repeat
            continue
        seen.add(document)
        count += 1
        yield sentences
    if count < _MIN_DOCUMENTS:
        raise UserError(
            f"The built-in corpus came out too small ({count} documents): this Python "
            f"installation lacks the standard library's source files (looked in {_stdlib_dir()}). Use your own "
            "text instead: data=text data.train_files=PATH."
        )


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _raw_texts() -> Iterator[str]:
    """The help topics in key order, then docstrings in sorted file order and source order."""
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions leave it out
        topics = {}
    for key in sorted(topics):
        yield topics[key]
    for path in _source_files(_stdlib_dir()):
        try:
            source = path.read_bytes()
            with warnings.catch_warnings():  # e.g. SyntaxWarning for old escape sequences
                warnings.simplefilter("ignore")
                tree = ast.parse(source, filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue
        yield from _docstrings(tree)


def _source_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder, name)


def _docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings of a module and its classes and functions, in source order."""
    if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        docstring = ast.get_docstring(node, clean=True)
        if docstring:
            yield docstring
    for child in ast.iter_child_nodes(node):
        # Definitions sit in statement bodies only; skipping expressions keeps recursion shallow.
        if isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            yield from _docstrings(child)


def _sentences(text: str) -> list[str]:
    """Clean one docstring or topic into a list of prose sentences."""
    sentences = []
    for paragraph in _paragraphs(text):
        joined = " ".join(paragraph.split())
        joined = _ROLE.sub(r"\1", joined).replace("``", '"')
        if joined.endswith("::"):  # reST's "as follows::" before a literal block
            joined = joined[:-1]
        pieces = _SENTENCE_END.split(joined)
        for i in range(len(pieces) - 1, 0, -1):  # undo splits after "e.g." and the like
            if pieces[i - 1].endswith(_ABBREVIATIONS):
                pieces[i - 1 : i + 1] = [f"{pieces[i - 1]} {pieces[i]}"]
        sentences.extend(piece for piece in pieces if _is_prose(piece))
    return sentences


def _paragraphs(text: str) -> Iterator[str]:
    """Split text into paragraphs of prose lines, dropping code, prompts, tables and headings.

    A paragraph ends at a blank line or where the indentation changes (a code sample or a nested
    list starts); lines indented by 8 or more are code and dropped, as are doctest examples,
    headings (a line underlined with `===` and the like) and lines that are mostly punctuation.
    """
    lines = text.expandtabs().splitlines()
    paragraph: list[str] = []
    indent = -1
    in_doctest = False  # from a ">>>" prompt to the next blank line: code and its output
    for i, line in enumerate(lines):
        stripped = line.strip()
        next_line = lines[i + 1].strip() if i + 1 < len(lines) else ""
        this_indent = len(line) - len(line.lstrip())
        in_doctest = bool(stripped) and (in_doctest or stripped.startswith(">>>"))
        drop = (
            not stripped
            or in_doctest
            or this_indent >= 8
            or _PROMPT.match(stripped)
            or _UNDERLINE.fullmatch(stripped)
            or _UNDERLINE.fullmatch(next_line)  # a heading
            or _mostly_symbols(stripped)
        )
        if drop or this_indent != indent:
            if paragraph:
                yield " ".join(paragraph)
            paragraph, indent = [], this_indent
        if not drop:
            paragraph.append(stripped)
    if paragraph:
        yield " ".join(paragraph)


def _mostly_symbols(line: str) -> bool:
    """Tables, rules and code-heavy lines: under half of the non-blank characters are letters."""
    if line[0] in "|+":
        return True
    visible = len(line) - line.count(" ")
    return sum(c.isalpha() for c in line) * 2 < visible


def _is_prose(sentence: str) -> bool:
    """A capitalised sentence of a few words that ends like one and is mostly letters, not code."""
    if len(sentence.split()) < _MIN_WORDS or not _SENTENCE_OK.fullmatch(sentence):
        return False
    return sum(c.isalpha() or c == " " for c in sentence) >= 0.85 * len(sentence)
