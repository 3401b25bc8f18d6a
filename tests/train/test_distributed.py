"""Two CPU processes (gloo DDP) train the tiny model and end with identical adapter weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_process_ddp_ranks_agree(run_yaml, tmp_path: Path) -> None:
    config = run_yaml(stages=[{"name": "s1", "datasets": [str(tmp_path / "stage1.chat.jsonl")]}],
                      max_steps=3, per_device_train_batch_size=1, save_steps=10)
    out = tmp_path / "ranks"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with socket.socket() as probe:  # torchrun hangs with --master_port 0: pick a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(WORKER), str(config), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert rank0["step"] == rank1["step"] == 3
    assert rank0["weights"].keys() == rank1["weights"].keys() and rank0["weights"]
    assert all(torch.equal(rank0["weights"][k], rank1["weights"][k]) for k in rank0["weights"])
    assert (tmp_path / "run" / "s1" / "adapter" / "adapter_model.safetensors").is_file()
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr  # really DDP, not two lone runs
