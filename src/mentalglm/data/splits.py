"""Canonical task splits, carved validation sets, and decontamination of training data.

The Chinese suicide datasets share posts across each other's splits (DATA.md: 149 of the 250
SOS-HL-1K test posts are in SOS-4K train), and SMP2020's official eval and test sets share a few
posts too. Scores are only comparable when no training post also occurs, up to trivial
differences, in an evaluation split; this module removes such posts and says how many it removed.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mentalglm.data.datadir import resolve_data_dir
from mentalglm.data.records import Post
from mentalglm.data.registry import LoadReport, get_loader
from mentalglm.errors import ConfigError
from mentalglm.seeds import CARVE_SEED
from mentalglm.tasks import Split, Task, get_task

TRAIN, TEST = "train", "test"


def normalise_text(text: str) -> str:
    """The key two posts are compared by: NFKC, lower case, no whitespace, punctuation or invisible characters.

    Reposts of one post differ in full-/half-width forms, spacing and punctuation only.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def _keys(posts: Iterable[Post]) -> set[str]:
    return {key for key in map(normalise_text, (p.text for p in posts)) if key}


def decontaminate(train: Sequence[Post], evaluation: Iterable[Sequence[Post]]) -> tuple[list[Post], int]:
    """Training posts whose normalised text occurs in no evaluation split, and how many were dropped.

    A post that normalises to nothing (only punctuation) cannot be matched and is kept.
    """
    banned = set().union(*(_keys(split) for split in evaluation))  # never holds "", so empty keys are kept
    kept = [p for p in train if normalise_text(p.text) not in banned]
    return kept, len(train) - len(kept)


def deduplicate(posts: Sequence[Post], seen: set[str] | None = None) -> tuple[list[Post], int]:
    """First occurrence of each normalised text (``seen`` carries keys across calls), and how many were dropped."""
    seen = set() if seen is None else seen
    kept = []
    for post in posts:
        key = normalise_text(post.text)
        if key and key in seen:
            continue
        seen.add(key)
        kept.append(post)
    return kept, len(posts) - len(kept)


def carve(posts: Sequence[Post], size: int, *, seed: int = CARVE_SEED,
          exclude: Collection[str] = ()) -> tuple[list[Post], list[Post]]:
    """Split ``size`` posts off ``posts`` (e.g. a validation set out of a train file): ``(rest, carved)``.

    Stratified by label (a multi-label post counts under its rarest label) with quotas by largest
    remainder, and deterministic for a seed. Posts whose normalised text is in ``exclude`` (the
    dataset's test split) stay in ``rest`` so the carved set never overlaps the test.
    """
    frequency = Counter(label for p in posts for label in p.labels)
    eligible = [i for i, p in enumerate(posts) if normalise_text(p.text) not in exclude]
    if size > len(eligible):
        raise ValueError(f"cannot carve {size} posts out of {len(eligible)} eligible ones")
    groups: dict[str, list[int]] = defaultdict(list)
    for i in eligible:
        labels = posts[i].labels
        groups[min(labels, key=lambda label: (frequency[label], label)) if labels else ""].append(i)
    exact = {key: size * len(members) / len(eligible) for key, members in groups.items()}
    quota = {key: int(value) for key, value in exact.items()}
    by_remainder = sorted(groups, key=lambda key: (-(exact[key] - quota[key]), key))
    for key in by_remainder[: size - sum(quota.values())]:
        quota[key] += 1
    rng = random.Random(seed)
    chosen = {i for key in sorted(groups) for i in rng.sample(groups[key], quota[key])}
    return ([p for i, p in enumerate(posts) if i not in chosen], [p for i, p in enumerate(posts) if i in chosen])


def _load(split: Split, data_dir: Path, skip_bad_rows: bool, verify: bool) -> tuple[list[Post], LoadReport]:
    return get_loader(split.dataset).load(data_dir, split.part, skip_bad_rows=skip_bad_rows, verify=verify)


def load_split(task_id: str, split_name: str, data_dir: str | Path | None = None, *,
               skip_bad_rows: bool = False, verify: bool = True) -> tuple[list[Post], LoadReport]:
    """The posts of one canonical split of a task, exactly as its dataset part holds them (no decontamination)."""
    split = get_task(task_id).split(split_name)
    return _load(split, resolve_data_dir(data_dir), skip_bad_rows, verify)


@dataclass
class SourceCounts:
    """What happened to one source of a training pool."""

    name: str
    dataset: str
    part: str
    loaded: int = 0
    contaminated: int = 0
    duplicates: int = 0

    @property
    def kept(self) -> int:
        return self.loaded - self.contaminated - self.duplicates


@dataclass
class PoolReport:
    task: str
    evaluation_splits: list[str]
    sources: list[SourceCounts] = field(default_factory=list)
    load: LoadReport = field(default_factory=LoadReport)

    @property
    def kept(self) -> int:
        return sum(s.kept for s in self.sources)

    @property
    def dropped(self) -> int:
        return sum(s.contaminated + s.duplicates for s in self.sources)


