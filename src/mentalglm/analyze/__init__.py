"""The analyzer: classifiers decide, an LLM explains, safety notices always attached."""

from mentalglm.analyze.engine import Analyzer, InputRow, InputTextError
from mentalglm.analyze.schema import ErrorRecord, PostResult, TaskResult

__all__ = ["Analyzer", "ErrorRecord", "InputRow", "InputTextError", "PostResult", "TaskResult"]
