"""How good a judge is the suicide-risk verifier? Read on explanations it never saw, written by someone else.

QC's verifier (``instruct/qc.py`` ``apply_verifier``) reads the label an explanation argues with the task's TF-IDF
classifier and refuses an explanation that argues another label. SOS-4K holds an LLM-written Chinese explanation
for each of its ~4,200 posts, with the post's 0-10 level; levels 1-4 are read as arguing *low* risk and 7-10 as
*high* (0, 5 and 6 are left out as ambiguous: SOS-1K's binary label agrees with "level >= 6" only ~87 % of the time).
Each explanation is judged against its own label (a good judge lets it through) and against the other (a good
judge refuses it), under the rule QC uses and under alternatives:

* ``argmax``: the verifier's decision on what the explanation asserts (QC's rule);
* ``prior_shift``: a label is read only where the explanation also moves the verifier towards it from its reading of
  an empty text (the TF-IDF model of SOS-HL gives an empty text P(high) above one half, so a short explanation that
  argues nothing reads as high);
* either, on the explanation with its quotations of the post removed;
* ``explanation_reader``: not QC's verifier but a candidate for it, char TF-IDF + logistic regression trained on the
  explanations of SOS-4K's train and val parts and judged on its test part (the other rules are reported on that
  part too, under ``on_test_part``);
* ``whole_classifier``: the analyzer's whole classifier behind the screen (TF-IDF averaged with the frozen e5 and USE
  readers, analyze/frozen.py) instead of its TF-IDF part, under QC's rule: meaning-level readers trained on posts
  may read explanations, written in another style, better than character n-grams do.

    python benchmarks/verifier_judge.py --data-dir ../shared/data --out results/verifier-judge/suicide_risk.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np

from mentalglm.analyze.artifacts import default_artifacts_dir, load_task_model
from mentalglm.data.registry import get_loader
from mentalglm.files import atomic_write_text
from mentalglm.instruct.qc import affirms_nothing, verifier_reading
from mentalglm.tasks import get_task
from mentalglm.train.classical import TfidfClassifier

LOW_LEVELS, HIGH_LEVELS = range(1, 5), range(7, 11)
POST_QUOTE = re.compile(r"[“\"『]([^”\"』]{2,})[”\"』]")


def abstain(p_high: np.ndarray, readings: list[str]) -> np.ndarray:
    """QC's verifier abstains on an explanation that affirms nothing (instruct/qc.py apply_verifier): NaN reads
    neither label, so it is let through against either."""
    return np.where([not affirms_nothing(r) for r in readings], p_high, np.nan)


def judge(p_high: np.ndarray, empty_high: float, gold_high: np.ndarray, rule: str) -> dict[str, Any]:
    reads_high = p_high >= 0.5
    reads_low = p_high < 0.5  # both False where the verifier abstains (NaN)
    if rule == "prior_shift":
        reads_high &= p_high > empty_high
        reads_low &= p_high < empty_high
    passed_matched = np.where(gold_high, ~reads_low, ~reads_high)
    refused_swapped = np.where(gold_high, reads_high, reads_low)  # judged against the other label
    return {"matched_passed": round(float(passed_matched.mean()), 4),
            "matched_passed_by_label": {"high": round(float(passed_matched[gold_high].mean()), 4),
                                        "low": round(float(passed_matched[~gold_high].mean()), 4)},
            "swapped_refused": round(float(refused_swapped.mean()), 4),
            "swapped_refused_by_label": {"high": round(float(refused_swapped[gold_high].mean()), 4),
                                         "low": round(float(refused_swapped[~gold_high].mean()), 4)},
            "abstained": int(np.isnan(p_high).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    task = get_task("suicide_risk")
    model = load_task_model("suicide_risk", (args.artifacts_dir or default_artifacts_dir()).expanduser())
    reader = model.tfidf
    assert reader is not None and list(reader.classes) == ["low", "high"]
    whole = getattr(model.classifier, "inner", model.classifier)  # behind the screen: low / high
    assert list(whole.classes) == ["low", "high"]
    pairs, parts = [], []
    for part in ("train", "val", "test"):
        posts, _ = get_loader("sos_4k").load(Path(args.data_dir), part)
        for post in posts:
            level, explanation = int(post.labels[0]), str(post.meta.get("explanation") or "")
            if explanation and (level in LOW_LEVELS or level in HIGH_LEVELS):
                pairs.append((explanation, level in HIGH_LEVELS))
                parts.append(part)
    gold = np.array([high for _, high in pairs])
    empty_high = float(reader.predict_proba([""])[0, 1])
    result: dict[str, Any] = {"machine": f"{platform.machine()}, {platform.node()}",
                              "explanations": {"high": int(gold.sum()), "low": int((~gold).sum())},
                              "verifier_p_high_of_empty_text": round(empty_high, 4), "rules": {}}
    for quotes in ("kept", "removed"):
        texts = [verifier_reading(POST_QUOTE.sub("", e) if quotes == "removed" else e, task) for e, _ in pairs]
        p_high = abstain(reader.predict_proba(texts)[:, 1], texts)
        for rule in ("argmax", "prior_shift"):
            result["rules"][f"{rule}, quotes {quotes}"] = judge(p_high, empty_high, gold, rule)
    readings = [verifier_reading(e, task) for e, _ in pairs]
    whole_p_high = abstain(whole.predict_proba(readings)[:, 1], readings)
    result["rules"]["whole_classifier, argmax, quotes kept"] = judge(whole_p_high, 0.5, gold, "argmax")
    result["whole_classifier"] = {"kind": type(whole).__name__,
                                  "p_high_of_empty_text": round(float(whole.predict_proba([""])[0, 1]), 4)}
    test = np.array([part == "test" for part in parts])
    explanations = [verifier_reading(e, task) for e, _ in pairs]
    candidate = TfidfClassifier("suicide_risk.explanations", ["low", "high"], multi_label=False).fit(
        [e for e, t in zip(explanations, test, strict=True) if not t],
        [("high",) if g else ("low",) for g, t in zip(gold, test, strict=True) if not t])
    tested = [e for e, t in zip(explanations, test, strict=True) if t]
    p_qc = abstain(reader.predict_proba(tested)[:, 1], tested)
    p_candidate = candidate.predict_proba([e for e, t in zip(explanations, test, strict=True) if t])[:, 1]
    result["on_test_part"] = {"explanations": {"high": int(gold[test].sum()), "low": int((~gold[test]).sum()),
                                               "trained_on": int((~test).sum())},
                              "argmax": judge(p_qc, empty_high, gold[test], "argmax"),
                              "explanation_reader": judge(p_candidate, 0.5, gold[test], "argmax"),
                              "whole_classifier": judge(whole_p_high[test], 0.5, gold[test], "argmax")}
    print(json.dumps(result, ensure_ascii=False, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
