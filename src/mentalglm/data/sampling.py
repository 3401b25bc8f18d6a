"""Which posts a run uses: a sample stratified by label, and the hash that identifies a set of posts."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from mentalglm.data.records import Post
from mentalglm.files import sha256_json
from mentalglm.seeds import DEFAULT_SEED


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


def select_posts(posts: Sequence[Post], limit: int | None, seed: int = DEFAULT_SEED) -> list[Post]:
    """All posts, or ``limit`` of them stratified by label (a multi-label post by its rarest label), in split order."""
    if limit is None or limit >= len(posts):
        return list(posts)
    chosen = {p.id for p in stratified_sample(posts, limit, seed, min_per_label=1)}
    return [p for p in posts if p.id in chosen]


def posts_sha256(posts: Sequence[Post]) -> str:
    """Identifies the evaluated data: ids, texts and gold labels, independent of order."""
    return sha256_json(sorted([p.id, p.text, list(p.labels)] for p in posts))
