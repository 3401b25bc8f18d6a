"""Before/after check of a refactoring: the same saved analyzer gives the same labels and probabilities on the
three test splits, and `mentalglm instruct export` writes the same files, under two versions of the code.

    git worktree add /tmp/before e0a798d                 # the code before the refactoring
    cp -r ~/.cache/mentalglm/analyzer /tmp/same-model    # a model both versions read (never written here)
    MENTALGLM_DATA_DIR=/work/shared/data nice -n 10 python benchmarks/same_behaviour.py \\
        --before /tmp/before/src --after src --model /tmp/same-model --work /tmp/same-behaviour

Each version runs in its own process with PYTHONPATH set to its ``src`` (``dump`` below) and writes, per task, the
analyzer's decided labels, calibrated confidences and the classifier's raw probabilities (full float precision,
as JSON), plus the export folder (``SAME_EXPORT_LIMIT=300`` exports a seeded sample per task and split: the
full export takes tens of minutes on two shared cores). The check compares the SHA-256 of every file and exits 1 on any difference.
Prints the digests so that a report can quote them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

TASKS = ("emotion", "cognitive_distortion", "suicide_risk")


def dump(model: Path, out: Path) -> None:
    """Run the code on PYTHONPATH: analyzer outputs per test split, then the instruct export."""
    from mentalglm.analyze import Analyzer
    from mentalglm.data.splits import load_split

    out.mkdir(parents=True, exist_ok=True)
    analyzer = Analyzer(list(TASKS), engine="labels", artifacts_dir=model, explain=False)
    for task in TASKS:
        posts, _ = load_split(task, "test")
        texts = [p.text for p in posts]
        results = list(analyzer.analyze_many([p.text for p in posts], batch_size=64, keep_going=True))
        raw = analyzer.models[task].classifier.predict_proba(texts)
        rows = []
        for post, result, proba in zip(posts, results, raw, strict=True):
            record = result.model_dump(mode="json")
            found = record.get("tasks", {}).get(task) or {}  # only what decides: fields added later do not count
            rows.append({"id": post.id, "status": record.get("status"), "high_risk": record.get("high_risk"),
                         **{k: found.get(k) for k in ("labels", "nothing_evident", "confidences")},
                         "raw_proba": [float(x).hex() for x in proba]})
        (out / f"{task}.test.json").write_text(json.dumps(rows, ensure_ascii=False, indent=0) + "\n",
                                               encoding="utf-8")
    from typer.testing import CliRunner

    from mentalglm.cli import app

    limit = ["--limit", os.environ["SAME_EXPORT_LIMIT"]] if os.environ.get("SAME_EXPORT_LIMIT") else []
    result = CliRunner().invoke(app, ["instruct", "export", *limit, "--out", str(out / "export")])
    if result.exit_code != 0:
        raise SystemExit(f"instruct export failed ({result.exit_code}):\n{result.output}")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="src folder of the old code")
    parser.add_argument("--after", type=Path, help="src folder of the new code")
    parser.add_argument("--model", type=Path, required=True, help="saved analyzer directory both versions load")
    parser.add_argument("--work", type=Path, default=Path("/tmp/same-behaviour"))
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # internal: one version's outputs
    args = parser.parse_args()
    if args.dump:
        dump(args.model, args.dump)
        return 0
    found = {}
    for name, src in (("before", args.before), ("after", args.after)):
        target = args.work / name
        env = {**os.environ, "PYTHONPATH": str(src.resolve())}
        subprocess.run([sys.executable, __file__, "--model", str(args.model), "--dump", str(target)], env=env,
                       check=True)
        found[name] = digests(target)
    same = found["before"] == found["after"]
    for path in sorted(set(found["before"]) | set(found["after"])):
        a, b = found["before"].get(path, "missing"), found["after"].get(path, "missing")
        print(f"{'same' if a == b else 'DIFF'}  {a[:16]}  {b[:16]}  {path}")
    overall = {k: hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest() for k, v in found.items()}
    print(f"before {overall['before']}\nafter  {overall['after']}\n{'IDENTICAL' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
