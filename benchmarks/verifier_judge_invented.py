"""How well does QC's verifier read emotion and distortion explanations? On explanations the project wrote itself.

``benchmarks/verifier_judge.py`` judges the suicide-risk verifier on SOS-4K's own explanations; emotion and
cognitive distortion have no dataset of explanations. ``benchmarks/data/judge_explanations.jsonl`` holds invented
posts (written for this project, never dataset rows) with an explanation each in the grounded layout the hybrid
engine and the builder write (判断为「标签」：帖子中写道“…”，理由。), 12 a label for emotion and 6 for each of the 12
distortions, written before any verifier read them. The verifier is the one QC uses in the analyzer (the default
artifacts' TF-IDF reader of each task, ``analyze.engines.verdict_on``), read with QC's rule (``read_verdicts``,
``agrees``):

* ``matched``: the explanation as written, against its own label (a good judge lets it through);
* ``swapped``: the same prose with another label stated (the next label of the task in declared order; a good judge
  refuses it, since the prose argues the first), also among the rows whose matched version passed (a judge that
  refuses everything refuses every swap); the pair 罪责归己 -> 罪责归他 is confusable, so its stated name is not read
  (QC's reading) and only the prose decides;
* ``prose_alone``: without the label statement (``reason_only``): does the prose itself carry the label;
* ``prose_without_quote``: without the statement and with the quotation emptied: the explanation's own words only.

    python benchmarks/verifier_judge_invented.py --out results/verifier-judge/invented.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from mentalglm.analyze.artifacts import default_artifacts_dir, load_task_model
from mentalglm.evaluate.predict import machine_info, now_iso
from mentalglm.files import atomic_write_text
from mentalglm.instruct.grounding import label_statement, reason_only
from mentalglm.instruct.qc import DEFINITIONS, DESCRIPTIONS, agrees, read_verdicts, without_quotes
from mentalglm.tasks import Task, get_task
from mentalglm.train.classical import TfidfVerifier

DATA = Path(__file__).parent / "data" / "judge_explanations.jsonl"


def swapped(task: Task, labels: list[str]) -> list[str]:
    """The next label of the task in declared order (the classifier's labels: no screen "none")."""
    order = list(task.classifier_labels)
    return [order[(order.index(labels[0]) + 1) % len(order)]]


def judge(task: Task, verifier: TfidfVerifier, rows: list[dict[str, Any]]) -> dict[str, Any]:
    def outcomes(texts: list[str], golds: list[list[str]], want_agree: bool) -> tuple[list[Any], list[bool]]:
        read = read_verdicts(task, verifier, texts)
        return read, [r is not None and r.agrees(task, g) == want_agree for r, g in zip(read, golds, strict=True)]

    def rate(texts: list[str], golds: list[list[str]], want_agree: bool) -> dict[str, Any]:
        read, ok = outcomes(texts, golds, want_agree)
        by_label: Counter[str] = Counter()
        for good, gold in zip(ok, golds, strict=True):
            by_label[gold[0]] += good
        return {"rate": round(sum(ok) / len(ok), 4), "abstained": sum(r is None for r in read),
                "read_by_definitions": sum(r is not None and r.reader == DEFINITIONS for r in read),
                # the verifier's reading disagreed and the task's descriptions agreed (instruct/description.py)
                "agreed_by_descriptions": sum(r is not None and r.agreeing_reader(task, g) == DESCRIPTIONS
                                              for r, g in zip(read, golds, strict=True)),
                "verifier_alone": round(sum(r is not None and agrees(task, r.labels, g) == want_agree
                                            for r, g in zip(read, golds, strict=True)) / len(read), 4),
                "by_label": {label: round(by_label[label] / sum(g[0] == label for g in golds), 3)
                             for label in dict.fromkeys(g[0] for g in golds)}}

    golds = [row["labels"] for row in rows]
    other = [swapped(task, g) for g in golds]
    explanations = [row["explanation"] for row in rows]
    moved = [label_statement(task, o) + reason_only(task, g, e) for e, g, o in zip(explanations, golds, other,
                                                                                     strict=True)]
    prose = [reason_only(task, g, e) for e, g in zip(explanations, golds, strict=True)]
    _, passed = outcomes(explanations, golds, True)
    _, refused = outcomes(moved, other, False)
    both = [r for p, r in zip(passed, refused, strict=True) if p]
    return {"explanations": len(rows),
            "matched_passed": rate(explanations, golds, True),
            "swapped_refused": {**rate(moved, other, False), "note": "by_label: the label stated, not the prose's"},
            # a judge that refuses everything refuses every swap: discrimination is refusal where the match passed
            "swapped_refused_where_matched_passed": round(sum(both) / len(both), 4) if both else None,
            "prose_alone_reads_its_label": rate(prose, golds, True),
            "prose_without_quote_reads_its_label": rate([without_quotes(p) for p in prose], golds, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts-dir", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=DATA, help="the invented explanations (default: %(default)s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    result: dict[str, Any] = {"date": now_iso(), "machine": machine_info(), "data": args.data.name, "tasks": {}}
    for task_id in ("emotion", "cognitive_distortion"):
        task = get_task(task_id)
        model = load_task_model(task_id, (args.artifacts_dir or default_artifacts_dir()).expanduser())
        if model.tfidf is None:
            raise SystemExit(f"{task_id}: the analyzer has no TF-IDF reader to judge with")
        result["tasks"][task_id] = judge(task, TfidfVerifier(model.tfidf), [r for r in rows if r["task"] == task_id])
    print(json.dumps(result["tasks"], ensure_ascii=False, indent=1))
    if args.out:
        atomic_write_text(args.out, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    main()
