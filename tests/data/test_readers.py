"""Reading data files: every format, compression, encodings, file specs and the error messages."""

import gzip
import json
import os
from pathlib import Path

import pytest

from nlptool.data.readers import (
    decoding,
    describe_replaced,
    encoding_errors,
    file_format,
    files_fingerprint,
    iter_documents,
    iter_records,
    resolve_files,
)
from nlptool.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def write(path: Path, data: str | bytes) -> Path:
    """Write text (as UTF-8) or bytes, gzip-compressed when the name ends in .gz."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def docs(path: Path, text_column: str = "text") -> list[list[str]]:
    return list(iter_documents(path, text_column))


# --- plain text ------------------------------------------------------------------------------

TXT = "  First sentence. \nSecond sentence.\n\n\n \t \nOther document.\n\n"
TXT_DOCS = [["First sentence.", "Second sentence."], ["Other document."]]


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz", "A.TXT"])
def test_txt_documents_split_at_blank_lines(tmp_path, name):
    assert docs(write(tmp_path / name, TXT)) == TXT_DOCS


def test_txt_bom_and_windows_line_ends(tmp_path):
    data = "\ufeff" + TXT.replace("\n", "\r\n")
    assert docs(write(tmp_path / "a.txt", data)) == TXT_DOCS
    assert docs(write(tmp_path / "b.txt.gz", data)) == TXT_DOCS


def test_txt_empty_and_blank_files_have_no_documents(tmp_path):
    assert docs(write(tmp_path / "empty.txt", "")) == []
    assert docs(write(tmp_path / "blank.txt", "\n  \n\r\n")) == []
    assert docs(write(tmp_path / "one.txt", "no final newline")) == [["no final newline"]]


def test_txt_non_utf8_names_file_and_line(tmp_path):
    path = write(tmp_path / "latin1.txt", b"ok\nstill ok\n" + "café\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.txt, line 3: .*not valid UTF-8"):
        docs(path)


def test_txt_gz_non_utf8_names_line(tmp_path):
    path = write(tmp_path / "bad.txt.gz", b"one\n\ntwo \xff\n")
    with pytest.raises(UserError, match=r"bad\.txt\.gz, line 3: bytes ff "):
        docs(path)


def test_replace_policy_substitutes_and_counts_distinct_lines(tmp_path):
    path = write(tmp_path / "mixed.csv.gz", b"text\ncaf\xe9\nok\n\xff\xfe\n")
    with decoding("replace") as replaced:
        assert encoding_errors() == "replace"
        first = [r["text"] for _, r in iter_records(path, {"data.text_column": "text"})]
        again = [r["text"] for _, r in iter_records(path, {"data.text_column": "text"})]
    assert first == again == ["caf\ufffd", "ok", "\ufffd\ufffd"]
    assert replaced == {str(path): {2, 4}}  # read twice, counted once per line
    assert describe_replaced(replaced).startswith(
        "data.encoding_errors=replace: 2 lines with bytes that are not UTF-8, replaced by U+FFFD, "
        "in mixed.csv.gz (2)"
    )
    assert encoding_errors() == "strict"  # the policy ends with the block
    with pytest.raises(UserError, match=r"mixed\.csv\.gz, line 2: .*encoding_errors=replace"):
        list(iter_records(path, {"data.text_column": "text"}))


def test_corrupt_gzip_is_a_user_error(tmp_path):
    truncated = gzip.compress(b"some text\n" * 1000)[:40]
    (tmp_path / "cut.txt.gz").write_bytes(truncated)
    with pytest.raises(UserError, match=r"cut\.txt\.gz: the gzip data is corrupt or truncated"):
        docs(tmp_path / "cut.txt.gz")
    (tmp_path / "plain.txt.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(UserError, match=r"plain\.txt\.gz: the gzip data"):
        docs(tmp_path / "plain.txt.gz")


# --- JSON lines and JSON ---------------------------------------------------------------------

RECORDS = [
    {"id": 1, "text": "Line one.\nLine two.\r\n\n  Line three.  "},
    {"id": 2, "text": "   "},  # blank: skipped
    {"id": 3, "text": None},  # null: skipped
    {"id": 4, "text": "Single."},
]
RECORD_DOCS = [["Line one.", "Line two.", "Line three."], ["Single."]]


def jsonl(records: list[dict], line_end: str = "\n") -> str:
    return "".join(json.dumps(r) + line_end for r in records)


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz", "r.json"])
def test_jsonl_records(tmp_path, name):
    data = "\ufeff" + jsonl(RECORDS[:2]) + "\n  \n" + jsonl(RECORDS[2:], "\r\n")
    assert docs(write(tmp_path / name, data)) == RECORD_DOCS


@pytest.mark.parametrize(
    "value",
    [RECORDS, {"version": "1", "data": RECORDS}],
    ids=["list", "data-object"],
)
@pytest.mark.parametrize("name", ["r.json", "r.json.gz"])
def test_json_list_or_data_object(tmp_path, name, value):
    assert docs(write(tmp_path / name, "\ufeff" + json.dumps(value, indent=2))) == RECORD_DOCS


def test_json_single_object_is_one_record(tmp_path):
    path = write(tmp_path / "one.json", json.dumps({"body": "A.\nB."}))
    assert docs(path, "body") == [["A.", "B."]]


def test_other_text_column_and_record_locations(tmp_path):
    path = write(tmp_path / "r.jsonl", jsonl([{"body": "x"}, {"body": "y"}]))
    assert docs(path, "body") == [["x"], ["y"]]
    assert [where for where, _ in iter_records(path)] == ["line 1", "line 2"]
    path = write(tmp_path / "r.json", json.dumps([{"body": "x"}, {"body": "y"}]))
    assert [where for where, _ in iter_records(path)] == ["record 1", "record 2"]


def test_jsonl_missing_column_names_file_line_key_and_columns(tmp_path):
    path = write(tmp_path / "r.jsonl", jsonl([{"text": "ok"}, {"title": "t", "body": "b"}]))
    with pytest.raises(UserError) as err:
        docs(path)
    message = str(err.value)
    assert "r.jsonl, line 2" in message
    assert "'text'" in message and "data.text_column" in message
    assert "'title', 'body'" in message


def test_json_missing_column_names_record(tmp_path):
    path = write(tmp_path / "r.json", json.dumps({"data": [{"sentence": "s"}]}))
    with pytest.raises(UserError, match=r"r\.json, record 1: no column 'text'.*'sentence'"):
        docs(path)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "r.jsonl", jsonl(RECORDS[:2]) + '{"text": "unterminated\n')
    with pytest.raises(UserError, match=r"r\.jsonl, line 3: invalid JSON"):
        docs(path)


def test_malformed_json_lines_under_json_name(tmp_path):
    path = write(tmp_path / "r.json", jsonl(RECORDS[:2]) + "{oops}\n")
    with pytest.raises(UserError, match=r"r\.json, line 3: invalid JSON"):
        docs(path)


def test_malformed_json_document_names_line(tmp_path):
    path = write(tmp_path / "r.json", '[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(UserError, match=r"r\.json, line 3: invalid JSON"):
        docs(path)


def test_json_non_utf8_names_line(tmp_path):
    path = write(tmp_path / "r.json", b'[\n{"text": "a"},\n{"text": "\xe9"}\n]\n')
    with pytest.raises(UserError, match=r"r\.json, line 3: .*not valid UTF-8"):
        docs(path)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('["just", "strings"]', r"record 1: expected a JSON object"),
        ("42", r"the JSON value is a int"),
        ('{"text": 5}\n', r"record 1: column 'text' \(data.text_column\) holds int 5, not text"),
    ],
)
def test_json_wrong_shapes(tmp_path, content, pattern):
    with pytest.raises(UserError, match=pattern):
        docs(write(tmp_path / "r.json", content))


# --- CSV and TSV -----------------------------------------------------------------------------

CSV = (
    "\ufeffid,text,label\r\n"
    '1,"Hello, world.\r\nSecond line, with ""quotes"".",pos\r\n'
    "2,plain text,neg\r\n"
    "\r\n"
    "3\r\n"  # short row: no text
    '4,"",neg\r\n'
)
CSV_DOCS = [["Hello, world.", 'Second line, with "quotes".'], ["plain text"]]


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz"])
def test_csv_quoted_fields_bom_crlf(tmp_path, name):
    path = write(tmp_path / name, CSV)
    assert docs(path) == CSV_DOCS
    records = list(iter_records(path))
    assert [where for where, _ in records] == ["line 2", "line 4", "line 6", "line 7"]
    assert records[2][1] == {"id": "3", "text": None, "label": None}


@pytest.mark.parametrize("name", ["d.tsv", "d.tsv.gz"])
def test_tsv_has_no_quoting(tmp_path, name):
    data = 'sentence\tlabel\n"quoted" start, and a comma\t1\nit \'s fine \t0\n'
    assert docs(write(tmp_path / name, data), "sentence") == [
        ['"quoted" start, and a comma'],
        ["it 's fine"],
    ]


def test_csv_missing_column_names_header_and_columns(tmp_path):
    path = write(tmp_path / "d.csv", "sentence,label\nhi,1\n")
    with pytest.raises(UserError) as err:
        docs(path)
    message = str(err.value)
    assert "d.csv, header row (line 1): no column 'text'" in message
    assert "data.text_column" in message and "'sentence', 'label'" in message


def test_headerless_tsv_is_reported_as_missing_column(tmp_path):
    path = write(tmp_path / "d.tsv", "hello there\t1\n")
    with pytest.raises(UserError, match=r"'hello there', '1'.*first row .* must name the columns"):
        docs(path)


def test_csv_non_utf8_names_line(tmp_path):
    path = write(tmp_path / "d.csv", b'text\nfine\n"multi\nline \x80"\n')
    with pytest.raises(UserError, match=r"d\.csv, line 4: .*not valid UTF-8"):
        docs(path)


def test_malformed_csv_names_line(tmp_path):
    path = write(tmp_path / "d.csv", 'text\nok\n"bad" quote,\n')
    with pytest.raises(UserError, match=r"d\.csv, line 3: malformed CSV"):
        docs(path)


def test_csv_huge_field(tmp_path):
    text = "word " * 100_000  # beyond the csv module's default field limit
    path = write(tmp_path / "d.csv", f'text\n"{text}"\n')
    assert docs(path) == [[text.strip()]]


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2, 3], "text": ["A.\nB.", None, "C."]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    assert docs(tmp_path / "d.parquet") == [["A.", "B."], ["C."]]
    assert [w for w, _ in iter_records(tmp_path / "d.parquet")] == ["row 1", "row 2", "row 3"]
    with pytest.raises(UserError, match=r"d\.parquet, schema: no column 'body'.*'id', 'text'"):
        docs(tmp_path / "d.parquet", "body")


def test_not_parquet(tmp_path):
    path = write(tmp_path / "d.parquet", "just text")
    with pytest.raises(UserError, match=r"d\.parquet is not a readable Parquet file"):
        docs(path)


# --- file specs ------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["b.txt", "a.txt", "c.jsonl", "sub/d.txt", "sub/deeper/e.txt.gz"]:
        write(tmp_path / name if "/" not in name else _mkparent(tmp_path / name), "x\n")
    return tmp_path


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_resolve_glob_sorted_and_absolute(files):
    assert resolve_files("*.txt", "data.train_files") == [files / "a.txt", files / "b.txt"]
    assert resolve_files("**/*.txt*", "k") == [
        files / "a.txt",
        files / "b.txt",
        files / "sub/d.txt",
        files / "sub/deeper/e.txt.gz",
    ]


def test_resolve_lists_keep_order_and_dedupe(files):
    expected = [files / "c.jsonl", files / "a.txt", files / "b.txt"]
    assert resolve_files(["c.jsonl", "*.txt", "a.txt"], "k") == expected
    assert resolve_files(("c.jsonl", "./a.txt", "b.txt"), "k") == expected
    assert resolve_files(" c.jsonl, *.txt ,", "k") == expected
    assert resolve_files([files / "c.jsonl", Path("a.txt")], "k") == expected[:2]


def test_resolve_comma_inside_existing_name(files):
    write(files / "x,y.txt", "x\n")
    assert resolve_files("x,y.txt", "k") == [files / "x,y.txt"]


def test_resolve_expands_home(files, monkeypatch):
    monkeypatch.setenv("HOME", str(files / "sub"))
    assert resolve_files("~/d.txt", "k") == [files / "sub/d.txt"]


def test_resolve_no_match_names_key_pattern_and_directory(files):
    with pytest.raises(UserError) as err:
        resolve_files(["a.txt", "missing/*.txt"], "data.valid_files")
    message = str(err.value)
    assert message.startswith("data.valid_files: 'missing/*.txt' matched no file")
    assert str(files) in message and ".parquet" in message


def test_resolve_directory_suggests_glob(files):
    with pytest.raises(UserError, match=r"data.train_files: 'sub' is a directory.*'sub/\*\.txt'"):
        resolve_files("sub", "data.train_files")


def test_resolve_unsupported_extension_lists_supported(files):
    write(files / "notes.md", "x\n")
    write(files / "t.parquet.gz", "x\n")
    for spec in ["notes.md", "*", "t.parquet.gz"]:
        with pytest.raises(UserError) as err:
            resolve_files(spec, "data.train_files")
        assert "unsupported file type" in str(err.value)
        assert ".txt, .jsonl, .json, .csv, .tsv and .parquet" in str(err.value)


@pytest.mark.parametrize("spec", ["", " , ", [], None, [3]])
def test_resolve_empty_or_wrong_type(files, spec):
    with pytest.raises(UserError, match=r"^data\.train_files"):
        resolve_files(spec, "data.train_files")


def test_file_format():
    assert file_format(Path("x/Data.JSONL.GZ")) == "jsonl"
    assert file_format(Path("a.b.tsv")) == "tsv"
    with pytest.raises(UserError, match="^data.valid_files: x.gz has an unsupported"):
        file_format(Path("x.gz"), "data.valid_files")
    with pytest.raises(UserError, match=r"^x.en.gz has an unsupported"):
        file_format(Path("x.en.gz"))


def test_files_fingerprint(tmp_path):
    a, b = write(tmp_path / "a.txt", "one\n"), write(tmp_path / "b.txt", "two\n")
    first = files_fingerprint([a, b])
    assert first == files_fingerprint([str(a), b]) and len(first) == 16
    assert files_fingerprint([b, a]) != first
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert files_fingerprint([a, b]) != first
    write(b, "twoo\n")
    assert files_fingerprint([b]) != files_fingerprint([tmp_path / "a.txt"])


# --- real data sets (skipped where ../shared/data is absent) ---------------------------------


def shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is not here")
    return path


def test_tinyshakespeare():
    path = shared("tinyshakespeare/input.txt")
    lines = path.read_text(encoding="utf-8").split("\n")
    assert len(lines) - 1 == 40_000  # the README's count; the file ends with a newline
    documents = docs(path)
    # Speeches separated by blank lines; every non-blank line is one segment.
    assert sum(map(len, documents)) == sum(1 for line in lines if line.strip()) == 32_777
    assert len(documents) == 7_222
    assert documents[0] == ["First Citizen:", "Before we proceed any further, hear me speak."]


def test_sst2_dev_tsv_gz():
    documents = docs(shared("sst2/dev.tsv.gz"), "sentence")
    assert len(documents) == 872
    assert documents[0] == ["it 's a charming and often affecting journey ."]


def test_stsb_quotes_are_literal_in_tsv():
    records = list(iter_records(shared("stsb/train.tsv.gz"), {"task.text_column": "sentence1"}))
    assert len(records) == 5_749
    assert all(record["score"] is not None for _, record in records)


def test_squad_json_gz_data_list():
    titles = docs(shared("squad_v1.1/dev-v1.1.json.gz"), "title")
    assert len(titles) == 48
