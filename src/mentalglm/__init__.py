"""MentalGLM: explainable mental-health analysis of Chinese social-media posts with LLMs.

Outputs are decision support for professionals, not a diagnosis.
"""

__version__ = "0.1.0"
