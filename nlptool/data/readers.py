"""Find the user's data files and read them as documents or records.

Formats, chosen by file name (case-insensitive), each optionally gzip-compressed (`.gz`, except
Parquet):

- `.txt`: one segment (sentence) per line, a blank line between documents (the BERT convention).
- `.jsonl`: one JSON object per line.
- `.json`: a list of objects, an object whose `"data"` key holds that list, or JSON lines.
- `.csv`: comma-separated with a header row; fields may be quoted (embedded commas, newlines).
- `.tsv`: tab-separated with a header row and no quoting, as in GLUE: a `"` is an ordinary
  character, so a field cannot hold a tab or a newline.
- `.parquet`: read in batches with pyarrow.

Text is UTF-8 (an initial byte-order mark is dropped, `\\r\\n` line ends are fine); any other byte
sequence is an error that names the file and line, unless the reading runs under
`decoding("replace")` (`data.encoding_errors=replace`): then each bad byte becomes U+FFFD and the
lines are counted. Text, JSON lines, CSV and TSV are streamed line
by line; a `.json` file is parsed whole.
"""

import contextlib
import csv
import glob
import gzip
import hashlib
import json
import os
import re
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO

from nlptool.errors import UserError

FORMATS = ("txt", "jsonl", "json", "csv", "tsv", "parquet")
"""The formats `iter_documents` reads; all but Parquet may also be gzip-compressed."""

_SUPPORTED = ".txt, .jsonl, .json, .csv, .tsv and .parquet, each but .parquet also as .gz"
_GLOB_MAGIC = re.compile(r"[*?[]")
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB) is too small for documents

ENCODING_ERRORS = ("strict", "replace")
"""data.encoding_errors: what a byte sequence that is not UTF-8 does."""
_ENCODING_ERRORS: ContextVar[str] = ContextVar("nlptool_encoding_errors", default="strict")
_REPLACED: ContextVar[dict[str, set[int]] | None] = ContextVar("nlptool_replaced", default=None)


@contextlib.contextmanager
def decoding(errors: str) -> Iterator[dict[str, set[int]]]:
    """Read with this policy for bytes that are not UTF-8: "strict" (an error naming the file and
    line) or "replace" (U+FFFD for each bad byte). Yields {file: numbers of the lines replaced}."""
    if errors not in ENCODING_ERRORS:
        raise ValueError(f"encoding errors {errors!r}: expected one of {ENCODING_ERRORS}")
    replaced: dict[str, set[int]] = defaultdict(set)
    tokens = _ENCODING_ERRORS.set(errors), _REPLACED.set(replaced)
    try:
        yield replaced
    finally:
        _ENCODING_ERRORS.reset(tokens[0])
        _REPLACED.reset(tokens[1])


def encoding_errors() -> str:
    """The policy in force (see `decoding`)."""
    return _ENCODING_ERRORS.get()


def describe_replaced(replaced: dict[str, set[int]]) -> str:
    """One line for the user: how many lines of which files had bytes replaced."""
    counts = sorted(((len(lines), path) for path, lines in replaced.items()), reverse=True)
    total = sum(n for n, _ in counts)
    files = ", ".join(f"{Path(path).name} ({n:,})" for n, path in counts[:3])
    more = f" and {len(replaced) - 3} more files" if len(replaced) > 3 else ""
    return (
        f"data.encoding_errors=replace: {total:,} line{'s' * (total != 1)} with bytes that are "
        f"not UTF-8, replaced by U+FFFD, in {files}{more}"
    )


def file_format(path: Path, key: str | None = None) -> str:
    """Return the format of `path` (one of `FORMATS`) from its name; UserError if unsupported.

    `key`, the config key that named the file, starts the error message when given.
    """
    name = path.name.lower()
    compressed = name.endswith(".gz")
    stem = name[:-3] if compressed else name
    fmt = os.path.splitext(stem)[1].lstrip(".")
    if fmt not in FORMATS or (compressed and fmt == "parquet"):
        prefix = f"{key}: " if key else ""
        raise UserError(
            f"{prefix}{path} has an unsupported file type. Supported are {_SUPPORTED}; name the "
            "files accordingly or narrow the glob pattern."
        )
    return fmt


