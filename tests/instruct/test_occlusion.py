"""Clause occlusion (instruct/occlusion.py): which clauses carry a label, shared by the analyzer and the builder."""

from __future__ import annotations

import numpy as np

from mentalglm.instruct.occlusion import Occlusions, supporting_clauses


def _reader(words: dict[str, str], classes: list[str]):
    """P(label) 0.9 for a text holding the label's word, else 0.1 (independent columns, as one-vs-rest)."""
    def predict_proba(texts):
        return np.array([[0.9 if words[c] in t else 0.1 for c in classes] for t in texts])
    return predict_proba


def test_each_label_keeps_its_strongest_clause_when_several_share_the_budget():
    classes = ["a", "b", "c", "d"]
    post = "甲一，甲二，乙一，丙一，丁一"
    pieces, drops = Occlusions.of([post], str).effects(_reader({"a": "甲", "b": "乙", "c": "丙", "d": "丁"}, classes))[0]
    # every label's clause drops by the same amount; "甲一" and "甲二" each alone leave 甲 in the text (no drop)
    chosen = supporting_clauses(pieces, drops, classes, ["b", "c", "d"])
    assert chosen == ["乙一", "丙一", "丁一"]  # three labels, one clause each, in post order
    assert supporting_clauses(pieces, drops, classes, ["zzz"]) == []  # a label the reader does not know
    assert supporting_clauses(pieces, drops, classes, ["a"]) == []  # no single clause carries it


def test_an_empty_post_has_no_clauses():
    pieces, drops = Occlusions.of([""], str).effects(_reader({"a": "甲"}, ["a"]))[0]
    assert pieces == [] and supporting_clauses(pieces, drops, ["a"], ["a"]) == []
