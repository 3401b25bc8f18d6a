"""Run a *system* over the posts of a task split and leave one JSONL row per post, resumably.

A system is anything that turns posts into labels: an LLM behind a `Backend` (zero-shot, few-shot,
or a tuned MentalGLM) or a classifier (TF-IDF, an encoder). All of them write the same row, so
`mentalglm evaluate` and the report never need to know which kind produced a file, and a run can
be re-scored without running the model again (lm-evaluation-harness's ``--log_samples``).

Rows are appended and flushed one by one: a killed run keeps what it finished, and a rerun with the
same output file skips the ids already there (a line cut by the kill is dropped and redone).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import resource
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from mentalglm.backends.base import Backend, GenerationRequest, GenerationSettings, Message
from mentalglm.data.instructions import make_instruction
from mentalglm.data.records import Post
from mentalglm.data.sampling import posts_sha256
from mentalglm.errors import ConfigError, MentalGLMError
from mentalglm.evaluate.results import jsonable, package_version
from mentalglm.files import JsonlAppender, read_jsonl_lines, sha256_json
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks.layout import LABEL_PREFIX, LABEL_SEPARATOR, REASON_PREFIX
from mentalglm.tasks.parsing import Parsed, parse_all_modes
from mentalglm.tasks.schema import Task

ROW_KEYS = ("id", "task", "split", "prompt", "raw_output", "gold", "pred_strict", "pred_flexible",
            "valid_strict", "valid_flexible", "explanation", "latency_s", "system")

# Few-shot examples longer than this are skipped: K long posts would crowd the post under test out of the context.
MAX_SHOT_CHARS = 300


class PredictionFileError(MentalGLMError):
    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path, self.line = Path(path), line
        super().__init__(f"{path}:{line}: {reason}")


def make_row(task: Task, split: str, post: Post, *, system: str, prompt: Any, raw_output: str,
             answers: dict[str, Parsed], latency_s: float, error: str | None = None) -> dict[str, Any]:
    """The one prediction row every system writes (``error`` only when the backend failed)."""
    strict, flexible = answers["strict"], answers["flexible"]
    row = {
        "id": post.id, "task": task.id, "split": split, "prompt": prompt, "raw_output": raw_output,
        "gold": list(post.labels),
        "pred_strict": list(strict.labels), "pred_flexible": list(flexible.labels),
        "valid_strict": strict.valid, "valid_flexible": flexible.valid,
        "explanation": flexible.explanation or strict.explanation, "latency_s": latency_s, "system": system,
    }
    if error:
        row["error"] = error
    return row


class System(Protocol):
    """Anything that predicts labels for posts and can say how it is configured."""

    name: str

    def describe(self) -> dict[str, Any]: ...

    def predict(self, task: Task, split: str, posts: Sequence[Post]) -> Iterator[dict[str, Any]]: ...


def _batches(posts: Sequence[Post], size: int) -> Iterator[Sequence[Post]]:
    for start in range(0, len(posts), max(1, size)):
        yield posts[start : start + max(1, size)]


@dataclass
class ClassifierSystem:
    """A label predictor (TF-IDF, an encoder): its answers are valid by construction and carry no text."""

    name: str
    classify: Callable[[list[str]], Sequence[Sequence[str]]]
    config: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256

    def describe(self) -> dict[str, Any]:
        return {"kind": "classifier", "name": self.name, **self.config}

    def predict(self, task: Task, split: str, posts: Sequence[Post]) -> Iterator[dict[str, Any]]:
        for batch in _batches(posts, self.batch_size):
            start = time.perf_counter()
            predicted = self.classify([p.text for p in batch])
            each = (time.perf_counter() - start) / len(batch)
            for post, labels in zip(batch, predicted, strict=True):
                answers = {mode: Parsed(tuple(labels), True, mode) for mode in ("strict", "flexible")}
                yield make_row(task, split, post, system=self.name, prompt="", raw_output="", answers=answers,
                               latency_s=each)


def format_hint(task: Task) -> str:
    """The answer layout spelled out, for models that were not tuned on C-IMHI (the tuned model needs none)."""
    choice = f"可多选，用“{LABEL_SEPARATOR}”分隔" if task.is_multi_label else "只选一个"
    names = LABEL_SEPARATOR.join(label.zh for label in task.labels)
    return (f"请严格按以下格式回答：第一行以“{LABEL_PREFIX}”开头写出标签（{choice}，可选：{names}），"
            f"第二行以“{REASON_PREFIX}”开头写出理由。")


def llm_system_name(spec: str, few_shot: int) -> str:
    return f"{spec} {few_shot}-shot" if few_shot else f"{spec} zero-shot"


def slug(text: str) -> str:
    """A file-name-safe form of a system name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "system"


