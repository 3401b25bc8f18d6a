"""Explanation quality: reference-based overlap and reference-free checks.

SOS-4K and the IMHI sets ship reference explanations (``Post.meta["explanation"]``), and those are themselves
LLM-written, so overlap with them (ROUGE-L, BLEU-4 on jieba words, as MentalLLaMA reports) is a
weak signal; BERTScore (``bertscore.py``) at least credits a paraphrase, which word overlap cannot.
The reference-free scores say more about a single answer: does it quote the post (grounding), does
an independent reader recover its own label from it (consistency), is it Chinese, and how long is it.
ROUGE/BLEU are implemented here because neither ``rouge`` nor ``sacrebleu`` is a dependency; tests
check them against hand-computed values.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from mentalglm.evaluate.bertscore import BertScorer, EncoderUnavailable
from mentalglm.instruct.qc import (
    DEFINITIONS,
    DESCRIPTIONS,
    Verifier,
    evidence_quotes,
    grounded_share,
    read_verdicts,
)
from mentalglm.tasks.parsing import cjk_share
from mentalglm.tasks.schema import Task


@cache
def _jieba() -> Any:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # it logs its dictionary load on every first use
    return jieba


def tokenize(text: str) -> list[str]:
    """jieba words without whitespace and punctuation, which would inflate overlap for free."""
    return [w for w in _jieba().lcut(text) if w.strip() and not all(unicodedata.category(c)[0] in "PZS" for c in w)]


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: Sequence[str], reference: Sequence[str]) -> float:
    """Sentence-level ROUGE-L F1 (beta = 1) of two token lists."""
    lcs = _lcs(hypothesis, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hypothesis), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus BLEU-4 in 0..1 with one reference per hypothesis and sacreBLEU's default ``exp`` smoothing.

    Counts are summed over the corpus before the precisions are taken (Papineni et al.); an order
    with no match gets precision 1 / (2^k * total), k counting such orders, instead of zeroing the score.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    for hyp, ref in zip(hypotheses, references, strict=True):
        for n in range(1, max_n + 1):
            hyp_grams, ref_grams = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
            totals[n - 1] += max(0, len(hyp) - n + 1)
    if min(totals) == 0:
        return 0.0
    log_precision, smooth = 0.0, 1.0
    for match, total in zip(matches, totals, strict=True):
        if match == 0:
            smooth *= 2
            log_precision += math.log(1 / (smooth * total))
        else:
            log_precision += math.log(match / total)
    hyp_len, ref_len = sum(map(len, hypotheses)), sum(map(len, references))
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision / max_n)


@dataclass(frozen=True)
class ExplainedAnswer:
    """One model answer whose explanation is scored: its own labels, the post, and a reference if any."""

    explanation: str
    post: str
    labels: tuple[str, ...]
    reference: str | None = None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _bertscore(scorer: BertScorer | None, referenced: Sequence[ExplainedAnswer]) -> dict[str, Any]:
    """Mean BERTScore P/R/F1, or only ``bertscore_skipped`` with the reason: never a made-up number."""
    if scorer is None:
        return {"bertscore_skipped": "switched off (evaluate --bertscore none)"}
    try:
        means = scorer.score([a.explanation for a in referenced], [a.reference or "" for a in referenced]).means()
    except EncoderUnavailable as error:
        return {"bertscore_skipped": str(error)}
    return {"bertscore_precision": means["precision"], "bertscore_recall": means["recall"],
            "bertscore_f1": means["f1"], "bertscore": scorer.describe()}


def explanation_scores(task: Task, answers: Sequence[ExplainedAnswer], verifier: Verifier | None = None,
                       bertscore: BertScorer | None = None) -> dict[str, Any]:
    """Averages over the answers that carry an explanation; keys are absent when they cannot be computed.

    ``label_consistency`` compares the verifier's reading of the explanation with the answer's *own*
    labels (not the gold): an explanation should support the verdict it comes with, right or wrong.
    """
    answers = [a for a in answers if a.explanation and a.explanation.strip()]
    out: dict[str, Any] = {"n_explained": len(answers)}
    if not answers:
        return out
    grounded = [grounded_share(a.explanation, a.post, task) for a in answers]
    out.update({
        "mean_chars": _mean([len(a.explanation) for a in answers]),
        "cjk_share": _mean([cjk_share(a.explanation) for a in answers]),
        "quoting_share": _mean([float(bool(evidence_quotes(a.explanation))) for a in answers]),
        "grounded_share": _mean([g for g in grounded if g is not None]),
    })
    referenced = [a for a in answers if a.reference]
    if referenced:
        hyps = [tokenize(a.explanation) for a in referenced]
        refs = [tokenize(a.reference or "") for a in referenced]
        out["n_referenced"] = len(referenced)
        out["rouge_l_f"] = _mean([rouge_l(h, r) for h, r in zip(hyps, refs, strict=True)])
        out["bleu4"] = corpus_bleu(hyps, refs)
        out.update(_bertscore(bertscore, referenced))
    labelled = [a for a in answers if a.labels]
    if verifier is not None and labelled:
        # read as QC reads them: what the explanation asserts, abstaining where it affirms nothing
        read = read_verdicts(task, verifier, [a.explanation for a in labelled])
        judged = [(r, a) for r, a in zip(read, labelled, strict=True) if r is not None]
        if judged:
            out["label_consistency"] = _mean([float(r.agrees(task, a.labels)) for r, a in judged])
        out["verifier_abstained"] = len(labelled) - len(judged)
        readers = [r.agreeing_reader(task, a.labels) or r.reader for r, a in judged]
        out["read_by_definitions"] = readers.count(DEFINITIONS)
        out["agreed_by_descriptions"] = readers.count(DESCRIPTIONS)
        out["verifier"] = verifier.name
    return out
