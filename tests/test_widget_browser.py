"""The autocomplete widget in a real headless Chromium, against the real app over HTTP.

The app is `create_api(local_backend(...))` on an embedded-store index built with the tiny embedder and
a tiny cross-encoder; queries are logged through /v1/search so /v1/suggest has something to suggest.
The browser is Debian's chromium driven by Selenium through /usr/bin/chromedriver (no download).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.widget_server import serve_in_thread

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SIFT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIFT_CHROMEDRIVER", "/usr/bin/chromedriver")
INDEX = "widget-docs"
# Not markup to the indexer's cleaner (no known tag), so it reaches the page as typed: it must show as text.
XSS_TITLE = "Escaping <svg onload=\"window.__xss=1\"> and <class 'int'> in Python"
DOCS = [
    ("Python loops", "The for statement in Python iterates over the items of any sequence, such as a list."),
    ("Python classes", "Classes bundle data and functionality; creating a Python class creates a new type."),
    ("Python exceptions", "Python raises exceptions when errors occur; try and except statements handle them."),
    ("Reading files in Python", "Use open() to read and write files; the with statement closes the file."),
    ("Python modules", "A module is a file containing Python definitions; import makes them available."),
    (XSS_TITLE, "Python's html.escape turns <b>tags</b> into text, so a page shows them instead of running them."),
    ("Shell pipelines", "A pipeline connects the output of one command to the input of the next."),
]
LOGGED_QUERIES = [
    "python loops",
    "python loops",
    "python loops",
    "python classes",
    "python classes",
    "python exceptions",
    "python modules",
    "classes and objects",
]


@pytest.fixture(scope="module")
def data_dir(tiny_embedder: Any, tiny_embedder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from models.embedder import EmbedderConfig
    from search.stores.embedded import EmbeddedStore

    root = tmp_path_factory.mktemp("widget-data")
    src = root / "docs.jsonl"
    with open(src, "w") as f:
        for i, (title, text) in enumerate(DOCS):
            f.write(json.dumps({"id": f"d{i}", "title": title, "text": text, "url": f"https://example.org/{i}"}) + "\n")
    store = EmbeddedStore(root / "indices")
    cfg = IndexingConfig(
        embedder=EmbedderConfig(model=str(tiny_embedder_path), device="cpu"),
        dead_letter_dir=root / "dead",
        progress=False,
    )
    report = IndexingPipeline(store, tiny_embedder, cfg).build(src, INDEX)
    store.close()
    assert report.indexed == len(DOCS)
    return root


# A page on another origin that embeds the widget from the API's origin, as a customer's site would.
HOST_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Elsewhere</title>
<link rel="icon" href="data:,"></head><body><h1>Another site</h1>
<input id="elsewhere" aria-label="Search this site"><div id="found"></div>
<script type="module">
import { attachAutocomplete } from "{API}/widget/sift-autocomplete.js";
attachAutocomplete(document.getElementById("elsewhere"), {
  endpoint: "{API}", k: 5, limit: 3, resultsEl: document.getElementById("found"),
  onSearch: (query, response) => { window.searched = [query, response.results.length]; },
});
</script></body></html>"""


@pytest.fixture(scope="module")
def host_page() -> Iterator[tuple[str, dict[str, str]]]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    api: dict[str, str] = {}

    async def page(_: Request) -> HTMLResponse:
        return HTMLResponse(HOST_PAGE.replace("{API}", api["url"]))

    with serve_in_thread(Starlette(routes=[Route("/", page)])) as url:
        yield url, api


@pytest.fixture(scope="module")
def app_url(
    data_dir: Path, tiny_embedder_path: Path, tiny_reranker_path: Path, host_page: tuple[str, dict[str, str]]
) -> Iterator[str]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.config import AppConfig
    from serving.local import local_backend

    config = AppConfig.model_validate(
        {
            "store": "embedded",
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX},
            "embedder": {"model": str(tiny_embedder_path), "device": "cpu"},
            "reranker": {"model": str(tiny_reranker_path), "device": "cpu"},
            # Suggestions from the query log only: the widget is under test here, not the LM or the corpus.
            "suggest": {"lm": {"enabled": False}, "corpus": {"enabled": False}, "prefetch_top": 0, "min_sessions": 1},
            "summarizer": None,
        }
    )
    backend = local_backend(config, Settings())
    host_url, api = host_page
    with serve_in_thread(create_api(backend, cors_origins=[host_url])) as url:
        api["url"] = url
        with httpx.Client(base_url=url, timeout=30) as client:
            for q in LOGGED_QUERIES:
                client.post("/v1/search", json={"query": q, "limit": 3, "session_id": "widget-test"}).raise_for_status()
        yield url
    backend.suggest.close()
    backend.store.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "apt-get install chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,760"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()


# What the open list shows: [option value, marked text] per option, or null while the list is hidden.
SHOWN_JS = """
const list = document.getElementById(arguments[0].getAttribute("aria-controls"));
if (!list || list.hidden) return null;
return [...list.querySelectorAll("[role=option]")].map((o) => [o.dataset.value, o.querySelector("mark")?.textContent]);
"""


