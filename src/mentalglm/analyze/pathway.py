"""Cognitive pathways in the analyzer: the post cut into sentences, each read by the pathway classifier.

The classifier (``mentalglm pathway train``, ``train/pathway.py``) was trained on single sentences, so a post is
split at sentence ends first; every sentence keeps its character offsets into the original post, which is what
the CLI, the HTTP API and the web page highlight (results carry offsets, never the text). The result shows each
sentence's parts and the pathway in its clinical order, trigger → distortion → emotional response →
disputation, with the sentences that show each step. No LLM is involved whatever the engine: the task result
says engine ``labels``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.schema import LabelScore, PathwayPart, PathwaySentence, PathwayStage, TaskResult
from mentalglm.data.loaders.cognitive_pathway import MAX_SENTENCE_CHARS
from mentalglm.tasks.pathway import (
    PATHWAY_TASK_ID,
    SEPARATOR,
    child_name,
    parent_of,
    pathway_parents,
    pathway_task,
)
from mentalglm.tasks.schema import Task, TaskType
from mentalglm.train.pathway import PathwayClassifier, load_pathway_model

# Sentence ends of Chinese and Western text (an ASCII period only between non-digits: 3.5 stays whole), with the
# closing quotes and brackets that belong to the sentence they end; a line break always ends a sentence.
_SENTENCE_END = re.compile(r"(?:[。！？!?；;…～~]|(?<!\d)\.(?!\d))+[”’」』）)】\]\"']*|\n+")
_SOFT_BREAKS = "，,、：: "


def is_pathway_task(task: Task) -> bool:
    return task.type is TaskType.HIERARCHICAL and task.id == PATHWAY_TASK_ID


def _has_content(piece: str) -> bool:
    """Letters, digits or symbols (an emoji can carry the feeling); not punctuation and spaces alone."""
    return any(unicodedata.category(ch)[0] not in "PZC" for ch in piece)


def _cut(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """A sentence longer than the classifier's limit, cut after the last comma (else hard) inside the limit."""
    out = []
    while end - start > limit:
        window = text[start:start + limit]
        soft = max(window.rfind(ch) for ch in _SOFT_BREAKS)
        cut = start + soft + 1 if soft > 0 else start + limit
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    out.append((start, end))
    return out


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence in ``text``, spaces trimmed; pieces of punctuation alone are dropped."""
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        bounds.append((start, match.end()))
        start = match.end()
    if start < len(text):
        bounds.append((start, len(text)))
    out = []
    for begin, end in bounds:
        while begin < end and text[begin].isspace():
            begin += 1
        while end > begin and text[end - 1].isspace():
            end -= 1
        if _has_content(text[begin:end]):
            out.extend(_cut(text, begin, end, max_chars))
    return out


@dataclass
class PathwayReader:
    """The pathway classifier as the analyzer uses it: posts in, one TaskResult each."""

    classifier: PathwayClassifier
    card: dict[str, Any]
    max_chars: int = MAX_SENTENCE_CHARS

    @classmethod
    def load(cls, directory: Path) -> PathwayReader:
        return cls(*load_pathway_model(directory))

    @cached_property
    def task(self) -> Task:
        """The task with the model's children as labels: their names for the result."""
        return pathway_task(self.classifier.labels)

    def _part(self, label: str, confidence: float) -> PathwayPart:
        parent = self.task.label(parent_of(label))
        return PathwayPart(id=label, part=parent.id, part_en=parent.en,
                           child=child_name(label) if SEPARATOR in label else None, confidence=round(confidence, 4))

    def analyse(self, texts: Sequence[str], view: Callable[[str], str]) -> list[TaskResult]:
        """``view`` is what the classifiers read of a text (the analyzer's injection guard and normalisation)."""
        spans = [split_sentences(text, self.max_chars) for text in texts]
        pieces = [view(text[start:end]) for text, post in zip(texts, spans, strict=True) for start, end in post]
        readable = [i for i, piece in enumerate(pieces) if _has_content(piece)]  # not text cut out as injection
        proba = np.zeros((len(pieces), len(self.classifier.labels)))
        decided: list[tuple[str, ...]] = [() for _ in pieces]
        if readable:
            proba[readable] = self.classifier.predict_proba([pieces[i] for i in readable])
            for i, labels in zip(readable, self.classifier.decide(proba[readable]), strict=True):
                decided[i] = labels
        rows = iter(zip(decided, proba, strict=True))
        return [self._result([(span, *next(rows)) for span in post]) for post in spans]

    def _result(self, sentences: list[tuple[tuple[int, int], tuple[str, ...], np.ndarray]]) -> TaskResult:
        labels = self.classifier.labels
        shown = [PathwaySentence(index=i, start=start, end=end,
                                 parts=[self._part(label, float(row[labels.index(label)])) for label in chosen])
                 for i, ((start, end), chosen, row) in enumerate(sentences, 1)]
        post_max = np.max([row for _, _, row in sentences], axis=0) if sentences else np.zeros(len(labels))
        found = [label for label in labels if any(label in chosen for _, chosen, _ in sentences)]
        stages = []
        for parent in pathway_parents():
            info = self.task.label(parent)
            with_part = [s.index for s in shown if any(p.part == parent for p in s.parts)]
            stages.append(PathwayStage(
                part=parent, part_zh=info.zh, part_en=info.en, sentences=with_part,
                children=[child_name(label) for label in found if SEPARATOR in label and parent_of(label) == parent],
                confidence=round(float(post_max[labels.index(parent)]), 4) if with_part else None))
        return TaskResult(
            task=self.task.id, task_name_zh=self.task.name_zh, engine="labels",
            labels=[LabelScore(id=label, name_zh=self.task.label(label).zh, name_en=self.task.label(label).en,
                               confidence=round(float(post_max[labels.index(label)]), 4)) for label in found],
            confidences={label: round(float(p), 4) for label, p in zip(labels, post_max, strict=True)},
            sentences=shown, pathway=stages,
            error=None if sentences else "no sentence with words in the post: nothing to read")