def training_pool(task_id: str, data_dir: str | Path | None = None, include_extra: bool = True, *,
                  skip_bad_rows: bool = False, verify: bool = True) -> tuple[list[Post], PoolReport]:
    """Train split plus the task's ``extra_train`` sources, decontaminated and de-duplicated.

    Every post whose normalised text occurs in any evaluation split (all splits but train) is
    dropped, then repeated texts within the pool (the train split's copy wins). The report says
    how many each source lost to which rule.
    """
    task = get_task(task_id)
    root = resolve_data_dir(data_dir)
    report = PoolReport(task.id, [s.name for s in task.splits if s.name != TRAIN])
    evaluation = []
    for split in task.splits:
        if split.name != TRAIN:
            posts, load_report = _load(split, root, skip_bad_rows, verify)
            report.load.merge(load_report)
            evaluation.append(posts)
    sources = [task.split(TRAIN), *(task.extra_train if include_extra else ())]
    pool: list[Post] = []
    seen: set[str] = set()
    for split in sources:
        posts, load_report = _load(split, root, skip_bad_rows, verify)
        report.load.merge(load_report)
        foreign = {label for p in posts for label in p.labels} - set(task.label_ids)
        if foreign:
            raise ConfigError(f"task {task.id}: source {split.dataset}/{split.part} has labels {sorted(foreign)} "
                              f"that are not label ids of the task ({', '.join(task.label_ids)})")
        clean, contaminated = decontaminate(posts, evaluation)
        unique, duplicates = deduplicate(clean, seen)
        report.sources.append(SourceCounts(split.name, split.dataset, split.part, len(posts), contaminated, duplicates))
        pool.extend(unique)
    return pool, report


@dataclass
class CanonicalReport:
    pool: PoolReport
    # evaluation split name -> posts dropped because they also occur in the test split
    dropped_against_test: dict[str, int] = field(default_factory=dict)


def canonical_splits(task_id: str, data_dir: str | Path | None = None, include_extra: bool = True, *,
                     skip_bad_rows: bool = False,
                     verify: bool = True) -> tuple[dict[str, list[Post]], CanonicalReport]:
    """All splits of a task, pairwise disjoint: the training pool, validation less test overlaps, test as published.

    The test split is never altered, so scores stay comparable with published numbers.
    """
    task = get_task(task_id)
    root = resolve_data_dir(data_dir)
    pool, pool_report = training_pool(task_id, root, include_extra, skip_bad_rows=skip_bad_rows, verify=verify)
    report = CanonicalReport(pool_report)
    splits: dict[str, list[Post]] = {TRAIN: pool}
    loaded = {s.name: _load(s, root, skip_bad_rows, verify)[0] for s in task.splits if s.name != TRAIN}
    for name, posts in loaded.items():
        if name == TEST or TEST not in loaded:
            splits[name] = posts
        else:
            splits[name], report.dropped_against_test[name] = decontaminate(posts, [loaded[TEST]])
    return splits, report


@dataclass
class ScreenData:
    """The posts a task's screen (tasks/schema.py ``Screen``) is trained and tuned on, besides the task's own."""

    train: list[Post]
    validation: list[Post]
    test: dict[str, list[Post]] = field(default_factory=dict)  # source name -> held-out posts
    sources: list[SourceCounts] = field(default_factory=list)


def classifier_posts(task: Task, posts: Sequence[Post]) -> list[Post]:
    """Screen posts that name only the classifier's labels (e.g. invented low / high posts): they also teach the
    classifier behind the screen, in every tier."""
    keep = set(task.classifier_labels)
    return [p for p in posts if p.labels and set(p.labels) <= keep]


def _screen_source(split: Split, root: Path, skip_bad_rows: bool, verify: bool) -> list[Post]:
    posts, _ = _load(split, root, skip_bad_rows, verify)
    posts = [p for p in posts if split.keeps(p.labels)]
    if split.limit and len(posts) > split.limit:
        posts = random.Random(CARVE_SEED).sample(posts, split.limit)
    if split.label is None:
        return posts
    labels = () if split.label == "" else (split.label,)
    return [Post(p.id, p.text, labels, p.source, p.meta) for p in posts]


def screen_data(task_id: str | Task, data_dir: str | Path | None = None, *, skip_bad_rows: bool = False,
                verify: bool = True) -> ScreenData:
    """The screen's sources, relabelled, with every post that occurs in an evaluation split of the task dropped
    (and validation posts that occur in the screen's training posts). A Task (not its id) lets a benchmark try
    other sources (benchmarks/screen_sources.py)."""
    task = get_task(task_id) if isinstance(task_id, str) else task_id
    if task.screen is None:
        raise ConfigError(f"task {task.id} declares no screen")
    root = resolve_data_dir(data_dir)
    evaluation = [_load(s, root, skip_bad_rows, verify)[0] for s in task.splits if s.name != TRAIN]
    data = ScreenData([], [])
    seen: set[str] = set()
    for target, sources in ((data.train, task.screen.train), (data.validation, task.screen.validation)):
        for split in sources:
            posts = _screen_source(split, root, skip_bad_rows, verify)
            clean, contaminated = decontaminate(posts, [*evaluation, data.train] if target is data.validation
                                                else evaluation)
            unique, duplicates = deduplicate(clean, seen)
            data.sources.append(SourceCounts(f"screen.{'train' if target is data.train else 'validation'}."
                                             f"{split.name}", split.dataset, split.part, len(posts), contaminated,
                                             duplicates))
            target.extend(unique * (split.repeat if target is data.train else 1))
    for split in task.screen.test:  # kept whole but for posts the screen trained on
        data.test[split.name], _ = decontaminate(_screen_source(split, root, skip_bad_rows, verify), [data.train])
    return data
