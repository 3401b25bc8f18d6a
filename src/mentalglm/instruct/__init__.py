"""Building C-IMHI: teacher explanations, QC with regeneration, human validation, export and the dataset card.

The sample format itself (``Instruction``) is ``data.instructions``: the SFT recipe reads it too.
"""