@dataclass
class LLMSystem:
    """An LLM prompted with the C-IMHI turns a tuned MentalGLM sees; few-shot examples are earlier chat turns."""

    backend: Backend
    spec: str
    shots: Sequence[Post] = ()
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))
    with_format_hint: bool = False
    batch_size: int = 1
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or llm_system_name(self.spec, len(self.shots))

    def messages(self, task: Task, post: Post) -> list[Message]:
        target = make_instruction(task, post).messages[:-1]  # system + user, without the gold answer
        if self.with_format_hint and task.answer_layout == "c-imhi":
            target[-1] = {"role": "user", "content": target[-1]["content"] + "\n" + format_hint(task)}
        examples = [m for shot in self.shots
                    for m in make_instruction(task, shot, shot.meta.get("explanation")).messages[1:]]
        return [*target[:-1], *examples, target[-1]]

    def describe(self) -> dict[str, Any]:
        return {"kind": "llm", "backend": self.spec, "model_id": self.backend.model_id,
                "few_shot": len(self.shots), "shot_ids": [p.id for p in self.shots],
                "settings": asdict(self.settings), "format_hint": self.with_format_hint}

    def predict(self, task: Task, split: str, posts: Sequence[Post]) -> Iterator[dict[str, Any]]:
        """Rows in post order; requests stream through the backend, so a server keeps its `concurrency` busy."""
        asked: deque[tuple[Post, GenerationRequest]] = deque()

        def requests() -> Iterator[GenerationRequest]:
            for post in posts:
                asked.append((post, GenerationRequest(self.messages(task, post), self.settings)))
                yield asked[-1][1]

        for result in self.backend.generate_iter(requests(), batch_size=self.batch_size):
            post, request = asked.popleft()
            yield make_row(task, split, post, system=self.name, prompt=request.messages, raw_output=result.text,
                           answers=parse_all_modes(task, result.text), latency_s=result.latency_s,
                           error=result.error)


def pick_shots(pool: Sequence[Post], k: int, seed: int = DEFAULT_SEED,
               max_chars: int = MAX_SHOT_CHARS) -> list[Post]:
    """``k`` short training posts, taken round-robin over labels so that K >= #labels shows every label."""
    if k <= 0:
        return []
    rng = random.Random(seed)
    groups: dict[str, list[Post]] = defaultdict(list)
    for post in pool:
        if post.labels and len(post.text) <= max_chars:
            groups[post.labels[0]].append(post)
    keys = sorted(groups)
    rng.shuffle(keys)
    for key in keys:
        rng.shuffle(groups[key])
    picked: list[Post] = []
    while len(picked) < k and any(groups.values()):
        picked.extend(groups[key].pop() for key in keys if groups[key] and len(picked) < k)
    rng.shuffle(picked)
    return picked


# --- provenance ------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@cache
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "platform": platform.platform(),
            "python": platform.python_version(), "threads_env": os.environ.get("MENTALGLM_THREADS")}


