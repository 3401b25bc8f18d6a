"""Typed view of a task declaration.

A task is declared once, as YAML under ``tasks/definitions``; everything else in the
project (loaders, instruction builder, parsers, metrics, the analyzer) reads it from here
so that a label name or a template never has to be repeated in code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# crisis: the crisis panel (emergency numbers); support: a gentler notice with the hotline
NOTICE_KINDS = ("crisis", "support")


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
    # Phrases that, asserted without negation, argue for this label in an explanation ("自杀意图" for high risk): QC
    # rejects an explanation of another label that asserts them (instruct/qc.py). Never used to read answers.
    claims_zh: tuple[str, ...] = ()
    # Phrases whose denial argues for this label ("没有明确表达自杀意图" argues low risk, "没有明显的情绪倾向" neutral):
    # how QC reads an explanation that affirms nothing but such denials (instruct/qc.py ``by_definition``).
    argued_by_denying_zh: tuple[str, ...] = ()
    # Phrases whose denial contradicts this label ("并没有表达任何情绪" of a post explained as 悲伤): QC refuses an
    # explanation of the label that denies one of them (instruct/qc.py ``check_contradiction``).
    contradicted_by_denying_zh: tuple[str, ...] = ()
    # Regular expressions for the words an explanation of this label uses when it describes the thinking it names
    # (Burns' descriptions: 总是 / 永远 for overgeneralisation, 应该 / 必须 for should statements): with the label's
    # definition they make QC's second reader of explanations (instruct/description.py). Never used to read answers.
    cues_zh: tuple[str, ...] = ()
    # How an explanation of this label argues, shown on an invented post ("帖子写道“我就是个废物”，作者用…"): a grounded
    # teacher sees it for the labels it explains (instruct/generate.py), and may not copy it (backends/copy_guard.py).
    example_zh: str = ""

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
    # Screen sources only: keep the posts whose first label is ``only_label`` (one label, or any of a list: SOS-4K
    # levels 1-10), then give every kept post ``label`` ("" = nothing evident, "*" = something evident but not
    # which label); ``limit`` posts drawn with CARVE_SEED (seeds.py).
    only_label: str | tuple[str, ...] | None = None
    label: str | None = None
    limit: int = 0
    # screen training: each post counts this many times (few invented posts beside thousands of ordinary ones);
    # invented low / high posts also teach the classifier behind the screen, with the same count
    repeat: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.only_label, list):  # YAML lists: a tuple keeps the frozen split hashable
            object.__setattr__(self, "only_label", tuple(str(label) for label in self.only_label))

    def keeps(self, labels: tuple[str, ...]) -> bool:
        """Whether a post with these labels passes ``only_label``."""
        if self.only_label is None:
            return True
        allowed = (self.only_label,) if isinstance(self.only_label, str) else self.only_label
        return labels[:1] != () and labels[0] in allowed


SCREEN_ENCODERS = ("e5", "use")  # multilingual-e5-small, USE-multilingual v3 (train/embedding.py ENCODERS)


@dataclass(frozen=True)
class Screen:
    """Whether a post shows anything the task is about, before the task's labels are chosen.

    The clinical training sets hold only people already in distress (every SocialCD-3K post has a distortion,
    every SOS-HL post comes from a suicide forum), so a classifier trained on them alone gives every ordinary
    post a label. The screen is a gate learned from the task's posts against ``train`` sources of people who are
    not; when it finds nothing the answer is ``none_label`` (a label of the task) or, without one, an empty
    decision shown as ``none_zh``. Its threshold is the lowest that flags at most ``max_negative_flagged`` of
    the negative validation posts.
    """

    none_zh: str
    none_en: str
    train: tuple[Split, ...]
    validation: tuple[Split, ...]
    test: tuple[Split, ...] = ()  # held out: reported on the model card, never tuned on
    none_label: str | None = None
    max_negative_flagged: float = 0.01
    # A label whose posts a second reader learns against every other post; a post either reader flags is flagged
    # (train/screen.py: the gate reads "at risk at all", and scores an explicit plan in plain words only middling).
    also_flag: str | None = None
    # The frozen sentence encoders the gate may average with char TF-IDF, in order; each is kept only when it adds
    # validation recall (train/screen.py). Known: SCREEN_ENCODERS.
    encoders: tuple[str, ...] = ("e5",)


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
    # filter ("strict", "flexible") -> the parse steps that read an answer back (tasks/parsing.py), tried in order
    parsing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    parent_labels: tuple[str, ...] = ()
    screen: Screen | None = None
    # notice kind -> the labels that raise it ("crisis": resources and emergency numbers, "support": the hotline)
    notices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Frozen sentence encoders the analyzer may average with the task's TF-IDF classifier, chosen by cross-validation
    # (analyze/frozen.py; single-label tasks). Known: SCREEN_ENCODERS.
    frozen_encoders: tuple[str, ...] = ()

    def notice_labels(self, kind: str) -> tuple[str, ...]:
        return self.notices.get(kind, ())

    @property
    def label_ids(self) -> tuple[str, ...]:
        return tuple(label.id for label in self.labels)

    @property
    def classifier_labels(self) -> tuple[str, ...]:
        """The labels a trained classifier chooses among: all but the screen's none label (the screen's answer)."""
        none = self.screen.none_label if self.screen else None
        return tuple(label for label in self.label_ids if label != none)

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
