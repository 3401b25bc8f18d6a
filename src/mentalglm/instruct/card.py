"""The dataset card written beside every exported instruction set: what is in it and where it came from."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from mentalglm.data.instructions import Instruction
from mentalglm.data.registry import get_loader
from mentalglm.tasks.registry import get_task


def dataset_card(samples_by_split: dict[str, Sequence[Instruction]], extra: dict[str, Any]) -> str:
    """Markdown: sources and licences, counts per task/split/label, explanation coverage, PII and decontamination counts."""
    counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    explained: Counter[tuple[str, str]] = Counter()
    datasets: set[str] = set()
    for split, samples in samples_by_split.items():
        for sample in samples:
            counts[(sample.task, split)].update(sample.labels)
            explained[(sample.task, split)] += bool(sample.explanation)
            datasets.add(sample.source)
    lines = ["# C-IMHI instruction set", "",
             "Interpretable mental-health instructions built by `mentalglm`. Research use only: the answers are "
             "decision support, not diagnoses. Personal data (handles, links, phones, e-mails, ID and bank card "
             "numbers, person names) was scrubbed before export.", "", "## Sources", "",
             "| dataset | source | commit | licence |", "|---|---|---|---|"]
    for name in sorted(datasets):
        try:
            loader = get_loader(name)
            lines.append(f"| {name} | {loader.source} | {loader.commit[:12]} | {loader.licence or 'none stated'} |")
        except KeyError:
            lines.append(f"| {name} | (unregistered) | | |")
    lines += ["", "## Counts", "", "| task | split | samples | with explanation | labels |", "|---|---|---|---|---|"]
    for (task_id, split), counter in sorted(counts.items()):
        task = get_task(task_id)
        label_text = ", ".join(f"{task.label(k).zh} {v}" for k, v in counter.most_common())
        total = sum(1 for s in samples_by_split[split] if s.task == task_id)
        lines.append(f"| {task_id} | {split} | {total} | {explained[(task_id, split)]} | {label_text} |")
    for key, value in extra.items():
        lines += ["", f"## {key}", "", "```", _format(value), "```"]
    return "\n".join(lines) + "\n"


def _format(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, indent=2) if not isinstance(value, str) else value
