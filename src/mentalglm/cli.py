"""The one `mentalglm` command. Each area owns its sub-app; this file only mounts them."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mentalglm.console import make_console
from mentalglm.errors import MentalGLMError

app = typer.Typer(
    name="mentalglm",
    help="Explainable mental-health analysis of Chinese social-media posts with LLMs. "
    "Outputs are decision support, not a diagnosis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = make_console()
err_console = make_console(stderr=True)

# (sub-app name, module with a typer `app`); mounted lazily so `mentalglm --help` stays fast.
_SUB_APPS = {
    "backbone": "mentalglm.train.backbone_cli",
    "data": "mentalglm.data.cli",
    "instruct": "mentalglm.instruct.cli",
    "pathway": "mentalglm.evaluate.pathway_cli",
    "tasks": "mentalglm.tasks.cli",
    "validate": "mentalglm.instruct.validate_cli",
}
for _name, _module in _SUB_APPS.items():
    try:
        app.add_typer(importlib.import_module(_module).app, name=_name)
    except ImportError as exc:  # a half-installed optional area must not break the rest of the CLI
        err_console.print(f"[yellow]mentalglm {_name} unavailable: {exc}[/yellow]")

from mentalglm.instruct import build_cli as _build_cli  # noqa: E402  (top-level commands of the builder)

app.command("build")(_build_cli.build)
app.command("qc")(_build_cli.qc)

from mentalglm.evaluate import cli as _evaluate_cli  # noqa: E402  (predictions, scores, baselines, report)

for _command in ("predict", "evaluate", "baseline", "report"):
    app.command(_command)(getattr(_evaluate_cli, _command))

from mentalglm.train import cli as _train_cli  # noqa: E402  (LoRA SFT and adapter export)

app.command("train")(_train_cli.train)
app.command("export")(_train_cli.export)

from mentalglm.analyze import cli as _analyze_cli  # noqa: E402  (the analyzer and its classifiers)

app.command("analyze")(_analyze_cli.analyze)
app.command("analyze-train")(_analyze_cli.analyze_train)
app.command("faithfulness")(importlib.import_module("mentalglm.analyze.faithfulness_cli").faithfulness)
app.command("serve")(importlib.import_module("mentalglm.serve.cli").serve)  # the HTTP service (FastAPI)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@app.command()
def env(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (default: $MENTALGLM_DATA_DIR).")] = None,
) -> None:
    """Print versions, the data directory and which datasets and models are available."""
    table = Table(title="mentalglm environment", show_header=False)
    table.add_row("mentalglm", _version("mentalglm"))
    table.add_row("python", f"{sys.version.split()[0]} ({platform.machine()}, {platform.system()})")
    for dist in ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "scikit-learn",
                 "llama_cpp_python", "openai", "fastapi"):
        table.add_row(dist, _version(dist))
    try:
        from mentalglm.data.datadir import resolve_data_dir
        from mentalglm.data.registry import all_loaders

        root = resolve_data_dir(data_dir)
        present = [n for n, loader in all_loaders().items() if loader.folder and (root / loader.folder).is_dir()]
        missing = [n for n, loader in all_loaders().items() if loader.folder and not (root / loader.folder).is_dir()]
        table.add_row("data dir", str(root))
        table.add_row("datasets found", ", ".join(present) or "none")
        if missing:
            table.add_row("datasets missing", ", ".join(missing))
    except MentalGLMError as exc:
        table.add_row("data dir", f"[yellow]{exc}[/yellow]")
    try:
        from mentalglm.backends.weights import describe_models

        for name, status in describe_models().items():
            table.add_row(f"model {name}", status)
    except ImportError:
        table.add_row("models", "backends not installed")
    console.print(table)


def main() -> None:
    """Entry point: MentalGLM errors become one readable line and exit code 2, not a traceback."""
    try:
        app()
    except MentalGLMError as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, even in a narrow terminal
        sys.exit(2)


if __name__ == "__main__":
    main()
