"""The analyzer's classifiers as a system of the comparison report: test predictions and a results JSON.

So that `mentalglm report` can put the shipped analyzer (its screens included) beside the baselines, LLMs and
the published numbers, scored by the same code (`evaluate/runner.py`) on the same canonical test split.
"""

from __future__ import annotations

from pathlib import Path

from mentalglm.analyze.artifacts import TaskModel
from mentalglm.analyze.engines import classifier_view
from mentalglm.evaluate.defaults import PREDICTIONS_DIR
from mentalglm.evaluate.predict import ClassifierSystem, run_predictions
from mentalglm.evaluate.runner import evaluate_file, fresh, index_of


def write_test_results(model: TaskModel, data_dir: str | Path | None, results_dir: Path, *, name: str = "analyzer",
                       predictions_dir: Path = PREDICTIONS_DIR) -> Path:
    """Predict the task's test split with ``model`` (reading posts as the analyzer does) and score it."""
    from mentalglm.data.splits import canonical_splits

    task = model.task
    splits, _ = canonical_splits(task.id, data_dir, include_extra=False)

    def classify(texts: list[str]) -> list[tuple[str, ...]]:
        return [tuple(labels) for labels, _ in model.predict([classifier_view(t) for t in texts])]

    system = ClassifierSystem(name, classify, {"model": model.card.get("model", {}).get("kind", "analyzer"),
                                               "screen": model.card.get("screen", {}).get("kind")})
    predictions = fresh(predictions_dir / f"{task.id}.test.{name}.jsonl")
    run_predictions(task, "test", splits["test"], system, predictions, progress=False)
    return evaluate_file(predictions, results_dir / f"{task.id}.test.{name}.results.json", index=index_of(splits))[0]
