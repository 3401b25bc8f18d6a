"""quota_sample: exactly n items with a minimum per (group, label), for any kind of item."""

import pytest

from mentalglm.data.records import Post
from mentalglm.data.sampling import QuotaError, quota_sample

POSTS = ([Post(f"c{i}", "x", ("common",), "a") for i in range(40)] + [Post(f"r{i}", "x", ("rare",), "a")
         for i in range(3)] + [Post(f"b{i}", "x", ("common", "rare"), "b") for i in range(5)])


def _draw(n, **kwargs):
    return quota_sample(POSTS, n, group=lambda p: p.source, labels=lambda p: p.labels, **kwargs)


def test_exact_size_minimums_and_grouping():
    picked = _draw(10, min_per_label=3)
    assert len(picked) == 10 and len({p.id for p in picked}) == 10
    assert sum(p.source == "a" and p.labels == ("rare",) for p in picked) == 3
    assert [p.source for p in picked] == sorted(p.source for p in picked)
    assert [p.id for p in _draw(10, min_per_label=3)] == [p.id for p in picked]  # seeded
    assert len(_draw(100)) == len(POSTS)


def test_too_small_n_names_what_the_minimums_need():
    with pytest.raises(QuotaError) as caught:
        _draw(3, min_per_label=3)
    assert caught.value.pairs == 4 and caught.value.needed > 3
