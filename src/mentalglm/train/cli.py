"""`mentalglm train` and `mentalglm export`: thin commands over train.sft and train.export.

Run on a GPU (one process per GPU):
    accelerate launch --config_file configs/accelerate/ddp.yaml -m mentalglm.cli train --config configs/paper-glm4-9b-chat.yaml
Run on a CPU (a subset of the data, the embedded Qwen2.5-0.5B):
    OMP_NUM_THREADS=2 mentalglm train --config configs/cpu-qwen2.5-0.5b.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.console import make_console

console = make_console()


def train(
    config: Annotated[Path, typer.Option("--config", help="Run YAML (see configs/).")],
    max_steps: Annotated[int | None, typer.Option(help="Override max_steps for every stage (a quick try).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Validate the config and count samples; load no model.")] = False,
) -> None:
    """LoRA instruction tuning, stage after stage; an interrupted run resumes where it stopped."""
    from mentalglm.train.config import load_run_config
    from mentalglm.train.sft import plan, run_training

    overrides = {"max_steps": max_steps} if max_steps is not None else None
    run = load_run_config(config, overrides=overrides)
    table = Table(title=f"training plan ({config})")
    for column in ("stage", "datasets", "samples", "state", "output"):
        table.add_column(column)
    for row in plan(run):
        table.add_row(*(str(row[c]) for c in ("stage", "datasets", "samples", "state", "output")))
    console.print(table)
    console.print(f"model {run.model.name_or_path}" + (f" ({run.model.gguf_file})" if run.model.gguf_file else "")
                  + (f" with {run.model.base_adapter} folded in" if run.model.base_adapter else "")
                  + f", LoRA r={run.lora.lora_r} alpha={run.lora.lora_alpha} on {run.lora.target_modules}"
                  + (f" of layers {run.lora.layers_to_transform}" if run.lora.layers_to_transform else ""))
    if dry_run:
        console.print("[green]config is valid[/green] (dry run: no model loaded)")
        return
    adapters = run_training(run, max_steps=max_steps)
    console.print(f"[green]done[/green]: final adapter {adapters[-1]}")


def export(
    adapter: Annotated[Path, typer.Option(help="Adapter directory (<output_dir>/<stage>/adapter).")],
    out: Annotated[Path, typer.Option(help="Directory for the merged safetensors weights and tokenizer.")],
    gguf: Annotated[bool, typer.Option(help="Also convert to GGUF with llama.cpp's convert_hf_to_gguf.py (fetched "
                                                 "once from llama-cpp-python's sdist when not configured).")] = False,
    gguf_type: Annotated[str, typer.Option(help="GGUF tensor type: f32, f16, bf16, q8_0 or auto.")] = "bf16",
    base: Annotated[str | None, typer.Option(help="Base model, when it moved since training.")] = None,
    dtype: Annotated[str | None, typer.Option(help="dtype for the merged weights (default: training's).")] = None,
) -> None:
    """Merge a LoRA adapter into full weights (safetensors), optionally converted to GGUF."""
    from mentalglm.train.export import convert_to_gguf, find_converter, merge_adapter

    if gguf:
        converter = find_converter(fetch=True)  # fail before the slow merge when there is none to be had
        console.print(f"GGUF converter: {converter}")
    merged = merge_adapter(adapter, out, base=base, dtype=dtype)
    console.print(f"[green]merged[/green] weights in {merged}")
    if gguf:
        path = convert_to_gguf(merged, out / f"model-{gguf_type}.gguf", gguf_type)
        console.print(f"[green]GGUF[/green] {path}")
