"""Normalisation, decontamination, de-duplication and carving, on invented posts."""

from __future__ import annotations

from collections import Counter

import pytest

from mentalglm.data.records import Post
from mentalglm.data.splits import carve, decontaminate, deduplicate, normalise_text


def _post(n: int, text: str, *labels: str) -> Post:
    return Post(id=f"toy:{n}", text=text, labels=labels or ("low",), source="toy")


def test_normalise_ignores_width_case_space_and_punctuation() -> None:
    assert normalise_text("Ｈｅｌｌｏ， 世界！") == normalise_text("hello世界") == "hello世界"
    assert normalise_text("\ufeff我 好累。。。") == "我好累"
    assert normalise_text("“……”") == ""


def test_decontaminate_drops_training_posts_seen_in_evaluation() -> None:
    train = [_post(1, "我今天很开心！"), _post(2, "明天要考试了"), _post(3, "。。。"), _post(4, "外面在下雨")]
    validation = [_post(5, "我今天很开心")]
    test = [_post(6, "外面 在下雨。"), _post(7, "……")]
    kept, dropped = decontaminate(train, [validation, test])
    assert [p.id for p in kept] == ["toy:2", "toy:3"] and dropped == 2  # punctuation-only posts cannot match


def test_deduplicate_keeps_first_and_carries_keys() -> None:
    seen: set[str] = set()
    first, dropped_first = deduplicate([_post(1, "好累"), _post(2, "好累！"), _post(3, "想睡觉")], seen)
    second, dropped_second = deduplicate([_post(4, "想睡觉。"), _post(5, "起床了")], seen)
    assert [p.id for p in first] == ["toy:1", "toy:3"] and dropped_first == 1
    assert [p.id for p in second] == ["toy:5"] and dropped_second == 1


def _pool() -> list[Post]:
    posts = [_post(i, f"第{i}条帖子", "low") for i in range(80)]
    posts += [_post(i, f"第{i}条帖子", "high") for i in range(80, 100)]
    posts += [_post(i, f"第{i}条帖子", "low", "rare") for i in range(100, 110)]
    return posts


def test_carve_is_deterministic_disjoint_and_stratified() -> None:
    posts = _pool()
    rest, carved = carve(posts, 22, seed=13)
    assert len(carved) == 22 and len(rest) == len(posts) - 22
    assert not {p.id for p in rest} & {p.id for p in carved}
    assert carve(posts, 22, seed=13) == (rest, carved)
    assert carve(posts, 22, seed=14)[1] != carved
    # quotas follow the rarest label: 80 low, 20 high, 10 rare of 110 -> 16 / 4 / 2
    strata = Counter("rare" if "rare" in p.labels else p.labels[0] for p in carved)
    assert strata == {"low": 16, "high": 4, "rare": 2}
    assert [p.id for p in carved] == sorted((p.id for p in carved), key=lambda i: int(i.split(":")[1]))


def test_carve_never_takes_excluded_texts() -> None:
    posts = _pool()
    exclude = {normalise_text(p.text) for p in posts[:60]}
    rest, carved = carve(posts, 40, exclude=exclude)
    assert not {normalise_text(p.text) for p in carved} & exclude
    with pytest.raises(ValueError, match="cannot carve"):
        carve(posts, 60, exclude=exclude)
