"""transformers engine: any local checkpoint or hub id, batched left-padded generation, GPU when present.

This is the engine for fine-tuned checkpoints (merged LoRA, MentalGLM exports) and for GPUs. Decoding uses only
the request's settings, not the checkpoint's `generation_config` sampling defaults (Qwen ships a repetition
penalty and top_k), so the same settings mean the same thing on every engine.
"""

from __future__ import annotations

import os
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mentalglm.backends.base import (
    Backend,
    BackendError,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    GenerationSettings,
    apply_stop,
)
from mentalglm.backends.weights import DEFAULT_MODEL, MODELS, ensure_default_model

DTYPES = ("auto", "float32", "bfloat16", "float16")


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick probe: without it, an offline machine spends ~50 s in hub retries before failing."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _load(source: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Tokenizer and model from a local path, the local hub cache, or the hub (when it can be reached)."""
    import transformers

    def load(**extra: Any) -> tuple[Any, Any]:
        model_kwargs = {**kwargs, **extra}
        tokenizer_kwargs = {k: v for k, v in model_kwargs.items() if k != "dtype"}
        return (
            transformers.AutoTokenizer.from_pretrained(source, **tokenizer_kwargs),
            transformers.AutoModelForCausalLM.from_pretrained(source, **model_kwargs),
        )

    if Path(source).expanduser().exists():
        try:
            return load()
        except (OSError, ValueError) as exc:
            raise BackendError(f"could not load the model in {source}: {exc}") from exc
    try:
        return load(local_files_only=True)
    except (OSError, ValueError):
        pass
    offline = (
        f"could not load {source!r}: it is not a local path, it is not in the local hub cache, and the model hub "
        "cannot be reached from here. Download it where a hub is reachable and pass the local directory: "
        "hf:/path/to/model"
    )
    if not hub_reachable():
        raise BackendError(offline)
    try:
        return load()
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not load {source!r} from the model hub ({exc}); or pass hf:/path/to/model") from exc


class HFBackend(Backend):
    """`model` is a local directory, a hub id, or `default` / an embedded name (the GGUF, dequantised: slow)."""

    name = "hf"

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 8,
        gguf_file: str | None = None,
        max_context: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise BackendError("the hf backend needs torch and transformers: pip install 'mentalglm[train]'") from exc
        if dtype not in DTYPES:
            raise BackendError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self._model_id = f"hf:{model}" + (f":{gguf_file}" if gguf_file else "")
        source = model
        if model == "default" or model in MODELS:
            path = ensure_default_model(DEFAULT_MODEL if model == "default" else model)
            source, gguf_file = str(path.parent), path.name
        self.device = pick_device(device)
        self.batch_size = max(1, batch_size)
        start = time.perf_counter()
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        self.tokenizer, self.model = _load(source, kwargs)
        self.model.to(self.device).eval()
        self.load_time_s = time.perf_counter() - start
        if not self.tokenizer.chat_template:
            raise BackendError(f"the tokenizer of {source} has no chat template; use a chat/instruct checkpoint")
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_context = max_context or int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        self._eos_ids = self._collect_eos_ids()

    def _collect_eos_ids(self) -> list[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(ids))

    @property
    def model_id(self) -> str:
        return self._model_id

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        return self._generate_batch([request])[0]

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Batch requests that share settings; a failed batch is retried one by one to isolate the cause."""
        results: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[GenerationSettings, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[request.settings].append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                try:
                    batch = self._generate_batch([requests[i] for i in chunk])
                except Exception:  # one by one, so each failure is recorded against its own request
                    batch = [self._guarded(requests[i]) for i in chunk]
                for i, result in zip(chunk, batch, strict=True):
                    results[i] = result
        return [r for r in results if r is not None]

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        import torch
        from transformers import GenerationConfig

        start = time.perf_counter()
        texts = [
            self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            for r in requests
        ]
        lengths = [len(self.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]) for t in texts]
        results: list[GenerationResult | None] = [None] * len(requests)
        keep = []
        for i, n in enumerate(lengths):
            if self.max_context and n >= self.max_context:
                results[i] = GenerationResult.failure(
                    f"context overflow: the prompt has {n} tokens, the model's context is {self.max_context} "
                    "(inputs are never truncated silently)",
                    prompt_tokens=n,
                )
            else:
                keep.append(i)
        if keep:
            settings = requests[keep[0]].settings
            encoded = self.tokenizer(
                [texts[i] for i in keep], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            sampling = {} if settings.greedy else {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
            config = GenerationConfig(
                max_new_tokens=settings.max_new_tokens,
                do_sample=not settings.greedy,
                repetition_penalty=1.0,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self._eos_ids,
                stop_strings=list(settings.stop) or None,
                **sampling,
            )
            if not settings.greedy and settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                output = self.model.generate(**encoded, generation_config=config, tokenizer=self.tokenizer)
            new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
            latency = time.perf_counter() - start
            for row, i in zip(new_tokens, keep, strict=True):
                results[i] = self._decode(row, settings, lengths[i], latency)
        return [r for r in results if r is not None]

    def _decode(self, row: list[int], settings: GenerationSettings, prompt_tokens: int, latency: float) -> GenerationResult:
        ends = set(self._eos_ids) | {self.tokenizer.pad_token_id}
        end = next((j for j, token in enumerate(row) if token in ends), None)
        tokens = row if end is None else row[: end + 1]
        text, stopped = apply_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), settings.stop)
        finish: FinishReason = "stop" if end is not None or stopped else "length"
        return GenerationResult(text, finish, prompt_tokens, len(tokens), latency)
