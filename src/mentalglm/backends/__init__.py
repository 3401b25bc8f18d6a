"""One LLM interface for the whole project; engines load lazily through `create_backend`."""

from mentalglm.backends.base import (
    Backend,
    BackendError,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    Message,
    cache_key,
)
from mentalglm.backends.registry import (
    BackendConfig,
    UnknownBackendError,
    available_backends,
    create_backend,
    register_backend,
)
from mentalglm.backends.weights import ensure_default_model

__all__ = [
    "Backend",
    "BackendConfig",
    "BackendError",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationSettings",
    "Message",
    "UnknownBackendError",
    "available_backends",
    "cache_key",
    "create_backend",
    "ensure_default_model",
    "register_backend",
]
