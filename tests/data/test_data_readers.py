"""Readers: line numbers in errors, counted skips, strict UTF-8, literal quotes, checksums."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from mentalglm.data.readers import (
    BadRows,
    RowProblem,
    check_label,
    convert,
    read_delimited,
    read_json_array,
    read_jsonl,
    sha256_file,
    verify_file,
)
from mentalglm.data.registry import LoadReport
from mentalglm.errors import BadRowError, ChecksumMismatchError


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "posts.tsv", "comment\tlabel\n今天天气不错\t0\n我不想说话\t1\t多余\n")
    with pytest.raises(BadRowError) as info:
        list(read_delimited(path, BadRows(LoadReport())))
    assert info.value.line == 3 and info.value.path == path
    assert f"{path}:3:" in str(info.value) and "--skip-bad-rows" in str(info.value)


def test_skipped_rows_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    path = _write(tmp_path / "posts.tsv", "comment\tlabel\n今天天气不错\t0\n我不想说话\t1\t多余\n晚安\t1\n")
    report = LoadReport()
    rows = list(read_delimited(path, BadRows(report, skip=True)))
    assert [r.fields["comment"] for r in rows] == ["今天天气不错", "晚安"]
    assert [r.index for r in rows] == [1, 3]  # ordinals stay stable when a row is skipped
    assert report.skipped_bad_rows == 1 and report.skipped_reasons[0].startswith(f"{path}:3:")


def test_invalid_utf8_is_a_bad_row_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "gbk.tsv", "comment\tlabel\n好的\t0\n".encode() + "我很难过\t1\n".encode("gbk"))
    with pytest.raises(BadRowError, match="not valid UTF-8") as info:
        list(read_delimited(path, BadRows(LoadReport())))
    assert info.value.line == 3


def test_quotes_are_literal_and_crlf_is_stripped(tmp_path: Path) -> None:
    path = _write(tmp_path / "quoted.tsv", 'comment\tlabel\r\n"他说""算了"\t1\r\n半个"引号\t0\r\n')
    rows = list(read_delimited(path, BadRows(LoadReport())))
    assert [r.fields["comment"] for r in rows] == ['"他说""算了"', '半个"引号']
    assert [r.fields["label"] for r in rows] == ["1", "0"]


def test_unexpected_header_is_always_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "other.tsv", "text\tlevel\n你好\t1\n")
    with pytest.raises(BadRowError, match="header"):
        list(read_delimited(path, BadRows(LoadReport(), skip=True), fieldnames=["comment", "label"]))


def test_optional_header_is_recognised_only_when_it_matches(tmp_path: Path) -> None:
    names = ["comment", "myLabel"]
    with_header = _write(tmp_path / "a.tsv", "comment\tmyLabel\n想出去走走\t3\n")
    without = _write(tmp_path / "b.tsv", "想出去走走\t3\n")
    for path in (with_header, without):
        rows = list(read_delimited(path, BadRows(LoadReport()), fieldnames=names, header="optional"))
        assert [r.fields for r in rows] == [{"comment": "想出去走走", "myLabel": "3"}]


def test_csv_quoting_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path / "weibo.csv", 'label,review\n1,"好开心,终于放假了"\n')
    rows = list(read_delimited(path, BadRows(LoadReport()), delimiter=",", quoting=csv.QUOTE_MINIMAL))
    assert rows[0].fields == {"label": "1", "review": "好开心,终于放假了"}


def test_json_array_items_and_errors(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.txt", '[{"id": 1, "content": "好累", "label": "sad"}, {"id": 2, "content": "哈哈", "label": "happy"}]')
    rows = list(read_json_array(good, BadRows(LoadReport())))
    assert [r.fields["id"] for r in rows] == [1, 2] and rows[1].line == 2
    odd = _write(tmp_path / "odd.txt", '[{"id": 1}, "not an object"]')
    with pytest.raises(BadRowError, match="item 2"):
        list(read_json_array(odd, BadRows(LoadReport())))
    broken = _write(tmp_path / "broken.txt", '[{"id": 1},\n{"id": ]')
    with pytest.raises(BadRowError) as info:
        list(read_json_array(broken, BadRows(LoadReport(), skip=True)))
    assert info.value.line == 2


def test_jsonl_bad_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.jsonl", '{"content": "早安"}\n{"content": \n{"content": "晚安"}\n')
    with pytest.raises(BadRowError) as info:
        list(read_jsonl(path, BadRows(LoadReport())))
    assert info.value.line == 2
    report = LoadReport()
    assert len(list(read_jsonl(path, BadRows(report, skip=True)))) == 2 and report.skipped_bad_rows == 1


def test_unknown_label_goes_through_the_bad_row_policy(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.tsv", "comment\tlabel\n好烦\tangry\n好怕\tscared\n")

    def make(row):  # type: ignore[no-untyped-def]
        return check_label(row.fields["label"], ("angry", "fear"))

    with pytest.raises(BadRowError, match="unknown label 'scared'") as info:
        convert(read_delimited(path, BadRows(LoadReport())), make, BadRows(LoadReport()))
    assert info.value.line == 3
    report = LoadReport()
    bad = BadRows(report, skip=True)
    assert convert(read_delimited(path, bad), make, bad) == ["angry"] and report.skipped_bad_rows == 1


def test_row_problem_is_a_value_error() -> None:
    assert issubclass(RowProblem, ValueError)


def test_checksums(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.txt", "一行字\n")
    expected = hashlib.sha256("一行字\n".encode()).hexdigest()
    assert sha256_file(path) == expected
    verify_file(path, expected.upper())
    with pytest.raises(ChecksumMismatchError, match="--no-verify"):
        verify_file(path, "0" * 64)
    _write(path, "改过的一行字\n")  # a changed file must not be served from the hash cache
    with pytest.raises(ChecksumMismatchError):
        verify_file(path, expected)