def resolve_files(spec: str | os.PathLike | Sequence[str | os.PathLike], key: str) -> list[Path]:
    """Expand a files spec (`data.train_files` and the like) into absolute file paths.

    `spec` is a path or glob pattern (`*`, `?`, `[...]`, `**` for any depth; `~` expanded; relative
    to the current directory), a comma-separated string of them, or a list of them. Each pattern's
    matches are sorted; patterns keep their given order; a file named twice is kept once. Raises
    UserError, naming `key`, for a pattern that matches no file or a file of an unsupported type.
    """
    patterns = _split_spec(spec, key)
    files: list[Path] = []
    seen: set[str] = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if _GLOB_MAGIC.search(expanded):
            matches = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        elif os.path.isdir(expanded):
            raise UserError(
                f"{key}: {pattern!r} is a directory ({os.path.abspath(expanded)}). Name the files "
                f"in it, for example with a glob pattern such as '{pattern.rstrip('/')}/*.txt'."
            )
        else:
            matches = [expanded] if os.path.isfile(expanded) else []
        if not matches:
            raise UserError(
                f"{key}: {pattern!r} matched no file (relative paths are resolved against "
                f"{os.getcwd()}). Give existing files or glob patterns, as a list or a "
                f"comma-separated string; supported are {_SUPPORTED}."
            )
        for match in matches:
            path = Path(os.path.abspath(match))
            file_format(path, key)
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                files.append(path)
    return files


def _split_spec(spec: object, key: str) -> list[str]:
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str):
        # A path that exists is taken whole, even if it contains a comma.
        if "," in spec and not os.path.exists(os.path.expanduser(spec)):
            items: list[object] = spec.split(",")
        else:
            items = [spec]
    elif isinstance(spec, Sequence):  # list, tuple, or OmegaConf's ListConfig
        items = list(spec)
    else:
        items = [spec]
    patterns = []
    for item in items:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise UserError(
                f"{key}: expected file paths or glob patterns (strings), got {item!r} "
                f"of type {type(item).__name__}."
            )
        if item.strip():
            patterns.append(item.strip())
    if not patterns:
        raise UserError(
            f"{key} is empty. Give a file path or glob pattern, several as a list or a "
            f"comma-separated string; supported are {_SUPPORTED}."
        )
    return patterns


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """A short hash of each file's resolved path, size and modification time, in order.

    Meant for cache keys: it changes when a file is edited, replaced, added or reordered.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        entry = f"{os.path.realpath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(entry.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def iter_documents(path: Path, text_column: str = "text") -> Iterator[list[str]]:
    """Yield the documents of one file, each a list of non-empty, stripped segments.

    In a `.txt` file a document is a run of non-blank lines and each line is a segment. In a
    record file each record's `text_column` value is a document, split into segments at line
    breaks; a missing (null) or blank value is skipped. Empty documents are never yielded.
    """
    if file_format(path) == "txt":
        yield from _txt_documents(path)
        return
    for where, record in iter_records(path, {"data.text_column": text_column}):
        value = record[text_column]
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserError(
                f"{path}, {where}: column {text_column!r} (data.text_column) holds "
                f"{type(value).__name__} {_short(value)}, not text. Point data.text_column at "
                "a column of strings."
            )
        segments = [s for s in (line.strip() for line in value.splitlines()) if s]
        if segments:
            yield segments


def iter_records(
    path: Path, required: Mapping[str, str] | None = None, header: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(where, record)` for each record of a JSON-lines, JSON, CSV, TSV or Parquet file.

    `where` locates the record for error messages: "line N" (JSON lines, CSV, TSV; the line the
    record starts on), "record N" (a JSON list) or "row N" (Parquet), counted from 1. CSV and TSV
    values are strings, with None for a field missing from a short row. `required` maps config
    keys to the column each names (`{"data.text_column": "text"}`); a file or JSON record without
    one raises UserError naming the file, the place, the key and the columns that do exist.
    With header=False a CSV or TSV file has no header row and its columns are named "0", "1", ...
    by their 0-based position.
    """
    fmt = file_format(path)
    required = dict(required or {})
    if fmt == "txt":
        raise UserError(f"{path}: a .txt file holds plain text, not records with named columns.")
    if fmt == "parquet":
        yield from _parquet_records(path, required)
    elif fmt in ("csv", "tsv"):
        yield from _csv_records(path, fmt, required, header)
    else:
        for where, record in _jsonl_records(path) if fmt == "jsonl" else _json_records(path):
            _check_columns(path, where, record, required)
            yield where, record


