"""Settings of `mentalglm serve`: one typed, validated object shared by the CLI, the app and its tests.

Each field carries its help text, and the CLI reads its option help from here, so the two never drift.
The API key itself is never a field: it is read from the environment variable the settings name, so it
cannot end up in a config dump, a log line or a repr.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mentalglm.analyze.engine import DEFAULT_BACKEND, DEFAULT_ENGINE, DEFAULT_MAX_CHARS
from mentalglm.analyze.safety import DEFAULT_LOCALE
from mentalglm.analyze.schema import EngineName
from mentalglm.errors import ConfigError
from mentalglm.serve.schemas import Locale
from mentalglm.tasks import CHINESE_MAIN_TASKS, get_task

DEFAULT_API_KEY_ENV = "MENTALGLM_API_KEY"


class ServeSettings(BaseModel):
    """What the service runs and the limits it enforces; every field is also a `mentalglm serve` option."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to bind; use 0.0.0.0 only behind a proxy and with an API key.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port.")
    engine: EngineName = Field(default=DEFAULT_ENGINE,
                              description="attribution | hybrid | labels | llm (see docs/analyze.md).")
    backend: str = Field(default=DEFAULT_BACKEND, description="LLM backend spec for explanations and /v1/chat/completions "
                         "(llamacpp:default: the embedded 0.5B, or the explainer of the analyzer's backbone).")
    artifacts_dir: Path | None = Field(default=None, description="Trained classifiers (mentalglm analyze-train --out).")
    tasks: tuple[str, ...] = Field(default=CHINESE_MAIN_TASKS, min_length=1, description="Task ids the service analyses.")
    explain: bool = Field(default=True,
                          description="Default of a request's `explain` (attribution, hybrid and llm engines).")
    locale: Locale = Field(default=DEFAULT_LOCALE, description="Default crisis-resources locale of a request: zh-CN or en.")
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, ge=1, description="Longest post accepted; longer posts get an error record.")
    max_posts: int = Field(default=64, ge=1, description="Most posts in one /v1/analyze request (413 above).")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest request body in bytes (413 above).")
    max_batch: int = Field(default=16, ge=1, description="Posts the worker analyses together (micro-batch size).")
    batch_wait_ms: float = Field(default=10.0, ge=0, description="How long the worker waits for more requests to fill a batch.")
    max_queue: int = Field(default=256, ge=1, description="Posts waiting or in progress; beyond it requests get 503 + Retry-After.")
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After seconds sent with a queue-full 503.")
    shutdown_timeout_s: float = Field(default=30.0, ge=0, description="On shutdown, how long queued work may still finish.")
    chat_max_tokens: int = Field(default=512, ge=1, description="Largest max_tokens a /v1/chat/completions request may ask for.")
    chat_raw_model: bool = Field(default=False, description="Also serve the raw base LLM on /v1/chat/completions under "
                                 "its backend spec as model id (the analyzer still adds crisis resources on high risk). "
                                 "Off: only the model `mentalglm`, which answers with the analyzer.")
    api_key_env: str = Field(default=DEFAULT_API_KEY_ENV, min_length=1,
                             description="Environment variable holding the API key; when it is set, /v1 needs "
                                         "`Authorization: Bearer KEY` or `X-API-Key: KEY`.")
    log_posts: bool = Field(default=False, description="Log raw post and chat text (off: only ids, lengths, latencies).")
    jobs_dir: Path | None = Field(default=None, description="Where batch jobs keep their files (default $MENTALGLM_JOBS_DIR "
                                                    "or ~/.cache/mentalglm/jobs).")
    jobs_max_bytes: int | None = Field(default=None, ge=1024, description="Largest batch-job upload in bytes (default: the "
                                                                  "jobs module's, 64 MiB).")

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        for task in tasks:
            try:
                get_task(task)
            except KeyError as exc:  # the registry's did-you-mean message, as a validation error
                raise ValueError(str(exc)) from None
        return tasks

    @model_validator(mode="after")
    def _posts_fit_the_queue(self) -> ServeSettings:
        if self.max_posts > self.max_queue:
            raise ValueError(f"max_posts ({self.max_posts}) must not exceed max_queue ({self.max_queue}): "
                             "such a request could never be queued")
        return self

    def api_key(self) -> str | None:
        """The key from the environment, read when the app is created; None means no authentication."""
        return os.environ.get(self.api_key_env) or None

    @classmethod
    def build(cls, **values: object) -> ServeSettings:
        """Settings from CLI values, with pydantic's errors turned into one ConfigError line naming the option."""
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                ("--" + "-".join(map(str, e["loc"])).replace("_", "-") + ": " if e["loc"] else "")
                + e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(f"invalid serve settings: {problems}") from None


def help_for(name: str) -> str:
    """The help text of a settings field, for the CLI options."""
    return ServeSettings.model_fields[name].description or ""