def wait_for_suggestions(driver: Any, box: Any, typed: str) -> list[str]:
    """The suggestions once they are the ones for `typed` (on a slow machine a list for an earlier prefix
    can show while the last keys are still arriving); each must have the typed prefix marked."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d: Any) -> list[str] | None:
        rows = d.execute_script(SHOWN_JS, box)
        if not rows or box.get_attribute("value") != typed:
            return None
        if not all((mark or "").lower() == typed.lower() for _, mark in rows):
            return None
        return [value for value, _ in rows]

    result: list[str] = WebDriverWait(driver, 10).until(ready)
    return result


def test_widget_assets_are_served(app_url: str) -> None:
    with httpx.Client(base_url=app_url) as client:
        page = client.get("/")
        js = client.get("/widget/sift-autocomplete.js")
        css = client.get("/widget/sift-autocomplete.css")
        schema = client.get("/openapi.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="module"' in page.text and "attachAutocomplete" in page.text
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "export function attachAutocomplete" in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "/" not in schema["paths"] and not any(p.startswith("/widget") for p in schema["paths"])


def test_type_pick_with_keys_and_search(app_url: str, driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("SIFT_WIDGET_SCREENSHOTS", tmp_path))
    errors: list[str] = []
    driver.get(app_url + "/")
    wait = WebDriverWait(driver, 10)
    box = driver.find_element(By.ID, "q")
    wait.until(lambda d: box.get_attribute("role") == "combobox")  # the module ran
    listbox = driver.find_element(By.ID, box.get_attribute("aria-controls"))
    assert listbox.get_attribute("role") == "listbox"
    assert box.get_attribute("aria-autocomplete") == "list" and box.get_attribute("aria-expanded") == "false"

    box.send_keys("pyth")
    texts = wait_for_suggestions(driver, box, "pyth")
    options = listbox.find_elements(By.CSS_SELECTOR, "[role=option]")
    assert len(texts) >= 2 and [o.get_attribute("data-value") for o in options] == texts
    assert box.get_attribute("aria-expanded") == "true"
    assert all(t.lower().startswith("pyth") for t in texts), texts
    assert set(texts) <= set(LOGGED_QUERIES), texts
    for o in options:  # the typed prefix, and only it, is marked
        assert o.find_element(By.CSS_SELECTOR, "mark").text.lower() == "pyth"
        assert o.get_attribute("aria-selected") == "false"

    def selected() -> list[int]:
        return [i for i, o in enumerate(options) if o.get_attribute("aria-selected") == "true"]

    box.send_keys(Keys.ARROW_DOWN)
    assert box.get_attribute("aria-activedescendant") == options[0].get_attribute("id") and selected() == [0]
    box.send_keys(Keys.ARROW_DOWN)
    assert box.get_attribute("aria-activedescendant") == options[1].get_attribute("id") and selected() == [1]
    box.send_keys(Keys.ARROW_UP)
    assert box.get_attribute("aria-activedescendant") == options[0].get_attribute("id") and selected() == [0]
    assert box.get_attribute("value") == "pyth"  # moving does not change the text (manual selection)
    driver.save_screenshot(str(shots / "widget-suggest.png"))

    box.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#results .sift-result"))
    chosen = texts[0]
    assert box.get_attribute("value") == chosen
    assert not listbox.is_displayed() and box.get_attribute("aria-expanded") == "false"
    assert box.get_attribute("aria-activedescendant") is None
    results = driver.find_elements(By.CSS_SELECTOR, "#results .sift-result")
    titles = [r.find_element(By.CSS_SELECTOR, ".sift-result-title").text for r in results]
    assert set(titles) <= {t for t, _ in DOCS} and len(titles) >= 3, titles
    topic = chosen.split()[-1].lower()  # "loops", "classes", ...: the document on it is BM25's first
    top = next(r for r, t in zip(results, titles, strict=True) if topic in t.lower())
    assert top.find_element(By.CSS_SELECTOR, ".sift-result-title").get_attribute("href") == "https://example.org/" + (
        top.get_attribute("data-id") or ""
    ).removeprefix("d")
    assert top.find_elements(By.CSS_SELECTOR, ".sift-result-snippet em"), "snippet has no highlighted term"
    explain = top.find_element(By.CSS_SELECTOR, ".sift-result-explain").text
    assert explain.startswith("bm25 #1 · dense #") and "rerank" in explain, explain
    meta = driver.find_element(By.CSS_SELECTOR, "#results .sift-results-meta").text
    assert meta.startswith(f"{len(results)} results") and "reranked" in meta, meta
    driver.save_screenshot(str(shots / "widget.png"))

    # The document whose title is markup: shown as text, never run.
    box.clear()
    box.send_keys("escaping class", Keys.ENTER)
    titles_js = "return [...document.querySelectorAll('#results .sift-result-title')].map((e) => e.textContent)"
    wait.until(lambda d: XSS_TITLE in d.execute_script(titles_js))
    assert driver.execute_script(
        "return window.__xss === undefined && !document.querySelector('#results svg, #results class')"
    )

    # Escape closes an open list and keeps the typed text.
    box.clear()
    box.send_keys("python c")
    assert wait_for_suggestions(driver, box, "python c") == ["python classes"]
    assert listbox.is_displayed()
    box.send_keys(Keys.ESCAPE)
    assert not listbox.is_displayed() and box.get_attribute("aria-expanded") == "false"
    assert box.get_attribute("value") == "python c"

    for entry in driver.get_log("browser"):
        if entry.get("level") == "SEVERE":
            errors.append(entry.get("message", ""))
    assert not errors, errors


def test_widget_on_another_origin(app_url: str, host_page: tuple[str, dict[str, str]], driver: Any) -> None:
    """Loaded cross-origin (module, stylesheet, API calls), with CORS allowing that origin and no other."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    host_url, _ = host_page
    assert host_url != app_url
    with httpx.Client(base_url=app_url) as client:
        pre = client.options(
            "/v1/search",
            headers={
                "Origin": host_url,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        other = client.get("/v1/suggest", params={"q": "pyth"}, headers={"Origin": "http://evil.example"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == host_url
    assert "access-control-allow-origin" not in other.headers

    driver.get(host_url + "/")
    wait = WebDriverWait(driver, 10)
    box = driver.find_element(By.ID, "elsewhere")
    wait.until(lambda d: box.get_attribute("role") == "combobox")
    box.send_keys("python cl")
    listbox = driver.find_element(By.ID, box.get_attribute("aria-controls"))
    wait.until(lambda d: listbox.is_displayed())
    assert [o.text for o in listbox.find_elements(By.CSS_SELECTOR, "[role=option] .sift-ac-text")] == ["python classes"]
    # The widget linked its own stylesheet from the API origin.
    assert listbox.value_of_css_property("position") == "absolute"
    box.send_keys(Keys.ARROW_DOWN, Keys.ENTER)
    wait.until(lambda d: d.execute_script("return window.searched"))
    assert driver.execute_script("return window.searched") == ["python classes", 3]
    assert len(driver.find_elements(By.CSS_SELECTOR, "#found .sift-result")) == 3


def click_records(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted((data_dir / "clicklog").glob("*.jsonl")) for line in p.open()]


def test_click_beacons_for_a_suggestion_and_a_result(app_url: str, driver: Any, data_dir: Path) -> None:
    """A mouse pick of the 2nd suggestion and a click on the 3rd result each reach POST /v1/events by
    navigator.sendBeacon and land in the click log with their query, query id and position."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(app_url + "/")
    wait = WebDriverWait(driver, 10)
    box = driver.find_element(By.ID, "q")
    wait.until(lambda d: box.get_attribute("role") == "combobox")
    # Result links point at example.org: keep the page here (the beacon would be sent either way).
    driver.execute_script(
        "document.addEventListener('click', (e) => { if (e.target.closest('a')) e.preventDefault(); })"
    )
    sent = driver.execute_script(
        "window.__beacons = []; const orig = navigator.sendBeacon.bind(navigator);"
        "navigator.sendBeacon = (u, b) => { window.__beacons.push(u); return orig(u, b); }; return true;"
    )
    assert sent
    before = {r["event_id"] for r in click_records(data_dir)}

    box.send_keys("pyth")
    texts = wait_for_suggestions(driver, box, "pyth")
    assert len(texts) >= 2
    listbox = driver.find_element(By.ID, box.get_attribute("aria-controls"))
    listbox.find_elements(By.CSS_SELECTOR, "[role=option]")[1].click()
    wait.until(lambda d: box.get_attribute("value") == texts[1])
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .sift-result")) >= 3)
    third = driver.find_elements(By.CSS_SELECTOR, "#results .sift-result")[2]
    assert third.get_attribute("data-position") == "3"
    third_id = third.get_attribute("data-id")
    third.find_element(By.CSS_SELECTOR, ".sift-result-title").click()

    def new_records(_: Any) -> list[dict[str, Any]] | None:
        rows = [r for r in click_records(data_dir) if r["event_id"] not in before]
        return rows if len(rows) >= 2 else None

    rows = WebDriverWait(driver, 15).until(new_records)
    assert driver.execute_script("return window.__beacons.length") == 2
    by_source = {r["source"]: r for r in rows}
    sug, res = by_source["suggest"], by_source["search"]
    assert sug["type"] == "click" and sug["event_name"] == "Suggestion clicked"
    assert sug["query"] == "pyth" and sug["object_ids"] == [texts[1]] and sug["positions"] == [2]
    assert res["event_name"] == "Result clicked" and res["query"] == texts[1]
    assert res["object_ids"] == [third_id] and res["positions"] == [3] and res["index"] == INDEX
