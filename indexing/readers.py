"""Read sources (JSONL, CSV/TSV, Parquet, BEIR folders, directories of those) into a stream of `ReadItem`s.

Every source record yields exactly one item, either a `Document` or an error with the raw record, so that a
bad record is counted and dead-lettered downstream instead of silently disappearing.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from search.documents import Document

FORMATS = ("beir", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
# Container keys whose (object) values are merged into `Document.fields`, e.g. BEIR's "metadata".
_NESTED_FIELD_KEYS = ("metadata", "fields")
_PARQUET_BATCH_ROWS = 1024
_EXTRA = "\0extra"  # DictReader's key for values beyond the header (cannot clash with a real column)


class RecordError(ValueError):
    """A source record cannot become a Document; the message says why, in one line."""


class FieldMap(BaseModel):
    """Which source keys feed which `Document` attribute; the first candidate present wins.

    Keys not consumed here go into `Document.fields`, so nothing in a record is dropped. An empty list
    disables a role (e.g. `published_at=[]` keeps a "date" column as a plain field).
    """

    model_config = ConfigDict(extra="forbid")

    id: list[str] = Field(default=["id", "_id", "doc_id"], description="Candidate keys for the document id.")
    title: list[str] = Field(default=["title"], description="Candidate keys for the title.")
    body: list[str] = Field(default=["body", "text", "content"], description="Candidate keys for the main text.")
    url: list[str] = Field(default=["url"], description="Candidate keys for the URL.")
    published_at: list[str] = Field(
        default=["published_at", "date"], description="Candidate keys for the publication time."
    )
    updated_at: list[str] = Field(default=["updated_at"], description="Candidate keys for the last change time.")
    deleted: list[str] = Field(default=["deleted"], description="Candidate keys for the deletion marker.")

    @field_validator("*", mode="before")
    @classmethod
    def _single_key(cls, v: Any) -> Any:
        """Accept a single key as shorthand, as config files and CLI flags naturally give one."""
        return [v] if isinstance(v, str) else v


@dataclass
class ReadItem:
    """One source record: a Document, or the reason it could not become one plus the raw record."""

    position: str  # "corpus.jsonl:17": file (relative to the source) and 1-based line/row
    doc: Document | None
    error: str | None
    raw: dict[str, Any] | None  # may hold non-JSON values (parquet datetimes); dump with default=str


def detect_format(path: Path) -> str:
    """Format of a source: "beir", "jsonl", "csv", "parquet", or "dir" for a directory of such files."""
    path = Path(path)
    if path.is_dir():
        if _beir_corpus(path) is not None:
            return "beir"
        if _source_files(path, None):
            return "dir"
        raise ValueError(f"{path}: directory has no corpus.jsonl (BEIR) and no .jsonl/.ndjson/.csv/.tsv/.parquet files")
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    fmt = _format_by_extension(path)
    if fmt is None:
        raise ValueError(
            f"{path}: unknown source format; expected a BEIR folder (with corpus.jsonl), a directory of "
            "files, or a file ending in .jsonl, .ndjson, .jsonl.gz, .csv, .tsv or .parquet "
            "(or pass the format explicitly)"
        )
    return fmt


def read_source(path: Path, fmt: str | None = None, field_map: FieldMap | None = None) -> Iterator[ReadItem]:
    """Yield one ReadItem per source record, in source order (directories: files in sorted order).

    `fmt` overrides detection; for a directory it restricts reading to the files of that format.
    """
    path = Path(path)
    fm = field_map or FieldMap()
    for file, file_fmt, label in _plan(path, fmt):
        yield from _read_file(file, file_fmt, label, fm)


def count_records(path: Path, fmt: str | None = None) -> int | None:
    """Number of records, cheaply (non-blank lines, CSV rows, parquet metadata), for progress bars.

    None when it cannot be known (undetectable format, unreadable file); reading will report the details.
    """
    try:
        plan = _plan(Path(path), fmt)
        return sum(_count_file(file, file_fmt) for file, file_fmt, _ in plan)
    except (ValueError, OSError, EOFError, csv.Error):
        return None


def record_to_document(record: dict[str, Any], field_map: FieldMap | None = None) -> Document:
    """Map one raw record onto a Document; raises RecordError with a one-line reason."""
    fm = field_map or FieldMap()
    rec = {k: v for k, v in record.items() if not _absent(v)}
    consumed: set[str] = set()

    def pick(candidates: list[str]) -> Any:
        for key in candidates:
            if key in rec:
                consumed.add(key)
                return rec[key]
        return None

    doc_id = pick(fm.id)
    if doc_id is None:
        raise RecordError(f"missing id (looked for {', '.join(repr(k) for k in fm.id) or 'no keys'})")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise RecordError(f"id must be a string or integer, got {type(doc_id).__name__}")
    data: dict[str, Any] = {"id": doc_id}
    for name, candidates in (("title", fm.title), ("body", fm.body)):
        value = pick(candidates)
        if value is not None:
            data[name] = _as_text(value)
    for name, candidates in (
        ("url", fm.url),
        ("published_at", fm.published_at),
        ("updated_at", fm.updated_at),
        ("deleted", fm.deleted),
    ):
        value = pick(candidates)
        if value is not None:
            data[name] = _as_datetime(value) if name.endswith("_at") else value
    fields: dict[str, Any] = {}
    for key in _NESTED_FIELD_KEYS:  # nested containers first, so top-level keys win on conflict
        nested = rec.get(key)
        if key not in consumed and isinstance(nested, dict):
            consumed.add(key)
            fields.update({str(k): v for k, v in nested.items() if not _absent(v)})
    fields.update({k: v for k, v in rec.items() if k not in consumed})
    data["fields"] = fields
    try:
        return Document.model_validate(data)
    except ValidationError as exc:
        raise RecordError(_validation_message(exc)) from None


# --- planning ---------------------------------------------------------------------------------------------


def _plan(path: Path, fmt: str | None) -> list[tuple[Path, str, str]]:
    """(file, format, position label) for every file the source consists of."""
    if fmt is not None and fmt not in FORMATS and fmt != "dir":
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if path.is_dir():
        if fmt == "beir" or (fmt is None and detect_format(path) == "beir"):
            corpus = _beir_corpus(path)
            if corpus is None:
                raise ValueError(f"{path}: not a BEIR folder (no corpus.jsonl)")
            return [(corpus, "jsonl", corpus.name)]
        wanted = None if fmt in (None, "dir") else ("csv" if fmt == "tsv" else fmt)
        files = _source_files(path, wanted)
        if not files:
            raise ValueError(f"{path}: no {wanted or 'jsonl/csv/parquet'} files in directory")
        return [(f, _format_by_extension(f) or "jsonl", f.relative_to(path).as_posix()) for f in files]
    file_fmt = detect_format(path) if fmt in (None, "dir") else fmt
    if file_fmt == "beir":  # a BEIR corpus.jsonl given directly
        file_fmt = "jsonl"
    return [(path, file_fmt, path.name)]


def _format_by_extension(path: Path) -> str | None:
    """Format from the file name; text formats may be gzipped (parquet compresses internally)."""
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    name = name.removesuffix(".gz")
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return None if gzipped and fmt == "parquet" else fmt
    return None


def _is_tsv(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".tsv")


def _source_files(directory: Path, fmt: str | None) -> list[Path]:
    """Readable files under a directory (recursively, hidden ones skipped), in sorted order."""
    found = []
    for file in sorted(directory.rglob("*")):
        rel = file.relative_to(directory).parts
        if any(part.startswith((".", "_")) for part in rel) or not file.is_file():
            continue
        file_fmt = _format_by_extension(file)
        if file_fmt is not None and (fmt is None or file_fmt == fmt):
            found.append(file)
    return found


def _beir_corpus(directory: Path) -> Path | None:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


# --- per-format readers -----------------------------------------------------------------------------------


def _read_file(file: Path, fmt: str, label: str, fm: FieldMap) -> Iterator[ReadItem]:
    if fmt == "jsonl":
        yield from _read_jsonl(file, label, fm)
    elif fmt in ("csv", "tsv"):
        yield from _read_csv(file, label, fm, tab=fmt == "tsv" or _is_tsv(file))
    elif fmt == "parquet":
        yield from _read_parquet(file, label, fm)
    else:
        raise ValueError(f"{file}: cannot read format {fmt!r}")


def _item(position: str, record: dict[str, Any], fm: FieldMap) -> ReadItem:
    try:
        return ReadItem(position, record_to_document(record, fm), None, record)
    except RecordError as exc:
        return ReadItem(position, None, str(exc), record)


def _open_binary(file: Path) -> IO[bytes]:
    if file.name.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.open(file, "rb"))
    return open(file, "rb")


def _read_jsonl(file: Path, label: str, fm: FieldMap) -> Iterator[ReadItem]:
    """Lines are decoded one by one, so a bad byte or bad JSON costs one record, not the file."""
    with _open_binary(file) as fh:
        for lineno, raw_line in enumerate(fh, start=1):
            position = f"{label}:{lineno}"
            if lineno == 1 and raw_line.startswith(b"\xef\xbb\xbf"):
                raw_line = raw_line[3:]
            if not raw_line.strip():
                continue
            try:
                text = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield ReadItem(position, None, f"invalid UTF-8: {exc}", {"line": raw_line.decode("utf-8", "replace")})
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield ReadItem(position, None, f"invalid JSON: {exc}", {"line": text.rstrip("\r\n")})
                continue
            if not isinstance(record, dict):
                error = f"expected a JSON object, got {type(record).__name__}"
                yield ReadItem(position, None, error, {"line": text.rstrip("\r\n")})
                continue
            yield _item(position, record, fm)


def _raise_csv_field_limit() -> None:
    """Bodies easily exceed csv's 128 KiB default field limit."""
    limit = min(sys.maxsize, 2**31 - 1)
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)


