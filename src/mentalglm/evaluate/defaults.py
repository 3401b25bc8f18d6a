"""Paths shared by the evaluation commands, in a module light enough for `mentalglm --help` to import."""

from pathlib import Path

# Prediction rows quote posts and carry gold labels: they stay out of git (outputs/ is ignored).
PREDICTIONS_DIR = Path("outputs/predictions")
# Results hold only aggregates and may be committed.
RESULTS_DIR = Path("results")
