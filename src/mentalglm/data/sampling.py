"""Which posts a run uses: samples stratified by label, and the hash that identifies a set of posts.

Two stratified draws, because runs recorded their seeded draws with both: ``stratified_sample`` gives about ``n``
posts, each post in the group of its rarest label (C-IMHI build, ``--limit`` of evaluation and encoder runs);
``quota_sample`` gives exactly ``n`` items with a minimum per (group, label) (the samples of a human rating round).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from mentalglm.data.records import Post
from mentalglm.files import sha256_json
from mentalglm.seeds import DEFAULT_SEED

T = TypeVar("T")


def stratified_sample(posts: Sequence[Post], n: int, seed: int = DEFAULT_SEED, min_per_label: int = 2) -> list[Post]:
    """About ``n`` posts, each label represented in proportion and at least ``min_per_label`` times.

    Multi-label posts are grouped by their rarest label so that rare distortions are not lost.
    """
    if n >= len(posts):
        return list(posts)
    frequency: dict[str, int] = defaultdict(int)
    for post in posts:
        for label in post.labels:
            frequency[label] += 1
    groups: dict[str, list[Post]] = defaultdict(list)
    for post in posts:
        groups[min(post.labels, key=lambda label: (frequency[label], label))].append(post)
    rng = random.Random(seed)
    chosen: list[Post] = []
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        share = max(min_per_label, round(n * len(group) / len(posts)))
        chosen.extend(group[:share])
    rng.shuffle(chosen)
    return chosen[:n] if len(chosen) > n else chosen


class QuotaError(ValueError):
    """``n`` cannot hold the minimums: ``pairs`` (group, label) pairs need ``needed`` items."""

    def __init__(self, n: int, pairs: int, needed: int) -> None:
        self.n, self.pairs, self.needed = n, pairs, needed
        super().__init__(f"n={n} is too small: the minimums of {pairs} (group, label) pairs need {needed} items")


def quota_sample(items: Sequence[T], n: int, *, group: Callable[[T], str], labels: Callable[[T], Sequence[str]],
                 seed: int = DEFAULT_SEED, min_per_label: int = 2) -> list[T]:
    """Exactly ``n`` items (all when there are fewer), proportional to (group, label set) strata, with
    ``min_per_label`` of every (group, label) that has that many.

    Minimums are filled rarest label first, so an item drawn for a rare label also counts for its other labels;
    the rest goes to the stratum furthest below its proportional share. The result is grouped by ``group``, in
    seeded order inside a group (labels are not clustered). ``labels`` may give ``("",)`` for an item without
    labels, which is then its own class.
    """
    def stratum(item: T) -> tuple[str, str]:
        return group(item), "+".join(labels(item))

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    rank = {i: r for r, i in enumerate(order)}
    taken: set[int] = set(order[:n]) if n >= len(items) else set()
    if len(taken) < min(n, len(items)):
        by_label: dict[tuple[str, str], list[int]] = defaultdict(list)
        by_stratum: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i in order:
            by_stratum[stratum(items[i])].append(i)
            for label in labels(items[i]):
                by_label[group(items[i]), label].append(i)
        for key in sorted(by_label, key=lambda k: (len(by_label[k]), k)):
            have = sum(1 for i in by_label[key] if i in taken)
            for i in by_label[key]:
                if have >= min_per_label:
                    break
                if i not in taken:
                    taken.add(i)
                    have += 1
        if len(taken) > n:
            raise QuotaError(n, len(by_label), len(taken))
        share = {k: n * len(v) / len(items) for k, v in by_stratum.items()}
        count = Counter(stratum(items[i]) for i in taken)
        queue = {k: [i for i in v if i not in taken] for k, v in sorted(by_stratum.items())}
        while len(taken) < n:
            key = max((k for k in queue if queue[k]), key=lambda k: share[k] - count[k])
            taken.add(queue[key].pop(0))
            count[key] += 1
    return [items[i] for i in sorted(taken, key=lambda i: (group(items[i]), rank[i]))]


def select_posts(posts: Sequence[Post], limit: int | None, seed: int = DEFAULT_SEED) -> list[Post]:
    """All posts, or ``limit`` of them stratified by label (a multi-label post by its rarest label), in split order."""
    if limit is None or limit >= len(posts):
        return list(posts)
    chosen = {p.id for p in stratified_sample(posts, limit, seed, min_per_label=1)}
    return [p for p in posts if p.id in chosen]


def posts_sha256(posts: Sequence[Post]) -> str:
    """Identifies the evaluated data: ids, texts and gold labels, independent of order."""
    return sha256_json(sorted([p.id, p.text, list(p.labels)] for p in posts))
