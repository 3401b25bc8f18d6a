"""Every app a serve test builds resumes batch jobs from its jobs folder at startup: never the user's real one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_jobs_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MENTALGLM_JOBS_DIR", str(tmp_path / "jobs"))
