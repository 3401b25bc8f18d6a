"""C-IMHI: interpretable instruction samples, export, and (later) generation and QC."""

from mentalglm.instruct.format import Instruction, make_instruction, user_turn

__all__ = ["Instruction", "make_instruction", "user_turn"]
