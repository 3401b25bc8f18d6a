"""Typed view of a task declaration.

A task is declared once, as YAML under ``tasks/definitions``; everything else in the
project (loaders, instruction builder, parsers, metrics, the analyzer) reads it from here
so that a label name or a template never has to be repeated in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskType(StrEnum):
    SINGLE_LABEL = "single-label"
    MULTI_LABEL = "multi-label"
    BINARY = "binary"
    HIERARCHICAL = "hierarchical-multi-label"


@dataclass(frozen=True)
class Label:
    """One class of a task, with the names a model may use for it."""

    id: str
    zh: str
    en: str
    definition_zh: str = ""
    synonyms: tuple[str, ...] = ()
    # Binary tasks mark the class whose F1 is the official score (e.g. high suicide risk).
    positive: bool = False

    @property
    def surface_forms(self) -> tuple[str, ...]:
        """Every string that names this label, longest first so that parsers prefer specific matches."""
        forms = {self.zh, self.en, self.id, *self.synonyms}
        return tuple(sorted((f for f in forms if f), key=len, reverse=True))


@dataclass(frozen=True)
class Split:
    """A canonical split: which dataset loader and which of its parts feed it."""

    name: str
    dataset: str
    part: str
    note: str = ""


@dataclass(frozen=True)
class Task:
    id: str
    name_zh: str
    name_en: str
    language: str
    type: TaskType
    source: str
    description_zh: str
    labels: tuple[Label, ...]
    instruction: str
    question: str
    official_metric: str
    report_metrics: tuple[str, ...]
    splits: tuple[Split, ...]
    version: int = 1
    evaluation_only: bool = False
    # Extra training sources (dataset loader, part) that must be decontaminated against evaluation splits.
    extra_train: tuple[Split, ...] = ()
    citation: str = ""
    published: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # IMHI-style English tasks keep their own answer layout ("<label sentence>. Reasoning: ...").
    answer_layout: str = "c-imhi"
    parent_labels: tuple[str, ...] = ()

    @property
    def label_ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.labels)

    @property
    def is_multi_label(self) -> bool:
        return self.type in (TaskType.MULTI_LABEL, TaskType.HIERARCHICAL)

    def label(self, label_id: str) -> Label:
        for label in self.labels:
            if label.id == label_id:
                return label
        raise KeyError(f"task {self.id!r} has no label {label_id!r}; labels: {', '.join(self.label_ids)}")

    def label_by_any_name(self, name: str) -> Label | None:
        """The label whose id, Chinese, English name or synonym equals ``name`` (case-insensitive)."""
        key = name.strip().lower()
        for label in self.labels:
            if key in (form.lower() for form in label.surface_forms):
                return label
        return None

    @property
    def positive_label(self) -> Label | None:
        return next((label for label in self.labels if label.positive), None)

    def split(self, name: str) -> Split:
        for split in self.splits:
            if split.name == name:
                return split
        raise KeyError(f"task {self.id!r} has no split {name!r}; splits: {', '.join(s.name for s in self.splits)}")
