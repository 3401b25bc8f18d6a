"""cognitive_pathway through the HTTP API and the web page: the same result schema as the CLI, offsets only."""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tiny_analyzer import PATHWAY_POST, TASKS, fit_pathway_model, tiny_models

from mentalglm.analyze.engine import Analyzer
from mentalglm.serve.app import create_app
from mentalglm.serve.settings import ServeSettings

PATHWAY = "cognitive_pathway"
SERVED = (*TASKS, PATHWAY)


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> Analyzer:
    model_dir = fit_pathway_model(tmp_path_factory.mktemp("pathway"))
    return Analyzer(SERVED, "labels", artifacts_dir=model_dir, models=tiny_models())


def test_the_api_returns_sentences_and_the_pathway_without_the_post(analyzer: Analyzer, monkeypatch) -> None:
    monkeypatch.delenv("MENTALGLM_API_KEY", raising=False)
    with TestClient(create_app(ServeSettings(tasks=SERVED, engine="labels"), analyzer=analyzer)) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = client.post("/v1/analyze", json={"posts": [{"id": "p1", "text": PATHWAY_POST}], "tasks": [PATHWAY]})
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert list(result["tasks"]) == [PATHWAY]
        expected = analyzer.analyze(PATHWAY_POST).tasks[PATHWAY]
        got = result["tasks"][PATHWAY]
        assert got["sentences"] == [s.model_dump() for s in expected.sentences]
        assert [stage["sentences"] for stage in got["pathway"]] == [[1], [2], [3], [4]]
        assert "室友" not in response.text  # offsets, never the text
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert {"PathwaySentence", "PathwayPart", "PathwayStage"} <= set(schema)
        listed = [task["id"] for task in client.get("/v1/tasks").json()["tasks"]]
        assert PATHWAY in listed


CHROMIUM = os.environ.get("MENTALGLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.slow
def test_the_web_page_shows_the_pathway_and_downloads_it(analyzer: Analyzer, tmp_path: Path) -> None:
    if not CHROMIUM:
        pytest.skip("no Chromium: `apt-get install -y chromium` or set MENTALGLM_CHROMIUM (docs/serve-web.md)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright==1.65.2 (docs/serve-web.md)")
    from test_web import serving  # the same uvicorn-in-a-thread helper as the other page tests

    expect = sync_api.expect
    with serving(create_app(ServeSettings(tasks=SERVED, engine="labels"), analyzer=analyzer)) as url, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"])
        page = browser.new_context(accept_downloads=True, locale="zh-CN").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        expect(page.locator(f"#task-{PATHWAY}")).to_be_checked()
        page.fill("#posts-text", PATHWAY_POST)
        page.click("#run")
        section = page.locator(f"[data-task={PATHWAY}]")
        stages = section.locator(".pathway-stage")
        expect(stages).to_have_count(4)
        expect(stages.nth(0)).to_contain_text("触发性事件 · 人际冲突")
        expect(stages.nth(0)).to_contain_text("第 1 句")
        expect(stages.nth(3).locator(".stage-name")).to_have_text("驳斥 · 有效驳斥")
        sentences = section.locator(".pathway-sentence")
        expect(sentences).to_have_count(4)
        expect(sentences.nth(1).locator(".sentence-text")).to_have_text("我觉得他们肯定都在背后笑话我！")
        expect(sentences.nth(1).locator(".pathway-part")).to_contain_text("认知歪曲 · 读心术")
        page.click("#lang-toggle")
        expect(stages.nth(1).locator(".stage-name")).to_contain_text("cognitive distortion")
        with page.expect_download() as download:
            page.click("#download-csv")
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
        pathway = next(r for r in rows if r["task"] == PATHWAY)
        assert pathway["pathway_sentences"].startswith("1[0-11]:触发性事件;触发性事件##人际冲突")
        assert "室友" not in Path(download.value.path()).read_text(encoding="utf-8-sig")
        browser.close()
        assert not errors, errors
