"""Source readers: every record yields a Document or an error with its position and raw record."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from indexing.readers import (
    FieldMap,
    ReadItem,
    count_records,
    detect_format,
    read_source,
    record_to_document,
)


def _write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _docs(items: list[ReadItem]) -> dict[str, Any]:
    return {i.doc.id: i.doc for i in items if i.doc is not None}


def test_jsonl_maps_keys_and_keeps_the_rest_in_fields(tmp_path: Path) -> None:
    src = _write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"id": 1, "title": "One", "body": "first", "url": "https://x/1", "lang": "en", "date": "2024-01-02"},
            {"doc_id": "b", "text": "second", "tags": ["a", "b"], "metadata": {"source": "wiki"}},
        ],
    )
    items = list(read_source(src))
    assert [i.position for i in items] == ["docs.jsonl:1", "docs.jsonl:2"]
    assert all(i.error is None for i in items)
    first, second = items[0].doc, items[1].doc
    assert first is not None and second is not None
    assert first.id == "1" and first.title == "One" and first.body == "first" and first.url == "https://x/1"
    assert first.published_at == datetime(2024, 1, 2)
    assert first.fields == {"lang": "en"}
    assert second.id == "b" and second.body == "second" and second.title == ""
    assert second.fields == {"tags": ["a", "b"], "source": "wiki"}
    assert items[1].raw == {"doc_id": "b", "text": "second", "tags": ["a", "b"], "metadata": {"source": "wiki"}}


def test_gzip_jsonl(tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        for i in range(3):
            fh.write(json.dumps({"id": i, "text": f"doc {i}"}) + "\n")
    assert detect_format(src) == "jsonl"
    assert count_records(src) == 3
    items = list(read_source(src))
    assert [i.doc.body for i in items if i.doc] == ["doc 0", "doc 1", "doc 2"]
    assert items[2].position == "docs.jsonl.gz:3"


def test_bad_json_and_missing_id_become_errors_not_losses(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text(
        '{"id": "ok", "body": "fine"}\n'
        "\n"
        '{"id": "broken", "body": \n'
        '{"title": "no id here"}\n'
        "[1, 2]\n"
        '{"id": "x", "title": {"not": "a string"}}\n',
        encoding="utf-8",
    )
    items = list(read_source(src))
    assert len(items) == 5  # the blank line is not a record
    ok, bad_json, no_id, not_object, invalid = items
    assert ok.doc is not None and ok.error is None
    assert bad_json.position == "c.jsonl:3" and bad_json.doc is None
    assert bad_json.error is not None and "invalid JSON" in bad_json.error
    assert bad_json.raw == {"line": '{"id": "broken", "body": '}
    assert no_id.position == "c.jsonl:4" and no_id.doc is None
    assert no_id.error is not None and "missing id" in no_id.error
    assert no_id.raw == {"title": "no id here"}
    assert not_object.error is not None and "JSON object" in not_object.error
    assert invalid.error is not None and "title" in invalid.error and "\n" not in invalid.error
    assert count_records(src) == 5


def test_invalid_utf8_costs_one_record(tmp_path: Path) -> None:
    src = tmp_path / "u.jsonl"
    src.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n{"id": "c"}\n')
    items = list(read_source(src))
    assert [i.doc.id if i.doc else None for i in items] == ["a", None, "c"]
    assert items[1].error is not None and "UTF-8" in items[1].error


def test_deleted_record_with_only_an_id(tmp_path: Path) -> None:
    src = _write_jsonl(tmp_path / "d.jsonl", [{"id": "gone", "deleted": True}])
    (item,) = read_source(src)
    assert item.doc is not None
    assert item.doc.deleted is True and item.doc.title == "" and item.doc.body == ""
    assert item.doc.fields == {}


def test_csv_and_tsv(tmp_path: Path) -> None:
    csv_src = tmp_path / "a.csv"
    csv_src.write_text(
        'id,title,body,category,deleted\n1,First,"multi\nline body",news,\n2,,only body,,\n3,,,,true\n',
        encoding="utf-8",
    )
    assert detect_format(csv_src) == "csv"
    assert count_records(csv_src) == 3
    items = list(read_source(csv_src))
    assert [i.error for i in items] == [None, None, None]
    docs = _docs(items)
    assert docs["1"].body == "multi\nline body" and docs["1"].fields == {"category": "news"}
    assert docs["2"].title == "" and docs["2"].fields == {}  # empty cells are absent
    assert docs["3"].deleted is True
    assert items[0].position == "a.csv:3"  # the source line where the (two-line) row ends

    tsv_src = tmp_path / "b.tsv"
    tsv_src.write_text("doc_id\ttext\nx\thello, world\n", encoding="utf-8")
    assert detect_format(tsv_src) == "csv"
    (item,) = read_source(tsv_src)
    assert item.doc is not None and item.doc.id == "x" and item.doc.body == "hello, world"


def test_csv_row_with_too_many_values_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text("id,body\n1,ok\n2,too,many\n", encoding="utf-8")
    ok, bad = read_source(src)
    assert ok.doc is not None
    assert bad.doc is None and bad.error is not None and "more values" in bad.error
    assert bad.position == "a.csv:3" and bad.raw is not None and bad.raw["id"] == "2"


def test_parquet_in_batches(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 2500  # more than one record batch
    table = pa.table(
        {
            "id": list(range(n)),
            "title": [f"t{i}" for i in range(n)],
            "text": [None if i == 5 else f"body {i}" for i in range(n)],
            "published_at": [date(2024, 1, 1)] * n,
            "score": [i / 2 for i in range(n)],
        }
    )
    src = tmp_path / "p.parquet"
    pq.write_table(table, src, row_group_size=1000)
    assert detect_format(src) == "parquet"
    assert count_records(src) == n
    items = list(read_source(src))
    assert len(items) == n and all(i.error is None for i in items)
    assert items[0].position == "p.parquet:1" and items[-1].position == f"p.parquet:{n}"
    doc = items[7].doc
    assert doc is not None
    assert doc.id == "7" and doc.body == "body 7" and doc.fields == {"score": 3.5}
    assert doc.published_at == datetime(2024, 1, 1)
    assert items[5].doc is not None and items[5].doc.body == ""


def test_directory_of_files_in_sorted_order(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    _write_jsonl(data / "b.jsonl", [{"id": "b1"}, {"id": "b2"}])
    (data / "a.csv").write_text("id,body\na1,x\n", encoding="utf-8")
    pq.write_table(pa.table({"id": ["s1"]}), data / "sub" / "c.parquet")
    (data / "README.md").write_text("not a source", encoding="utf-8")
    (data / "_SUCCESS").write_text("", encoding="utf-8")
    assert detect_format(data) == "dir"
    assert count_records(data) == 4
    items = list(read_source(data))
    assert [i.doc.id for i in items if i.doc] == ["a1", "b1", "b2", "s1"]
    assert [i.position for i in items] == ["a.csv:2", "b.jsonl:1", "b.jsonl:2", "sub/c.parquet:1"]
    only_jsonl = list(read_source(data, fmt="jsonl"))
    assert [i.doc.id for i in only_jsonl if i.doc] == ["b1", "b2"]


def test_beir_folder(tmp_path: Path) -> None:
    beir = tmp_path / "scifact"
    beir.mkdir()
    _write_jsonl(
        beir / "corpus.jsonl",
        [
            {"_id": "4983", "title": "Microstructural development", "text": "Alterations of the architecture",
             "metadata": {"year": 2004, "url": "https://doi.org/x"}},
            {"_id": "5836", "title": "", "text": "Another abstract", "metadata": {}},
        ],
    )  # fmt: skip
    _write_jsonl(beir / "queries.jsonl", [{"_id": "q1", "text": "a query"}])
    (beir / "qrels").mkdir()
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4983\t1\n", encoding="utf-8")
    assert detect_format(beir) == "beir"
    assert count_records(beir) == 2
    items = list(read_source(beir))
    assert [i.position for i in items] == ["corpus.jsonl:1", "corpus.jsonl:2"]
    docs = _docs(items)
    assert docs["4983"].title == "Microstructural development"
    assert docs["4983"].body == "Alterations of the architecture"
    assert docs["4983"].fields == {"year": 2004, "url": "https://doi.org/x"}
    assert docs["5836"].fields == {}


def test_custom_field_map(tmp_path: Path) -> None:
    src = _write_jsonl(
        tmp_path / "x.ndjson",
        [{"docno": "d1", "headline": "H", "text": "T", "date": "2020-05-01", "modified": 1700000000}],
    )
    fm = FieldMap(id=["docno"], title=["headline"], published_at=[], updated_at=["modified"])
    (item,) = read_source(src, field_map=fm)
    assert item.doc is not None
    assert item.doc.id == "d1" and item.doc.title == "H" and item.doc.body == "T"
    assert item.doc.published_at is None and item.doc.fields == {"date": "2020-05-01"}
    assert item.doc.updated_at == datetime.fromtimestamp(1700000000, tz=UTC)
    assert FieldMap.model_validate({"id": "docno"}).id == ["docno"]  # a single key is accepted
    with pytest.raises(ValueError):
        FieldMap.model_validate({"bogus": ["x"]})


def test_record_to_document_reasons() -> None:
    with pytest.raises(ValueError, match="missing id"):
        record_to_document({"id": "", "body": "x"})
    with pytest.raises(ValueError, match="id must be"):
        record_to_document({"id": [1], "body": "x"})
    doc = record_to_document({"id": 3, "title": 2024, "body": ["para one", "para two"]})
    assert doc.id == "3" and doc.title == "2024" and doc.body == "para one\n\npara two"


def test_detect_format_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown source format"):
        detect_format(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such file"):
        detect_format(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="directory"):
        detect_format(empty)
    assert count_records(tmp_path / "notes.txt") is None
    # An explicit format reads files whatever their name.
    (tmp_path / "data.txt").write_text('{"id": "t"}\n', encoding="utf-8")
    (item,) = read_source(tmp_path / "data.txt", fmt="jsonl")
    assert item.doc is not None and item.doc.id == "t"
