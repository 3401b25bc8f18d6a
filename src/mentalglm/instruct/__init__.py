"""C-IMHI: interpretable instruction samples, their answer layout, export, and (later) generation and QC."""

from mentalglm.instruct.format import Instruction, make_instruction, user_turn
from mentalglm.instruct.layout import render_answer

__all__ = ["Instruction", "make_instruction", "render_answer", "user_turn"]
