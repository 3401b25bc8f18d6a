"""Errors that carry what a user needs to fix the problem: the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path


class MentalGLMError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class MissingDataError(MentalGLMError):
    def __init__(self, what: str, looked_in: Path | str, fix: str = "") -> None:
        self.what, self.looked_in = what, Path(looked_in)
        message = f"missing {what}: looked for it in {looked_in}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class BadRowError(MentalGLMError):
    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = Path(path), line, reason
        super().__init__(f"{path}:{line}: {reason} (pass --skip-bad-rows to skip and count such rows)")


class ChecksumMismatchError(MentalGLMError):
    def __init__(self, path: Path | str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: SHA-256 is {actual[:16]}..., expected {expected[:16]}... — the file differs from the public "
            "source the loader was written for; restore the original file or pass --no-verify to read it anyway"
        )


class ConfigError(MentalGLMError):
    """A configuration key, value or path is wrong; raised before any expensive work starts."""