def timed_passes(texts: Sequence[str], posts: int, runs: int, read: Callable[[list[str]], object]) -> list[float]:
    """Seconds of ``runs`` passes of ``read`` over ``posts`` posts each, no post read by an earlier pass (readers
    remember what they read last: a repeated pass would time the memory); too few posts is an error."""
    if len(texts) < posts * runs:
        raise ValueError(f"{runs} passes of {posts} distinct posts need {posts * runs}, there are {len(texts)}")
    timings = []
    for run in range(runs):
        chunk = list(texts[run * posts:(run + 1) * posts])
        started = time.perf_counter()
        read(chunk)
        timings.append(time.perf_counter() - started)
    return timings


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def meta_path(predictions: Path) -> Path:
    """``preds.jsonl`` -> ``preds.meta.json``: how the rows were produced, read by ``evaluate``."""
    return predictions.with_name(predictions.stem + ".meta.json")


def read_meta(predictions: Path) -> dict[str, Any]:
    path = meta_path(predictions)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --- the rows file ---------------------------------------------------------------------------------


def read_rows(path: Path, *, repair_tail: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) for each non-blank line; an unreadable line is an error that names it.

    With ``repair_tail`` a last line without its newline (a run killed mid-write) is cut off the file
    instead, so that resuming redoes that one post.
    """
    rows = []
    for line in read_jsonl_lines(path, repair_tail=repair_tail):
        if line.blank:
            continue
        if line.error is not None:
            reason = line.error.msg if isinstance(line.error, json.JSONDecodeError) else line.problem
            raise PredictionFileError(path, line.number, f"not a JSON line ({reason}): the file is truncated or "
                                      "was edited; delete or fix that line")
        if not isinstance(line.value, dict):
            raise PredictionFileError(path, line.number,
                                      f"a row must be a JSON object, not {type(line.value).__name__}")
        rows.append((line.number, line.value))
    return rows


@dataclass
class PredictRun:
    path: Path
    written: int
    skipped: int
    seconds: float
    meta: dict[str, Any]


def _completed_ids(out: Path, task: Task, split: str, system: System, config_sha: str) -> set[str]:
    if not out.exists():
        return set()
    previous = read_meta(out).get("config_sha256")
    if previous and previous != config_sha:
        raise ConfigError(f"{out} was written by {system.name!r} with another configuration "
                          f"(config_sha256 {previous[:12]}…); pass another --out or delete the file to start over")
    done = set()
    for number, row in read_rows(out, repair_tail=True):
        found = (row.get("system"), row.get("task"), row.get("split"))
        if found != (system.name, task.id, split):
            raise PredictionFileError(out, number, f"holds a row of system/task/split {found}, not "
                                      f"{(system.name, task.id, split)}; pass another --out")
        done.add(str(row.get("id")))
    return done


def run_predictions(task: Task, split: str, posts: Sequence[Post], system: System, out: Path, *,
                    progress: bool = True, extra_meta: dict[str, Any] | None = None) -> PredictRun:
    """Predict every post not yet in ``out``, appending rows; then write the ``.meta.json`` beside it."""
    from tqdm import tqdm

    config = system.describe()
    config_sha = sha256_json(jsonable(config))
    done = _completed_ids(out, task, split, system, config_sha)
    todo = [p for p in posts if p.id not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    started, written = time.perf_counter(), 0
    with JsonlAppender(out, sync_each=False) as appender, tqdm(
        total=len(posts), initial=len(posts) - len(todo), desc=f"{task.id} · {system.name}", unit="post",
        disable=not progress,
    ) as bar:
        for row in system.predict(task, split, todo):
            appender.write([json.dumps(jsonable(row), ensure_ascii=False, allow_nan=False)])
            written += 1
            bar.update()
    seconds = time.perf_counter() - started
    meta = {
        "system": system.name, "config": config, "config_sha256": config_sha,
        "task": task.id, "task_version": task.version, "split": split,
        "n_posts": len(posts), "data_sha256": posts_sha256(posts), **(extra_meta or {}),
        "written": written, "resumed_rows": len(posts) - len(todo), "seconds": round(seconds, 3),
        "posts_per_s": round(written / seconds, 4) if written and seconds > 0 else None,
        "peak_rss_mb": peak_rss_mb(), "machine": machine_info(), "date": now_iso(),
        "mentalglm_version": package_version(),
    }
    meta_path(out).write_text(json.dumps(jsonable(meta), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return PredictRun(out, written, len(posts) - len(todo), seconds, meta)
