"""`mentalglm backbone`: train the backbone tier (one LoRA adapter on the embedded 0.5B, one head per task).

    OMP_NUM_THREADS=2 mentalglm backbone train --out runs/backbone  # ~75 min on 2 quiet cores; rerun to resume
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from mentalglm.console import make_console
from mentalglm.errors import ConfigError
from mentalglm.seeds import DEFAULT_SEED

console = make_console(stderr=True)
app = typer.Typer(help="The backbone tier: one LoRA adapter on the embedded Qwen 0.5B shared by all tasks, "
                       "one small head per task.", no_args_is_help=True)

DEFAULT_OUT = Path("runs/backbone")


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"--task-weights {text!r}: give numbers separated by commas, e.g. 0.5,0.35,0.15") from exc


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints, validation log, best/ and final/.")] = DEFAULT_OUT,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
    steps: Annotated[int, typer.Option(help="Training steps (one task's batch each).")] = 1500,
    stop_after: Annotated[int | None, typer.Option(help="Stop this call after N steps (checkpointed): for a "
                                                        "session with a deadline; rerun to go on.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: $OMP_NUM_THREADS or all cores).")] = None,
    base: Annotated[str, typer.Option(help="Base model: embedded:<name>, or a local transformers directory.")]
    = "embedded:qwen2.5-0.5b",
    layers: Annotated[int, typer.Option(help="Keep only the base's first N decoder layers: N/total of the compute; "
                                             "0 keeps them all.")] = 12,
    task_weights: Annotated[str | None, typer.Option(help="Share of steps per task, comma-separated in task order "
                                                          "(default 0.5,0.35,0.15).")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start the adapter and heads from a saved backbone (a run's "
                                                        "best/) instead of from scratch: train a finished run on, "
                                                        "with a fresh schedule.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the task draws, the posts' order and dropout; give a run "
                                           "trained on from another one's a new seed, so it reads its posts in "
                                           "another order.")] = DEFAULT_SEED,
) -> None:
    """Train, or resume, the backbone; a finished run is reported, not retrained."""
    import torch
    from tqdm import tqdm

    from mentalglm.train.backbone import DONE_FILE, BackboneSettings, backbone_data, train_backbone

    if threads or os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(threads or int(os.environ["OMP_NUM_THREADS"]))
    weights = {} if task_weights is None else {"task_weights": _weights(task_weights)}
    settings = BackboneSettings(base=base, steps=steps, layers=layers or None, seed=seed, **weights)
    cut = f" (first {layers} layers)" if layers else ""
    console.print(f"backbone: {base}{cut} + LoRA r={settings.lora_rank}, heads for {', '.join(settings.tasks)} "
                  f"(step shares {', '.join(f'{w:g}' for w in settings.task_weights)}); "
                  f"{steps} steps of {settings.batch_size} posts in {out} (resumable)"
                  + (f"; adapter and heads start from {init_from}" if init_from else ""))
    data = backbone_data(settings.tasks, data_dir)
    for task_data in data:
        console.print(f"  {task_data.task.id}: {len(task_data.train)} training / {len(task_data.validation)} "
                      "validation posts")
    with tqdm(total=steps, desc="backbone", unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(step: int, total: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()

        final = train_backbone(data, settings, out, progress=progress, stop_after=stop_after, init_from=init_from)
    if (out / DONE_FILE).exists():
        console.print(f"[green]done[/green]: {final}")
    else:
        console.print(f"stopped at a checkpoint in {out}; rerun the same command to go on")


@app.command()
def export(
    backbone: Annotated[Path, typer.Option(help="A saved backbone (a run's final/ or best/).")],
    gguf_type: Annotated[str, typer.Option(help="GGUF tensor type: f32, f16, bf16 or q8_0.")] = "q8_0",
    data_dir: Annotated[Path | None, typer.Option(help="Data directory: validation posts for the check.")] = None,
    check_posts: Annotated[int, typer.Option(help="Validation posts per task read by both engines.")] = 50,
) -> None:
    """Merge the adapter into the base (``merged/``, which the torch engines start from in seconds), convert it
    to GGUF for llama.cpp, and check that the faster engines (llama.cpp, torch int8) give the heads the same labels
    as transformers float32 on validation posts (recorded in backbone.json; ``auto`` reads only with a close one)."""
    from mentalglm.train.backbone import backbone_data
    from mentalglm.train.backbone_model import check_engines, export_gguf, read_backbone_meta

    meta = read_backbone_meta(backbone)
    path = export_gguf(backbone, gguf_type)
    console.print(f"[green]GGUF[/green] {path}")
    data = backbone_data(list(meta["tasks"]), data_dir)
    texts = {d.task.id: [p.text for p in d.validation[:check_posts]] for d in data}
    for name, record in check_engines(backbone, path, texts).items():
        console.print(f"{name} against transformers float32 on {record['posts']} validation posts: pooled cosine "
                      f"min {record['cosine_min']:.4f}, same labels {record['same_labels']:.1%}, largest "
                      f"probability gap {record['max_probability_gap']:.3f}")


@app.command()
def explainer(
    backbone: Annotated[Path, typer.Option(help="A saved backbone (a run's best/, or an analyzer's backbone/).")],
    adapter: Annotated[Path, typer.Option(help="The explainer's SFT adapter, trained above this backbone's adapter "
                                               "(configs/cpu-backbone-explainer.yaml: <output_dir>/explainer/adapter).")],
    gguf_type: Annotated[str, typer.Option(help="GGUF tensor type: f32, f16, bf16 or q8_0.")] = "q8_0",
) -> None:
    """Put the explaining half beside the heads: merge the explainer adapter into the base, convert it to GGUF and
    record it in backbone.json. An analyzer on this backbone then explains with it where `--backend` is left at
    llamacpp:default (`llamacpp:qwen2.5-0.5b` still names the untuned model)."""
    from mentalglm.train.backbone_model import attach_explainer

    backbone, adapter = backbone.expanduser(), adapter.expanduser()
    path = attach_explainer(backbone, adapter, gguf_type)
    console.print(f"[green]explainer[/green] {path} ({path.stat().st_size / 1e6:.0f} MB), recorded in "
                  f"{backbone / 'backbone.json'}")


@app.command()
def card(
    backbone: Annotated[Path, typer.Option(help="A saved backbone (a run's best/ or final/); README.md is written "
                                                "into it.")],
    results_dir: Annotated[Path | None, typer.Option(help="Where `analyze-train --results-dir` wrote the test "
                                                          "results (left out: test is marked not scored).")] = None,
    bench: Annotated[Path | None, typer.Option(help="benchmarks/bench_backbone.py's JSON (speed).")] = None,
    explanations: Annotated[Path | None, typer.Option(help="benchmarks/hybrid_explanations.py's JSON for the "
                                                           "tuned explainer.")] = None,
    analyzer: Annotated[Path | None, typer.Option(help="The analyzer trained on this backbone (`analyze-train "
                                                       "--out`): which heads it kept.")] = None,
) -> None:
    """Write the model card (Hugging Face README.md) from what was measured: every number comes from a file."""
    from mentalglm.train.backbone_card import CardSources, write_card

    for option, path in (("--results-dir", results_dir), ("--bench", bench), ("--explanations", explanations),
                         ("--analyzer", analyzer)):
        if path is not None and not path.expanduser().exists():
            raise ConfigError(f"{option} {path}: not found")
    sources = CardSources(*(p.expanduser() if p else None for p in (backbone, results_dir, bench, explanations,
                                                                      analyzer)))  # type: ignore[arg-type]
    path = write_card(sources)
    console.print(f"[green]model card[/green] {path}")
    for part in sources.missing:
        console.print(f"[yellow]not on the card[/yellow]: {part} (not found in {results_dir})")
