"""`mentalglm serve`: the HTTP service under uvicorn.

The classifiers are loaded before the server starts, so missing artifacts are one clear error line (naming
`mentalglm analyze-train`) instead of a server that never becomes ready; the LLM loads in the background
while /healthz already answers and /readyz says 503. FastAPI and uvicorn are imported only here, so the rest
of the CLI works without the `serve` extra.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from mentalglm.backends.openai_compat import is_loopback_host
from mentalglm.console import comma_list, make_console
from mentalglm.errors import ConfigError
from mentalglm.serve.settings import DEFAULT_API_KEY_ENV, ServeSettings, help_for

err_console = make_console(stderr=True)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _default(name: str) -> Any:
    return ServeSettings.model_fields[name].default


def serve(
    host: Annotated[str, typer.Option(help=help_for("host"))] = _default("host"),
    port: Annotated[int, typer.Option(help=help_for("port"))] = _default("port"),
    engine: Annotated[str, typer.Option(help=help_for("engine"))] = _default("engine"),
    backend: Annotated[str, typer.Option(help=help_for("backend"))] = _default("backend"),
    artifacts_dir: Annotated[Path | None, typer.Option(help=help_for("artifacts_dir"))] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated task ids the service analyses.")] = ",".join(
        _default("tasks")),
    explain: Annotated[bool, typer.Option("--explain/--no-explain", help=help_for("explain"))] = _default("explain"),
    locale: Annotated[str, typer.Option(help=help_for("locale"))] = _default("locale"),
    max_chars: Annotated[int, typer.Option(help=help_for("max_chars"))] = _default("max_chars"),
    max_posts: Annotated[int, typer.Option(help=help_for("max_posts"))] = _default("max_posts"),
    max_body_bytes: Annotated[int, typer.Option(help=help_for("max_body_bytes"))] = _default("max_body_bytes"),
    max_batch: Annotated[int, typer.Option(help=help_for("max_batch"))] = _default("max_batch"),
    batch_wait_ms: Annotated[float, typer.Option(help=help_for("batch_wait_ms"))] = _default("batch_wait_ms"),
    max_queue: Annotated[int, typer.Option(help=help_for("max_queue"))] = _default("max_queue"),
    chat_max_tokens: Annotated[int, typer.Option(help=help_for("chat_max_tokens"))] = _default("chat_max_tokens"),
    api_key_env: Annotated[str, typer.Option(help=help_for("api_key_env"))] = DEFAULT_API_KEY_ENV,
    log_posts: Annotated[bool, typer.Option("--log-posts", help=help_for("log_posts"))] = False,
    chat_raw_model: Annotated[bool, typer.Option("--chat-raw-model", help=help_for("chat_raw_model"))] = False,
    jobs_dir: Annotated[Path | None, typer.Option(help=help_for("jobs_dir"))] = None,
    jobs_max_bytes: Annotated[int | None, typer.Option(help=help_for("jobs_max_bytes"))] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve the analyzer over HTTP: /v1/analyze, /v1/tasks, OpenAI-compatible /v1/chat/completions, the web page."""
    settings = ServeSettings.build(
        host=host, port=port, engine=engine, backend=backend, artifacts_dir=artifacts_dir, tasks=tuple(comma_list(tasks)),
        explain=explain, locale=locale, max_chars=max_chars, max_posts=max_posts, max_body_bytes=max_body_bytes,
        max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_queue=max_queue, chat_max_tokens=chat_max_tokens,
        chat_raw_model=chat_raw_model, api_key_env=api_key_env, log_posts=log_posts, jobs_dir=jobs_dir, jobs_max_bytes=jobs_max_bytes)
    if api_key_env != DEFAULT_API_KEY_ENV and not os.environ.get(api_key_env):
        raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is not set (or empty); "
                          "export it or leave the option out to serve without a key")
    try:
        import uvicorn

        from mentalglm.serve.app import create_app
        from mentalglm.serve.service import build_analyzer
    except ImportError as exc:
        raise ConfigError(f"mentalglm serve needs the serve extra ({exc}); pip install 'mentalglm[serve]'") from None
    analyzer = build_analyzer(settings)  # missing classifiers: MissingDataError naming analyze-train
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    if settings.api_key() is None and not is_loopback_host(host):
        err_console.print(f"[yellow]warning: serving on {host} without an API key; set ${api_key_env}[/yellow]")
    if log_posts:
        err_console.print("[yellow]--log-posts: raw post text goes to the log; do not keep such logs[/yellow]")
    uvicorn.run(create_app(settings, analyzer), host=host, port=port, log_level=log_level.lower())
