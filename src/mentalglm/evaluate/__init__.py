"""Evaluation: parse answers (strict and flexible filters), score them, and leave result files."""

from mentalglm.evaluate.metrics import (
    INVALID,
    KNOWN_METRICS,
    bootstrap_ci,
    read_predictions,
    score,
    write_predictions,
    write_results,
)
from mentalglm.evaluate.parsing import MODES, Parsed, parse, parse_all_modes, register_parser
from mentalglm.evaluate.pathway import PathwayFileError, pathway_scores, read_label_file, read_pathway_file

__all__ = [
    "INVALID",
    "KNOWN_METRICS",
    "MODES",
    "Parsed",
    "PathwayFileError",
    "bootstrap_ci",
    "parse",
    "parse_all_modes",
    "pathway_scores",
    "read_label_file",
    "read_pathway_file",
    "read_predictions",
    "register_parser",
    "score",
    "write_predictions",
    "write_results",
]
