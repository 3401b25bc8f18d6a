"""One rank of the 2-process CPU (gloo) test: train, then save this rank's LoRA weights for comparison.

    python -m torch.distributed.run --nproc_per_node 2 tests/train/ddp_worker.py RUN.yaml OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from mentalglm.train.config import load_run_config
from mentalglm.train.sft import run_training

torch.set_num_threads(1)


class SaveRankWeights(TrainerCallback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}
        torch.save({"weights": weights, "step": state.global_step},
                   self.out / f"rank{os.environ.get('RANK', '0')}.pt")


if __name__ == "__main__":
    config_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    run_training(load_run_config(config_path), callbacks=[SaveRankWeights(out)])
