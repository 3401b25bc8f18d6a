"""The HTTP service (`mentalglm serve`): FastAPI app, micro-batcher, OpenAI-compatible chat, settings.

`create_app` is imported lazily so that `import mentalglm.serve.settings` (the CLI) needs no FastAPI.
"""

from __future__ import annotations

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from mentalglm.serve.app import create_app

        return create_app
    if name == "ServeSettings":
        from mentalglm.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module 'mentalglm.serve' has no attribute {name!r}")
