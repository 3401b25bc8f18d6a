"""The shared file helpers: one SHA-256 of files for every caller (results, sheets, model weights)."""

import hashlib
import io

from mentalglm.files import sha256_file, sha256_files


def test_sha256_of_files_streams_parts_into_a_sink(tmp_path):
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"x" * (3 << 20))  # more than one block
    parts[1].write_bytes(b"tail")
    whole = b"x" * (3 << 20) + b"tail"
    sink = io.BytesIO()
    assert sha256_files(parts, sink=sink) == hashlib.sha256(whole).hexdigest()
    assert sink.getvalue() == whole
    assert sha256_file(parts[1]) == hashlib.sha256(b"tail").hexdigest() == sha256_file(str(parts[1]))
