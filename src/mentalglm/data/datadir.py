"""Where the user's data directory is, and a clear error when something in it is missing."""

from __future__ import annotations

import os
from pathlib import Path

from mentalglm.errors import MissingDataError

ENV_VAR = "MENTALGLM_DATA_DIR"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """``--data-dir`` wins over ``$MENTALGLM_DATA_DIR``; there is no silent default location."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    if not chosen:
        raise MissingDataError(
            "data directory", "--data-dir / $" + ENV_VAR,
            f"pass --data-dir DIR or set {ENV_VAR}; see docs/data.md for what it should hold",
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise MissingDataError("data directory", path, f"check --data-dir or ${ENV_VAR}")
    return path


def require_file(data_dir: Path, relative: str, dataset: str) -> Path:
    path = data_dir / relative
    if not path.is_file():
        raise MissingDataError(
            f"file {relative!r} of dataset {dataset}", data_dir,
            f"get it from the public source listed by `mentalglm data sources {dataset}`",
        )
    return path
