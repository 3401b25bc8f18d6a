"""The shared file helpers: one SHA-256 of files for every caller (results, sheets, model weights), one JSONL reader."""

import hashlib
import io

import pytest

from mentalglm.files import JsonlAppender, read_jsonl, read_jsonl_lines, sha256_file, sha256_files


def test_sha256_of_files_streams_parts_into_a_sink(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"x" * (3 << 20))  # more than one block
    parts[1].write_bytes(b"tail")
    whole = b"x" * (3 << 20) + b"tail"
    sink = io.BytesIO()
    assert sha256_files(parts, sink=sink) == hashlib.sha256(whole).hexdigest()
    assert sink.getvalue() == whole
    assert sha256_file(parts[1]) == hashlib.sha256(b"tail").hexdigest() == sha256_file(str(parts[1]))


def test_jsonl_lines_number_decode_and_say_why_a_line_has_no_value(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n{"b": \n\xff{}\n[2]')
    lines = list(read_jsonl_lines(path))
    assert [(line.number, line.offset) for line in lines] == [(1, 0), (2, 13), (3, 14), (4, 21), (5, 25)]
    assert lines[0].value == {"a": 1} and lines[0].complete and not lines[-1].complete
    assert lines[1].blank and "Expecting value" in lines[1].problem
    assert lines[2].problem == "not JSON (Expecting value)" and lines[2].error.colno == 7
    assert lines[3].problem == "not valid UTF-8 (byte 0 of the line)"
    assert lines[4].value == [2]
    resumed = list(read_jsonl_lines(path, offset=lines[4].offset, number=5))
    assert [(line.number, line.value) for line in resumed] == [(5, [2])]


def test_read_jsonl_skips_blanks_raises_with_the_line_and_repairs_a_torn_tail(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3', encoding="utf-8")
    with pytest.raises(KeyError, match=r"rows\.jsonl:4: not JSON"):
        list(read_jsonl(path, KeyError))
    assert list(read_jsonl(path, repair_tail=True)) == [(1, {"a": 1}), (3, {"a": 2})]
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n\n{"a": 2}\n'


def test_appender_cuts_a_torn_tail_and_syncs_on_close_when_asked(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": ')
    with JsonlAppender(path, sync_each=False) as out:
        out.write([{"a": 2}, '{"a": 3}'])
    assert [value for _, value in read_jsonl(path)] == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_an_atomic_write_gives_a_new_file_the_umask_mode_and_keeps_an_old_files_mode(tmp_path):
    import os
    import stat

    from mentalglm.files import atomic_write_text

    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "new.json", "{}")
        assert atomic_write_text(tmp_path / "a" / "b.json", "{}").read_text() == "{}"  # a new folder too
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # not the temporary file's 0600
        private = tmp_path / "private.json"
        private.write_text("{}")
        private.chmod(0o600)
        atomic_write_text(private, "[]")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() == "[]"
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "umask.json", "{}").stat().st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "new.json", "private.json", "umask.json"]  # no probe left
    finally:
        os.umask(old)