def _check_columns(
    path: Path, where: str, columns: Iterable[str], required: Mapping[str, str], hint: str = ""
) -> None:
    columns = list(columns)
    for key, column in required.items():
        if column not in columns:
            names = ", ".join(repr(c) for c in columns) or "none"
            raise UserError(
                f"{path}, {where}: no column {column!r}, which {key} names. The columns there "
                f"are: {names}. Set {key} to one of them.{hint}"
            )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- raw access ------------------------------------------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")  # noqa: SIM115  (the caller closes it)
    except OSError as err:
        raise UserError(f"Cannot read {path}: {err.strerror or err}.") from err


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield `(line number, line)` with each line's ending kept, decoded as UTF-8.

    Lines are split at b"\\n" before decoding (UTF-8 never uses that byte inside a character), so
    an invalid byte is reported with its line (or, under `decoding("replace")`, replaced and the
    line counted). A leading byte-order mark is dropped.
    """
    number = 0
    errors, replaced = _ENCODING_ERRORS.get(), _REPLACED.get()
    try:
        with _open_binary(path) as stream:
            for number, raw in enumerate(stream, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    if errors == "strict":
                        _raise_not_utf8(path, number, raw, err)
                    line = raw.decode("utf-8", errors)
                    if replaced is not None:
                        replaced[str(path)].add(number)
                if number == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield number, line
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(
            f"{path}: the gzip data is corrupt or truncated near line {number + 1} ({err}). "
            "Re-create or re-download the file, or decompress it to check it."
        ) from err


def _raise_not_utf8(path: Path, line: int, raw: bytes, err: UnicodeDecodeError) -> None:
    bad = raw[err.start : err.end].hex(" ")
    raise UserError(
        f"{path}, line {line}: bytes {bad} at byte {err.start + 1} of the line are not valid "
        "UTF-8, the only encoding nlptool reads. Convert the file, for example with "
        "`iconv -f LATIN1 -t UTF-8 IN > OUT` (name its actual encoding after -f), or set "
        "data.encoding_errors=replace to replace such bytes with U+FFFD and go on."
    ) from err


def _txt_documents(path: Path) -> Iterator[list[str]]:
    segments: list[str] = []
    for _, line in iter_lines(path):
        segment = line.strip()
        if segment:
            segments.append(segment)
        elif segments:
            yield segments
            segments = []
    if segments:
        yield segments


def _jsonl_records(
    path: Path, lines: Iterable[tuple[int, str]] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in iter_lines(path) if lines is None else lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(
                f"{path}, line {number}: invalid JSON ({err.msg}, at column {err.colno}). "
                "A JSON-lines file holds one complete JSON object per line."
            ) from err
        yield f"line {number}", _as_record(path, f"line {number}", record)


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    lines = list(iter_lines(path))  # decodes strictly, with line numbers for errors
    text = "".join(line for _, line in lines)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several JSON values: JSON lines under a .json name
            yield from _jsonl_records(path, lines)
            return
        raise UserError(
            f"{path}, line {err.lineno}: invalid JSON ({err.msg}, at column {err.colno}). A .json "
            'file holds a list of records, an object with a "data" list of records, or one JSON '
            "object per line."
        ) from err
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if isinstance(value, dict):  # a single record
        value = [value]
    if not isinstance(value, list):
        raise UserError(
            f"{path}: the JSON value is a {type(value).__name__}; expected a list of records, an "
            'object with a "data" list of records, or one JSON object per line.'
        )
    for index, record in enumerate(value, start=1):
        yield f"record {index}", _as_record(path, f"record {index}", record)


def _as_record(path: Path, where: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(
            f"{path}, {where}: expected a JSON object with named fields, found "
            f"{type(value).__name__} {_short(value)}."
        )
    return value


def _csv_records(
    path: Path, fmt: str, required: Mapping[str, str], has_header: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    # Our lines keep their "\r\n" or "\n" endings, as csv wants (the newline="" convention).
    stream = (line for _, line in iter_lines(path))
    if fmt == "tsv":
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(stream, strict=True)
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            where, start = f"line {start}", reader.line_num + 1
            if not row:  # a blank line
                continue
            if header is None:
                if has_header:
                    hint = f" The first row of a {fmt.upper()} file must name the columns."
                    _check_columns(path, f"header row ({where})", row, required, hint)
                    header = row
                    continue
                header = [str(i) for i in range(len(row))]
                _check_columns(path, f"first row ({where})", header, required)
            values: list[str | None] = list(row)
            values += [None] * (len(header) - len(values))
            yield where, dict(zip(header, values))
    except csv.Error as err:
        raise UserError(
            f"{path}, line {reader.line_num}: malformed {fmt.upper()} ({err}). "
            + (
                "Fields are separated by tabs and never quoted."
                if fmt == "tsv"
                else 'Quote fields that contain commas, quotes or line breaks ("a, b"), '
                'doubling quotes inside them ("say ""hi""").'
            )
        ) from err


def _parquet_records(
    path: Path, required: Mapping[str, str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa  # imported here: heavy, and only Parquet needs it
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not a readable Parquet file ({err}).") from err
    row = 0
    try:
        _check_columns(path, "schema", parquet.schema_arrow.names, required)
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"row {row}", record
    except pa.ArrowException as err:
        raise UserError(
            f"{path}, after row {row}: the Parquet data cannot be read ({err})."
        ) from err
    finally:
        parquet.close()
