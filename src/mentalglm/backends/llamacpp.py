"""llama.cpp on CPU: the embedded default engine (0.5B Q4: load ~0.5 s, ~35 tok/s decode on 2 idle cores).

The GGUF's own chat template is used (`create_chat_completion`), so prompts match what the model was trained
on. A prompt that does not fit the context is a recorded failure: silently truncating a post would change the
label it gets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from mentalglm.backends.base import Backend, BackendError, GenerationRequest, GenerationResult
from mentalglm.backends.copy_guard import CopyGuard, first_character_index
from mentalglm.backends.weights import DEFAULT_MODEL, ensure_default_model, models_cache_dir, resolve_weights
from mentalglm.errors import ConfigError

INSTALL_HINT = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python==0.3.36'


def default_threads() -> int:
    """$MENTALGLM_THREADS, else every core this process may use.

    llama.cpp's threads spin-wait on each other, so more threads than free cores is catastrophic
    (measured on 2 cores with one taken by another process: 2 threads 0.4 tok/s, 1 thread 16 tok/s).
    The load average is not a usable guide: it counts this process's own recent work, and picked
    one thread on an idle 2-core machine, halving throughput. Set MENTALGLM_THREADS on a shared machine.
    """
    override = os.environ.get("MENTALGLM_THREADS")
    if override:
        return max(1, int(override))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LlamaCppBackend(Backend):
    """`model` is a .gguf path, `default`, or an embedded model name (`qwen2.5-0.5b`, `qwen2.5-1.5b`).

    `reuse_prompt_cache=True` keeps the KV of the previous prompt's shared prefix (faster few-shot batches), at
    the cost of bit-exact reproducibility between a request run alone and inside a batch.
    """

    name = "llamacpp"
    supports_grammar = True

    def __init__(
        self,
        model: str = "default",
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        cache_dir: str | None = None,
        reuse_prompt_cache: bool = False,
        verbose: bool = False,
    ) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise BackendError(f"the llamacpp backend needs llama-cpp-python; install it with: {INSTALL_HINT}") from exc
        self.model_path, self._model_id = self._resolve(model, cache_dir)
        self.n_ctx = n_ctx
        self.reuse_prompt_cache = reuse_prompt_cache
        self.n_threads = n_threads or default_threads()
        start = time.perf_counter()
        self.llama = llama_cpp.Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_batch=min(n_batch, n_ctx),
            n_gpu_layers=n_gpu_layers,
            verbose=verbose,
        )
        self.load_time_s = time.perf_counter() - start
        self._index: dict[str, np.ndarray] | None = None

    @staticmethod
    def _resolve(model: str, cache_dir: str | None) -> tuple[Path, str]:
        path = Path(model).expanduser()
        if path.is_file():
            return path, f"llamacpp:{path.name}:{path.stat().st_size}"
        if path.suffix == ".gguf" or os.sep in model:
            raise ConfigError(f"GGUF file not found: {path} (or use llamacpp:default for the embedded model)")
        weights = resolve_weights(DEFAULT_MODEL if model == "default" else model)  # did-you-mean on a typo
        path = ensure_default_model(weights.name, models_cache_dir(cache_dir))
        return path, f"llamacpp:{weights.name}@{weights.sha256[:12]}"

    def _token_index(self) -> dict[str, np.ndarray]:
        """Token ids by first character, for the copy guard (built once, ~0.5 s for Qwen's 152k tokens)."""
        if self._index is None:
            self._index = first_character_index([self.llama.detokenize([t]) for t in range(self.llama.n_vocab())])
        return self._index

    @property
    def model_id(self) -> str:
        return self._model_id

    def close(self) -> None:
        self.llama.close()

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        kwargs: dict[str, Any] = {
            **request.chat_params(),
            "stop": list(request.settings.stop) or None,
            # Plain temperature + top_p, as on the other engines (llama-cpp-python adds top_k=40, min_p=0.05).
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
        }
        if request.settings.grammar is not None:
            from llama_cpp import LlamaGrammar

            kwargs["grammar"] = LlamaGrammar.from_string(request.settings.grammar, verbose=False)
        if request.settings.avoid_copying:
            from llama_cpp import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([CopyGuard(request.settings.avoid_copying).processor(
                self._token_index(), lambda ids: self.llama.detokenize(ids).decode("utf-8", errors="ignore"))])
        if not self.reuse_prompt_cache:
            self.llama.reset()  # reusing a shared prompt prefix's KV changes the floats, and seeded samples with them
        try:
            response = cast(dict[str, Any], self.llama.create_chat_completion(**kwargs))  # not streamed
        except ValueError as exc:
            if "context window" in str(exc):
                return GenerationResult.failure(
                    f"context overflow: {exc} (n_ctx={self.n_ctx}; raise n_ctx or shorten the input — "
                    "inputs are never truncated silently)"
                )
            raise
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        return GenerationResult(
            choice["message"]["content"] or "",
            "length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )
