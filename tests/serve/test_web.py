"""The web page in a real headless Chromium driven by Playwright, against the real app (`create_app`).

No browser download: Chromium is Debian's package (`apt-get install -y chromium`), found on PATH or through
$MENTALGLM_CHROMIUM, and Playwright only drives it (`pip install playwright==1.65.2`); see docs/serve-web.md.
Without either the module is skipped with the reason. The service runs with uvicorn on a free loopback port
and an Analyzer made of tiny classifiers and a scripted FakeBackend: no data directory, no model weights.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("MENTALGLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium: `apt-get install -y chromium` (Debian) or set MENTALGLM_CHROMIUM to a Chromium binary "
                "(docs/serve-web.md)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: "
                               "`pip install playwright==1.65.2` (docs/serve-web.md; no browser download needed)")
httpx = pytest.importorskip("httpx", reason="the serve extra is not installed: pip install -e '.[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")

from mentalglm.analyze.artifacts import TaskModel  # noqa: E402
from mentalglm.analyze.engine import Analyzer  # noqa: E402
from mentalglm.analyze.safety import CRISIS, NOT_A_DIAGNOSIS  # noqa: E402
from mentalglm.analyze.schema import ErrorRecord, PostResult  # noqa: E402
from mentalglm.backends.base import GenerationRequest  # noqa: E402
from mentalglm.backends.fake import FakeBackend  # noqa: E402
from mentalglm.serve.app import STATIC_DIR, create_app  # noqa: E402
from mentalglm.serve.settings import ServeSettings  # noqa: E402
from mentalglm.tasks import get_task  # noqa: E402

expect = sync_api.expect
expect.set_options(timeout=30_000)  # generous: CI machines have two busy cores
# Register `browser` in pyproject's markers and use it here; until then the test counts as slow.
pytestmark = [pytest.mark.browser, pytest.mark.slow]

from tiny_analyzer import HIGH, LOW, TASKS, tiny_models, with_domain_check  # noqa: E402

HIGH_POST = HIGH[0]
LOW_POST = "😊" + LOW[0]  # a character outside the BMP: offsets are code points in Python, UTF-16 units in JS
ENGLISH_POST = "I feel so tired of everything and nobody understands me"
KEY_ENV = "MENTALGLM_TEST_WEB_API_KEY"


@pytest.fixture(scope="module")
def models() -> dict[str, TaskModel]:
    return tiny_models()


def quoting(request: GenerationRequest) -> str:
    """A teacher that quotes the first six characters of the post it was given."""
    post = re.findall(r"帖子：“(.*?)”", request.messages[-1]["content"], re.S)[-1]
    return f"帖子中“{post[:6]}”这句话直接表达了发帖人当时的处境和感受，结合上下文来看，整体情绪和态度与所给标注的定义相符。"


@pytest.fixture(scope="module")
def expected(models) -> dict[str, PostResult]:
    """What the labels engine decides for the posts the tests paste (its own analyzer: the server's is busy)."""
    analyzer = Analyzer(TASKS, "labels", models=models)
    out = {text: analyzer.analyze(text) for text in (HIGH_POST, LOW_POST, ENGLISH_POST)}
    assert out[HIGH_POST].high_risk and not out[LOW_POST].high_risk, "the tiny classifiers changed: fix the posts"
    return out


@contextmanager
def serving(app) -> Iterator[str]:
    """The app under uvicorn in a thread, on a loopback port the OS picked; yields its URL once it is ready."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the test server at {url} did not become ready")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory) -> Iterator[None]:
    """Batch jobs (mounted by create_app when present) keep their files in a temporary directory."""
    saved = os.environ.get("MENTALGLM_JOBS_DIR")
    os.environ["MENTALGLM_JOBS_DIR"] = str(tmp_path_factory.mktemp("jobs"))
    yield
    if saved is None:
        os.environ.pop("MENTALGLM_JOBS_DIR", None)
    else:
        os.environ["MENTALGLM_JOBS_DIR"] = saved


@pytest.fixture(scope="module")
def base_url(models, jobs_dir) -> Iterator[str]:
    """The hybrid engine with a scripted teacher, so results carry explanations and evidence offsets."""
    os.environ.pop(KEY_ENV, None)
    analyzer = Analyzer(TASKS, "hybrid", backend=FakeBackend(responses=quoting), models=models)
    settings = ServeSettings(tasks=TASKS, engine="hybrid", api_key_env=KEY_ENV)
    with serving(create_app(settings, analyzer=analyzer)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    playwright = sync_api.sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-dev-shm-usage"])
    except Exception:
        playwright.stop()
        raise
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser):
    """A fresh page; uncaught script errors and Content-Security-Policy violations fail the test."""
    context = browser.new_context(accept_downloads=True, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    assert not problems, problems


def open_page(page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#task-emotion")).to_be_checked()  # the task list has loaded


def run(page, text: str, count: int) -> None:
    page.fill("#posts-text", text)
    page.click("#run")
    expect(page.locator("#result-list > li")).to_have_count(count)
    expect(page.locator("#run")).to_be_enabled()


def test_paste_renders_labels_bars_evidence_crisis_and_notices(page, base_url, expected):
    open_page(page, base_url)
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    expect(page.locator("#diagnosis-banner")).to_contain_text("决策支持，并非诊断")
    page.fill("#posts-text", "\n".join([HIGH_POST, LOW_POST, "", ENGLISH_POST]))
    page.focus("#run")
    page.keyboard.press("Enter")  # the form works from the keyboard
    cards = page.locator("#result-list > li")
    expect(cards).to_have_count(3)  # the blank line is skipped
    expect(page.locator("#results-heading")).to_be_focused()
    high, low, english = cards.nth(0), cards.nth(1), cards.nth(2)

    crisis = high.locator(".crisis")
    expect(crisis).to_be_visible()
    assert crisis.get_attribute("role") == "alert"
    expect(crisis).to_contain_text(CRISIS["zh-CN"][0])
    for contact in ("12356", "120", "110"):
        expect(crisis.locator(f"a[href='tel:{contact}']")).to_have_text(contact)
    expect(low.locator(".crisis")).to_have_count(0)
    expect(english.locator(".crisis")).to_have_count(0)

    emotion = expected[LOW_POST].tasks["emotion"].labels[0]
    decided = low.locator("[data-task=emotion] .labels:not(.all) .label")
    expect(decided).to_have_count(1)
    expect(decided.locator(".label-name")).to_have_text(emotion.name_zh)
    bar = decided.locator("[role=meter]")
    assert float(bar.get_attribute("aria-valuenow")) == pytest.approx(emotion.confidence * 100, abs=0.06)
    assert bar.locator(".bar-fill").evaluate("e => e.getBoundingClientRect().width") > 0
    expect(low.locator("[data-task=suicide_risk] .label-name").first).to_have_text(
        expected[LOW_POST].tasks["suicide_risk"].labels[0].name_zh)
    expect(low.locator(".explanation").first).to_contain_text("帖子中")

    mark = low.locator("blockquote.post-text mark")
    expect(mark).to_have_count(1)  # both tasks quote the same six characters
    expect(mark).to_have_text(LOW_POST[:6])
    assert (mark.get_attribute("data-start"), mark.get_attribute("data-end")) == ("0", "6")
    assert set(mark.get_attribute("data-tasks").split()) == set(TASKS)
    expect(low.locator("blockquote.post-text")).to_have_text(LOW_POST)

    expect(english.locator(".ood")).to_be_visible()
    expect(low.locator(".ood")).to_have_count(0)
    for card in (high, low, english):
        expect(card.locator(".notice-nad")).to_have_text(NOT_A_DIAGNOSIS)


def test_language_switch_changes_every_string_and_the_crisis_locale(page, base_url):
    open_page(page, base_url)
    expect(page.locator("#run")).to_have_text("开始分析")
    page.click("#lang-toggle")
    assert page.evaluate("document.documentElement.lang") == "en"
    expect(page.locator("#run")).to_have_text("Analyse")
    expect(page.locator("#tasks-fieldset legend")).to_have_text("Tasks")
    expect(page.locator("#lang-toggle")).to_have_text("中文")
    expect(page.locator("label[for=task-emotion]")).to_contain_text(get_task("emotion").name_en)
    run(page, HIGH_POST, 1)
    crisis = page.locator(".crisis")
    expect(crisis).to_contain_text(CRISIS["en"][0])  # the request asked for the English resources
    expect(crisis).to_contain_text("hotline")
    expect(page.locator("#results-summary")).to_contain_text("1 posts")
    expect(page.locator("#status")).to_have_text("Done: 1 posts.")
    page.click("#lang-toggle")
    expect(page.locator("#run")).to_have_text("开始分析")
    expect(page.locator("#status")).to_have_text("分析完成：1 条。")  # messages on screen are re-rendered
    expect(page.locator("#result-list h3")).to_have_text("帖子 post-1")  # and so are the results


def test_jsonl_upload_error_records_and_downloads_without_post_text(page, base_url, tmp_path):
    too_long = "难" * 2001
    rows = [{"id": "a1", "text": LOW_POST}, {"id": "a2", "body": "这一行没有文本字段"}, {"text": HIGH_POST},
            {"id": "a4", "text": too_long}]
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    open_page(page, base_url)
    page.set_input_files("#file-input", str(path))
    expect(page.locator("#source-file")).to_be_checked()
    expect(page.locator("#file-status")).to_contain_text("3 条帖子")
    expect(page.locator("#file-status")).to_contain_text("1 行有误")
    page.click("#run")
    cards = page.locator("#result-list > li")
    expect(cards).to_have_count(4)
    expect(page.locator("#run")).to_be_enabled()
    expect(cards.nth(1).locator(".badge-error")).to_be_visible()  # read in the browser, never sent
    expect(cards.nth(1)).to_contain_text("第 2 行")
    expect(cards.nth(2).locator("h3")).to_have_text("帖子 posts.jsonl:3")
    expect(cards.nth(2).locator(".crisis")).to_be_visible()
    expect(cards.nth(3).locator(".error-text")).to_contain_text("maximum")  # the server's error record

    with page.expect_download() as info:
        page.click("#download-jsonl")
    jsonl = Path(info.value.path()).read_text(encoding="utf-8")
    records = [json.loads(line) for line in jsonl.splitlines()]
    assert [r["id"] for r in records] == ["a1", "a2", "posts.jsonl:3", "a4"]
    assert [r["status"] for r in records] == ["ok", "error", "ok", "error"]
    for record in records:
        (PostResult if record["status"] == "ok" else ErrorRecord).model_validate(record)
    with page.expect_download() as info:
        page.click("#download-csv")
    assert info.value.suggested_filename.endswith(".csv")
    table = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8-sig"))))
    assert [(r["id"], r["task"]) for r in table] == [
        ("a1", "emotion"), ("a1", "suicide_risk"), ("a2", ""), ("posts.jsonl:3", "emotion"),
        ("posts.jsonl:3", "suicide_risk"), ("a4", "")]
    assert table[3]["high_risk"] == "true" and table[0]["high_risk"] == "false"
    for content in (jsonl, json.dumps(table, ensure_ascii=False)):
        for raw in (LOW_POST, HIGH_POST, "这一行没有文本字段", too_long[:20]):
            assert raw not in content


def test_files_without_text_are_refused_with_a_clear_error(page, base_url, tmp_path):
    open_page(page, base_url)
    status = page.locator("#file-status")
    no_column = tmp_path / "posts.csv"
    no_column.write_text("id,body\n1,好难过\n", encoding="utf-8")
    page.set_input_files("#file-input", str(no_column))
    expect(status).to_contain_text("CSV 文件没有文本列")
    expect(status).to_contain_text("id, body")
    assert status.get_attribute("role") == "alert"
    page.click("#run")
    expect(page.locator("#form-error")).to_contain_text("CSV 文件没有文本列")

    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("今天很开心\n".encode("gbk"))
    page.set_input_files("#file-input", str(gbk))
    expect(status).to_contain_text("UTF-8")

    no_text = tmp_path / "rows.jsonl"
    no_text.write_text('{"body": "好难过"}\n', encoding="utf-8")
    page.set_input_files("#file-input", str(no_text))
    expect(status).to_contain_text("text")

    quoted = tmp_path / "quoted.csv"
    quoted.write_text('content,id\n"第一行，\n第二行",x1\n"说""好""",x2\n', encoding="utf-8")
    page.set_input_files("#file-input", str(quoted))
    expect(status).to_contain_text("2 条帖子")
    page.click("#run")
    expect(page.locator("#result-list h3")).to_have_text(["帖子 x1", "帖子 x2"])


def test_post_text_is_never_read_as_html(page, base_url):
    attack = '<img src=x onerror="window.__pwned=1">好难过<b>哭了</b>'
    open_page(page, base_url)
    page.uncheck("#per-line")
    run(page, attack, 1)
    expect(page.locator("blockquote.post-text")).to_contain_text("<img src=x")
    assert page.locator("#results img, #results b").count() == 0
    assert page.evaluate("window.__pwned") is None
    source = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source


def test_api_key_is_asked_for_and_sent_as_bearer(page, models, jobs_dir):
    os.environ[KEY_ENV] = "s3cret-key"
    try:
        settings = ServeSettings(tasks=TASKS, engine="labels", api_key_env=KEY_ENV)
        app = create_app(settings, analyzer=Analyzer(TASKS, "labels", models=models))
    finally:
        os.environ.pop(KEY_ENV, None)
    with serving(app) as url:
        page.goto(url)  # the page and its assets are open; the API is not
        expect(page.locator("#tasks-status")).to_contain_text("API 密钥")
        page.click(".api-key summary")
        page.fill("#api-key", "s3cret-key")
        page.press("#api-key", "Tab")
        expect(page.locator("#task-emotion")).to_be_checked()
        run(page, LOW[1], 1)
        expect(page.locator("#result-list .label").first).to_be_visible()


def test_attribution_evidence_says_which_label_it_supports_and_by_how_much(page, models, jobs_dir):
    analyzer = Analyzer(TASKS, "attribution", models=models)
    span = analyzer.analyze(HIGH_POST).tasks["suicide_risk"].evidence[0]
    assert span.label == "high" and span.weight is not None
    with serving(create_app(ServeSettings(tasks=TASKS, engine="attribution"), analyzer=analyzer)) as url:
        open_page(page, url)
        run(page, HIGH_POST, 1)
        first = page.locator("[data-task=suicide_risk] .evidence-list li").first
        expect(first.locator(".evidence-quote")).to_have_text(span.quote)
        label = get_task("suicide_risk").label("high").zh
        expect(first.locator(".evidence-support")).to_have_text(
            f"去掉这句，「{label}」的概率下降 {span.weight * 100:.1f} 个百分点")


def test_outside_training_domain_is_a_badge_and_a_csv_column(page, models, jobs_dir):
    analyzer = Analyzer(TASKS, "labels", models=with_domain_check(models))
    post = "周末去超市买了水果，主队赢了球赛"
    similarity = analyzer.analyze(post).tasks["suicide_risk"].training_domain_similarity
    with serving(create_app(ServeSettings(tasks=TASKS, engine="labels"), analyzer=analyzer)) as url:
        open_page(page, url)
        run(page, post, 1)
        badge = page.locator("[data-task=suicide_risk] .outside-domain")
        expect(badge).to_contain_text(f"相似度 {similarity:.2f}")
        expect(page.locator("[data-task=emotion] .outside-domain")).to_have_count(0)
        with page.expect_download() as download:
            page.click("#download-csv")
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8-sig"))))
        risk = next(r for r in rows if r["task"] == "suicide_risk")
        assert risk["outside_training_domain"] == "true" and float(risk["training_domain_similarity"]) == similarity
