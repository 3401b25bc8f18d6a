"""`mentalglm analyze --ray ADDRESS`: the batch runner as a Ray Data pipeline, on this machine or a cluster.

read (Ray tasks: each reads one chunk of one input file with the CLI's readers, from a ``Seek`` the driver's
index pass found, so bad rows become error records exactly as in one process) -> ``map_batches`` with
``AnalyzerActor`` (each actor builds the analyzer once from an ``AnalyzerRecipe`` and checks its fingerprint
against the driver's, so every node analyses with the same classifiers) -> write (the driver takes the result
batches in input order, ``preserve_order``, and appends them to the same ``ResultFile`` partials as the local
runner). So the files, the resume after a kill and the per-post results are those of `analyze` without Ray;
only where the analysis runs differs. Ray is an optional extra (``pip install 'mentalglm[ray]'``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mentalglm.analyze.batch import AnalyzerRecipe, Pending, analyse_rows, fingerprint
from mentalglm.analyze.engine import InputRow
from mentalglm.analyze.io import Seek, read_posts
from mentalglm.analyze.outputs import result_line
from mentalglm.errors import ConfigError, MentalGLMError

CONNECT_TIMEOUT_S = 5.0


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Data ({exc}): pip install 'mentalglm[ray]'") from None
    return ray


def check_reachable(address: str) -> None:
    """Refuse an address nothing listens on within seconds (ray.init would retry for a long while)."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        raise ConfigError(f"--ray {address!r}: expected local, auto, HOST:PORT (the head's GCS port, 6379) or "
                          "ray://HOST:10001")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                          "`ray start --head --port 6379` on the head node, check the address and firewall, or "
                          "run on this machine with `--ray local`") from None


def connect(address: str | None) -> Any:
    """``ray.init`` on a cluster at ``address``, or on this machine with its CPUs when None."""
    ray = _ray()
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress notes would interleave with ours
    if ray.is_initialized():
        return ray
    if address is None:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        return ray
    check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return ray


def read_chunk(chunk: dict[str, Any], *, text_column: str | None, id_column: str | None) -> list[dict[str, Any]]:
    """The rows of one chunk of one file, as the local runner would read them (a Ray read task)."""
    seek = Seek(int(chunk["row"]), int(chunk["byte"]), int(chunk["line"]))
    rows = read_posts(Path(chunk["path"]), text_column, id_column, keep_going=True, start=seek)
    out = []
    for offset, row in zip(range(int(chunk["count"])), rows, strict=False):
        out.append({"file": chunk["file"], "row": seek.row + offset, "id": row.id, "text": row.text,
                    "line": row.line, "error": row.error})
    if len(out) != int(chunk["count"]):
        raise MentalGLMError(f"{chunk['path']}: expected {chunk['count']} rows from row {seek.row}, read {len(out)}; "
                             "the file changed while it was analysed")
    return out


class AnalyzerActor:
    """One analyzer per actor, built once; bad rows and posts the analyzer fails on become error records."""

    def __init__(self, recipe: AnalyzerRecipe, expected: str, batch_size: int) -> None:
        self.analyzer = recipe.build()
        self.batch_size = batch_size
        found = fingerprint(self.analyzer)
        if found != expected:
            raise ConfigError(f"the analyzer on Ray node {socket.gethostname()} differs from the driver's (fingerprint "
                              f"{found}, driver {expected}): give every node the same --artifacts-dir and package")

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        records = batch.to_pylist()
        rows = [InputRow(r["id"], r["text"], r["line"], r["error"]) for r in records]
        results = analyse_rows(self.analyzer, rows, keep_going=True, batch_size=self.batch_size)
        return pa.table({"file": [r["file"] for r in records], "row": [r["row"] for r in records],
                         "result": [result_line(r) for r in results]})


def chunks_of(pending: Sequence[Pending]) -> list[dict[str, Any]]:
    """Read tasks: each file's remaining rows cut at the Seeks its index pass found."""
    chunks = []
    for number, entry in enumerate(pending):
        ends = [seek.row for seek in entry.seeks[1:]] + [entry.total]
        for seek, end in zip(entry.seeks, ends, strict=True):
            chunks.append({"file": number, "path": str(entry.task.source), "row": seek.row, "byte": seek.byte,
                           "line": seek.line, "count": end - seek.row})
    return chunks


def run_on_ray(pending: Sequence[Pending], recipe: AnalyzerRecipe, expected: str, *, address: str | None,
               actors: int | None, batch_size: int, text_column: str | None, id_column: str | None,
               on_progress: Callable[[int], None] = lambda n: None) -> tuple[int, float, float]:
    """Run the pending files on Ray; (rows written, seconds in all, seconds before the first results).

    The driver writes every result, in input order, so a kill of the driver (or of the whole cluster) leaves the
    same partials as a kill of the local runner, and the same command resumes them (with or without Ray).
    """
    started = time.perf_counter()
    chunks = chunks_of(pending)
    if not chunks:  # nothing left to analyse (empty inputs): no cluster to start
        for entry in pending:
            entry.out.finish()
            entry.out.close()
        return 0, 0.0, 0.0
    ray = connect(address)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results come back in input order
        context.enable_progress_bars = False
        written, first = 0, None
        pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        dataset = (ray.data.from_items(chunks, override_num_blocks=len(chunks))
                   # Reads take no CPU slot: the actors hold every slot, and reads that waited for one
                   # would never run (reading is a small share of the work).
                   .flat_map(read_chunk, fn_kwargs={"text_column": text_column, "id_column": id_column},
                             num_cpus=0)
                   .map_batches(AnalyzerActor, fn_constructor_kwargs={"recipe": recipe, "expected": expected,
                                                                      "batch_size": batch_size},
                                batch_size=batch_size, batch_format="pyarrow", concurrency=pool, num_cpus=1))
        for files, rows, lines in _batches(dataset.iter_batches(batch_size=None, batch_format="pyarrow")):
            first = first if first is not None else time.perf_counter() - started
            written += _write(pending, files, rows, lines)
            on_progress(len(lines))
        for entry in pending:
            if entry.out.done != entry.total:
                raise MentalGLMError(f"{entry.task.source}: {entry.out.done} of {entry.total} rows came back from Ray")
            if not entry.out.complete:
                entry.out.finish()
        return written, round(time.perf_counter() - started, 3), round(first or 0.0, 3)
    finally:
        for entry in pending:
            entry.out.close()
        ray.shutdown()  # stops a Ray started here; on a cluster, only disconnects this driver


def _batches(batches: Any) -> Iterator[tuple[list[int], list[int], list[str]]]:
    for table in batches:
        yield table.column("file").to_pylist(), table.column("row").to_pylist(), table.column("result").to_pylist()


def _write(pending: Sequence[Pending], files: list[int], rows: list[int], lines: list[str]) -> int:
    """Append a batch of results, file by file; a file is made final as soon as its last row is in."""
    start = 0
    while start < len(lines):
        number = files[start]
        end = start
        while end < len(lines) and files[end] == number:
            end += 1
        entry = pending[number]
        if rows[start] != entry.out.done:  # preserve_order makes this impossible; never write out of order
            raise MentalGLMError(f"{entry.task.source}: row {rows[start]} came back while row {entry.out.done} "
                                 "was expected")
        entry.out.append(lines[start:end])
        if entry.out.done == entry.total:
            entry.out.finish()
        start = end
    return len(lines)
