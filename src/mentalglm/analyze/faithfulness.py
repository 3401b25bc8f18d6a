"""Is the evidence an explanation quotes what the decision rests on? ERASER's rationale metrics, measured.

DeYoung et al. (2020, "ERASER: A Benchmark to Evaluate Rationalized NLP Models") score a rationale by what the
model does without it and with it alone, for the label it decided:

- *comprehensiveness* = p(label | post) − p(label | post without the evidence): high when the evidence carried the
  decision;
- *sufficiency* = p(label | post) − p(label | the evidence alone): low when the evidence is enough.

A rationale is only faithful if it beats chance, so each post is also scored with random clauses of about the
same length (the same clause cut the attribution engine uses), and the paired difference carries a bootstrap CI.
Probabilities are the task classifier's raw ones, read through the analyzer's input pipeline (``classifier_view``)
exactly as the decision was made. Posts decided "nothing evident", INVALID or without evidence are counted, not
scored. Quotes found in the post and verifier agreement come from the analyzer's own result fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mentalglm.analyze.engine import Analyzer, classifier_view
from mentalglm.analyze.schema import EvidenceSpan, PostResult, TaskResult
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.instruct.grounding import clauses
from mentalglm.instruct.qc import grounded_share
from mentalglm.seeds import DEFAULT_SEED
from mentalglm.tasks import get_task
from mentalglm.tasks.counts import bootstrap_ci

JOIN = "，"  # what stands between kept pieces when only the evidence is read


def merged_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping character ranges."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def remove(text: str, ranges: Sequence[tuple[int, int]]) -> str:
    """The post with the ranges cut out."""
    kept, at = [], 0
    for start, end in merged_ranges(ranges):
        kept.append(text[at:start])
        at = end
    return "".join(kept) + text[at:]


def keep(text: str, ranges: Sequence[tuple[int, int]]) -> str:
    """Only the ranges, in post order."""
    return JOIN.join(text[start:end] for start, end in merged_ranges(ranges))


def random_clauses(text: str, chars: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Random clauses of the post whose total length is closest to ``chars`` (at least one clause)."""
    pieces = clauses(text)
    if not pieces:
        return []
    chosen: list[tuple[int, int]] = []
    best: list[tuple[int, int]] = []
    best_gap = None
    total = 0
    for i in rng.permutation(len(pieces)):
        chosen.append((pieces[i].start, pieces[i].end))
        total += pieces[i].end - pieces[i].start
        gap = abs(total - chars)
        if best_gap is None or gap < best_gap:
            best, best_gap = list(chosen), gap
    return best


@dataclass(frozen=True)
class Scored:
    """One post's rationale, as ranges of the original post, with the random ranges it is compared with."""

    labels: tuple[str, ...]
    evidence: list[tuple[int, int]]
    random: list[tuple[int, int]]


def _ranges(spans: Sequence[EvidenceSpan], labels: Sequence[str]) -> list[tuple[int, int]]:
    """The spans that support a decided label (spans with no label support the decision as a whole)."""
    return merged_ranges([(s.start, s.end) for s in spans if s.label is None or s.label in labels])


def _mean_ci(values: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    if not len(values):
        return {"mean": None, "ci95": None}
    ci = bootstrap_ci(lambda w: {"mean": (w @ values) / w.sum(axis=1)}, len(values), n_resamples, seed)
    return {"mean": round(float(values.mean()), 4), "ci95": [round(v, 4) for v in ci["mean"]]}


def faithfulness(analyzer: Analyzer, task_id: str, posts: Sequence[str], *, seed: int = DEFAULT_SEED,
                 n_resamples: int = 1000, batch_size: int = 16) -> dict[str, Any]:
    """ERASER comprehensiveness and sufficiency of ``analyzer``'s evidence for one task, against random clauses."""
    task = get_task(task_id)
    if task_id not in analyzer.models:
        raise ValueError(f"the analyzer does not run task {task_id}")
    rng = np.random.default_rng(seed)
    skipped = {"input_error": 0, "nothing_evident": 0, "invalid": 0, "no_evidence": 0}
    scored: list[tuple[int, Scored]] = []
    found: list[float] = []
    agrees: list[bool] = []
    results = analyzer.analyze_many(list(posts), batch_size=batch_size, keep_going=True)
    for i, (post, result) in enumerate(zip(posts, results, strict=True)):
        if not isinstance(result, PostResult):  # empty or over-long rows of a dataset: counted, not scored
            skipped["input_error"] += 1
            continue
        task_result: TaskResult = result.tasks[task_id]
        if task_result.explanation:
            share = grounded_share(task_result.explanation, post, task)
            if share is not None:
                found.append(share)
        if task_result.verifier_agrees is not None:
            agrees.append(task_result.verifier_agrees)
        labels = tuple(label.id for label in task_result.labels)
        if task_result.nothing_evident:
            skipped["nothing_evident"] += 1
            continue
        if not task_result.valid or not labels:
            skipped["invalid"] += 1
            continue
        evidence = _ranges(task_result.evidence, labels)
        if not evidence:
            skipped["no_evidence"] += 1
            continue
        chars = sum(end - start for start, end in evidence)
        scored.append((i, Scored(labels, evidence, random_clauses(post, chars, rng))))
    classifier = analyzer.models[task_id].classifier
    columns = {c: j for j, c in enumerate(classifier.classes)}
    variants = []
    for i, s in scored:
        post = posts[i]
        variants += [post, remove(post, s.evidence), keep(post, s.evidence), remove(post, s.random),
                     keep(post, s.random)]
    proba = classifier.predict_proba([classifier_view(v) for v in variants]) if variants else np.zeros((0, 0))
    measures = np.zeros((len(scored), 4))  # comprehensiveness, sufficiency: evidence, then random
    shares = np.zeros((len(scored), 2))  # share of the post's characters: evidence, random
    for row, (i, s) in enumerate(scored):
        cols = [columns[label] for label in s.labels]
        full, no_ev, only_ev, no_rand, only_rand = (proba[5 * row + k, cols].mean() for k in range(5))
        measures[row] = (full - no_ev, full - only_ev, full - no_rand, full - only_rand)
        length = max(len(posts[i]), 1)
        shares[row] = (sum(e - b for b, e in s.evidence) / length, sum(e - b for b, e in s.random) / length)

    def block(evidence: np.ndarray, random: np.ndarray) -> dict[str, Any]:
        return {"evidence": _mean_ci(evidence, n_resamples, seed), "random_clauses": _mean_ci(random, n_resamples, seed),
                "evidence_minus_random": _mean_ci(evidence - random, n_resamples, seed)}

    return {
        "kind": "faithfulness", "task": task_id, "engine": analyzer.engine, "n_posts": len(posts),
        "n_scored": len(scored), "skipped": skipped,
        "comprehensiveness": block(measures[:, 0], measures[:, 2]),
        "sufficiency": block(measures[:, 1], measures[:, 3]),
        "share_of_post_chars": {"evidence": round(float(shares[:, 0].mean()), 4) if len(shares) else None,
                                "random_clauses": round(float(shares[:, 1].mean()), 4) if len(shares) else None},
        "quotes_found_in_post": {"mean": round(float(np.mean(found)), 4) if found else None, "n": len(found)},
        "verifier_agrees": {"rate": round(float(np.mean(agrees)), 4) if agrees else None, "n": len(agrees)},
        "seed": seed, "n_resamples": n_resamples, "machine": machine_info(), "date": now_iso(),
    }


__all__ = ["faithfulness", "keep", "merged_ranges", "random_clauses", "remove"]
