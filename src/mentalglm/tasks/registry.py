"""Load task declarations from YAML once and look them up by id (with did-you-mean errors)."""

from __future__ import annotations

import difflib
import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mentalglm.tasks.parsing import check_parsing
from mentalglm.tasks.schema import NOTICE_KINDS, SCREEN_ENCODERS, Label, Screen, Split, Task, TaskType

_DEFINITIONS = "definitions"
_KNOWN_KEYS = {
    "screen", "notices", "frozen_encoders",
    "id", "name_zh", "name_en", "language", "type", "source", "description_zh", "labels", "instruction",
    "question", "official_metric", "report_metrics", "splits", "version", "evaluation_only", "extra_train",
    "citation", "published", "answer_layout", "parsing", "parent_labels", "include",
}


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable.
        return str(self.args[0])


def _definition_dir() -> Path:
    return Path(str(resources.files("mentalglm.tasks") / _DEFINITIONS))


def _read(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a task declaration must be a YAML mapping")
    base_name = raw.pop("include", None)
    if base_name:  # shared parts, as lm-evaluation-harness does with `include:`
        base = _read(path.parent / base_name)
        base.update(raw)
        raw = base
    return raw


def task_from_mapping(raw: dict[str, Any], origin: str = "<mapping>") -> Task:
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"{origin}: unknown task keys {sorted(unknown)}; known keys: {sorted(_KNOWN_KEYS)}")
    labels = tuple(
        Label(
            id=str(item["id"]),
            zh=item["zh"],
            en=item["en"],
            definition_zh=item.get("definition_zh", "").strip(),
            synonyms=tuple(item.get("synonyms", ())),
            positive=bool(item.get("positive", False)),
            claims_zh=tuple(item.get("claims_zh", ())),
            argued_by_denying_zh=tuple(item.get("argued_by_denying_zh", ())),
            contradicted_by_denying_zh=tuple(item.get("contradicted_by_denying_zh", ())),
            cues_zh=_patterns(origin, str(item["id"]), item.get("cues_zh", ())),
            example_zh=item.get("example_zh", "").strip(),
        )
        for item in raw["labels"]
    )
    ids = [label.id for label in labels]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{origin}: duplicated label ids in {ids}")
    return Task(
        id=raw["id"],
        name_zh=raw["name_zh"],
        name_en=raw["name_en"],
        language=raw["language"],
        type=TaskType(raw["type"]),
        source=raw["source"],
        description_zh=raw.get("description_zh", "").strip(),
        labels=labels,
        instruction=raw["instruction"].strip(),
        question=raw["question"].strip(),
        official_metric=raw["official_metric"],
        report_metrics=tuple(raw.get("report_metrics", ())),
        splits=tuple(Split(**s) for s in raw.get("splits", ())),
        version=int(raw.get("version", 1)),
        evaluation_only=bool(raw.get("evaluation_only", False)),
        extra_train=tuple(Split(**s) for s in raw.get("extra_train", ())),
        citation=raw.get("citation", "").strip(),
        published=tuple(raw.get("published", ())),
        answer_layout=raw.get("answer_layout", "c-imhi"),
        parsing=_parsing(raw.get("parsing"), origin),
        parent_labels=tuple(raw.get("parent_labels", ())),
        screen=_screen(raw.get("screen"), ids, origin),
        notices=_notices(raw.get("notices"), ids, origin),
        frozen_encoders=_encoders(raw.get("frozen_encoders", ()), f"{origin}: frozen_encoders"),
    )


def _patterns(origin: str, label: str, raw: Any) -> tuple[str, ...]:
    """A label's ``cues_zh``: a list of regular expressions, each checked here so a typo fails at load, not in QC."""
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) and p for p in raw):
        raise ValueError(f"{origin}: label {label!r}: cues_zh must be a list of non-empty strings")
    for pattern in raw:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{origin}: label {label!r}: cues_zh pattern {pattern!r} is not a regular expression: "
                             f"{exc}") from None
    return tuple(raw)


def _encoders(raw: Any, where: str) -> tuple[str, ...]:
    encoders = tuple(str(e) for e in raw)
    unknown = set(encoders) - set(SCREEN_ENCODERS)
    if unknown:
        raise ValueError(f"{where} names {sorted(unknown)}; known: {', '.join(SCREEN_ENCODERS)}")
    return encoders


def _screen(raw: dict[str, Any] | None, ids: list[str], origin: str) -> Screen | None:
    if raw is None:
        return None
    screen = Screen(none_zh=raw["none_zh"], none_en=raw["none_en"],
                    train=tuple(Split(**s) for s in raw["train"]),
                    validation=tuple(Split(**s) for s in raw.get("validation", ())),
                    test=tuple(Split(**s) for s in raw.get("test", ())),
                    none_label=raw.get("none_label"),
                    max_negative_flagged=float(raw.get("max_negative_flagged", 0.01)),
                    also_flag=raw.get("also_flag"),
                    encoders=_encoders(raw.get("encoders", ("e5",)), f"{origin}: screen.encoders"))
    for field_name in ("none_label", "also_flag"):
        value = getattr(screen, field_name)
        if value is not None and value not in ids:
            raise ValueError(f"{origin}: screen.{field_name} {value!r} is not a label id ({', '.join(ids)})")
    return screen


def _parsing(raw: dict[str, Any] | None, origin: str) -> dict[str, tuple[str, ...]]:
    parsing = {str(mode): tuple(str(step) for step in steps) for mode, steps in (raw or {}).items()}
    check_parsing(parsing, origin)
    return parsing


def _notices(raw: dict[str, Any] | None, ids: list[str], origin: str) -> dict[str, tuple[str, ...]]:
    out = {str(kind): tuple(str(label) for label in labels) for kind, labels in (raw or {}).items()}
    for kind, labels in out.items():
        if kind not in NOTICE_KINDS:
            raise ValueError(f"{origin}: unknown notice kind {kind!r}; kinds: {', '.join(NOTICE_KINDS)}")
        unknown = set(labels) - set(ids)
        if unknown:
            raise ValueError(f"{origin}: notices.{kind} names {sorted(unknown)}, not label ids ({', '.join(ids)})")
    return out


@cache
def all_tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for path in sorted(_definition_dir().glob("*.yaml")):
        if path.name.startswith("_"):
            continue  # shared fragments, only used through `include:`
        task = task_from_mapping(_read(path), origin=str(path))
        if task.id in tasks:
            raise ValueError(f"{path}: task id {task.id!r} is declared twice")
        tasks[task.id] = task
    return tasks


def get_task(task_id: str) -> Task:
    tasks = all_tasks()
    if task_id in tasks:
        return tasks[task_id]
    close = difflib.get_close_matches(task_id, list(tasks), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownTaskError(f"unknown task {task_id!r}.{hint} Known tasks: {', '.join(sorted(tasks))}")


def list_tasks(language: str | None = None) -> list[Task]:
    return [t for t in all_tasks().values() if language is None or t.language == language]


CHINESE_MAIN_TASKS = ("emotion", "cognitive_distortion", "suicide_risk")