def _read_csv(file: Path, label: str, fm: FieldMap, *, tab: bool) -> Iterator[ReadItem]:
    """Rows as dicts keyed by the header; position is the source line where the row ends."""
    _raise_csv_field_limit()
    with _open_binary(file) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.DictReader(text, delimiter="\t" if tab else ",", restkey=_EXTRA)
        rows = iter(reader)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as exc:
                yield ReadItem(f"{label}:{reader.line_num}", None, f"invalid CSV: {exc}", None)
                continue
            position = f"{label}:{reader.line_num}"
            extra = row.pop(_EXTRA, None)
            record = {k: v for k, v in row.items() if v is not None}
            if extra:
                record["_extra"] = extra
                yield ReadItem(position, None, f"row has {len(extra)} more values than the header", record)
                continue
            yield _item(position, record, fm)


def _read_parquet(file: Path, label: str, fm: FieldMap) -> Iterator[ReadItem]:
    """Stream record batches so a large file never has to fit in memory."""
    parquet = _parquet_module().ParquetFile(file)
    row = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for record in batch.to_pylist():
            row += 1
            yield _item(f"{label}:{row}", record, fm)


def _parquet_module() -> Any:
    """pyarrow is imported lazily (it is heavy) and untyped, hence Any."""
    return importlib.import_module("pyarrow.parquet")


# --- counting ---------------------------------------------------------------------------------------------


def _count_file(file: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(_parquet_module().ParquetFile(file).metadata.num_rows)
    if fmt in ("csv", "tsv"):
        _raise_csv_field_limit()
        with _open_binary(file) as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="replace", newline="")
            delimiter = "\t" if fmt == "tsv" or _is_tsv(file) else ","
            return max(0, sum(1 for _ in csv.reader(text, delimiter=delimiter)) - 1)
    with _open_binary(file) as fh:
        return _count_nonblank(fh)


def _count_nonblank(lines: Iterable[bytes]) -> int:
    return sum(1 for line in lines if line.strip())


# --- value helpers ----------------------------------------------------------------------------------------


def _absent(value: Any) -> bool:
    """None and empty strings (CSV's empty cells) mean "not given"."""
    return value is None or (isinstance(value, str) and value == "")


def _as_text(value: Any) -> Any:
    """Numbers become text and a list of paragraphs is joined; anything else is left for validation."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n\n".join(value)
    return value


def _as_datetime(value: Any) -> Any:
    """Parquet date columns come back as `date`; widen them so they validate as datetimes."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line, fit for a dead-letter report."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid document: " + "; ".join(parts)
