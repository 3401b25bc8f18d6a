"""MentalGLM: explainable mental-health analysis of Chinese social-media posts with LLMs.

Outputs are decision support for professionals, not a diagnosis.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`mentalglm.Analyzer` without importing scikit-learn and pydantic on `import mentalglm`."""
    if name == "Analyzer":
        from mentalglm.analyze.engine import Analyzer

        return Analyzer
    raise AttributeError(f"module 'mentalglm' has no attribute {name!r}")
