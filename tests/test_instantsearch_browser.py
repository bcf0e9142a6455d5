"""The InstantSearch page (serving/static/search.html) in a real headless Chromium, against the real app over HTTP.

The page runs the real instantsearch.js and search-insights from npm (`make setup` copies their bundles to
serving/static/vendor/) on Sift's search client (sift-instantsearch.js). The app is `create_api(local_backend(...))`
on an embedded-store index with two keyword facets, the tiny embedder and a tiny chat LM as the summarizer.
Screenshots go to $SIFT_TEST_ARTIFACTS when set, else to the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.widget_server import serve_in_thread

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VENDOR = REPO / "serving" / "static" / "vendor"
CHROMIUM = os.environ.get("SIFT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIFT_CHROMEDRIVER", "/usr/bin/chromedriver")
INDEX = "site-docs"
XSS_TITLE = "Escaping <svg onload=\"window.__xss=1\"> and <class 'int'> in Python"
TOPICS = [
    "loops", "classes", "exceptions", "files", "modules", "strings", "lists", "dictionaries", "sets",
    "tuples", "functions", "decorators", "generators", "iterators", "closures", "typing", "asyncio",
    "threads", "sockets", "logging", "testing", "packaging", "environments", "regex", "json", "dates",
]  # fmt: skip


def category(i: int) -> str:
    return "guide" if i < 12 else "reference" if i < 20 else "tutorial"


def level(i: int) -> str:
    return "beginner" if i % 3 == 0 else "advanced"


# Every document says "python", so every result of that query matches it (dense retrieval adds none that do not).
DOCS: list[dict[str, Any]] = [
    {
        "id": f"d{i}",
        "title": XSS_TITLE if i == 13 else f"Python {topic}",
        "text": f"How Python handles {topic}: a {category(i)} for {level(i)} readers, with examples of {topic} "
        f"in everyday Python code.",
        "url": f"https://example.org/{topic}",
        "fields": {"category": category(i), "level": level(i)},
    }
    for i, topic in enumerate(TOPICS)
]
COUNTS = {"guide": 12, "reference": 8, "tutorial": 6}
LOGGED_QUERIES = ["python loops", "python loops", "python classes", "python classes", "python files"]


def build_index(root: Path, embedder: Any, embedder_path: Path) -> None:
    """The test corpus in the embedded store under `root` (also used by a hand-run dev server)."""
    from indexing.pipeline import IndexingConfig, IndexingPipeline
    from models.embedder import EmbedderConfig
    from search.stores.embedded import EmbeddedStore

    src = root / "docs.jsonl"
    with open(src, "w") as f:
        for d in DOCS:
            f.write(json.dumps(d) + "\n")
    store = EmbeddedStore(root / "indices")
    cfg = IndexingConfig.model_validate(
        {
            "embedder": EmbedderConfig(model=str(embedder_path), device="cpu").model_dump(),
            "dead_letter_dir": str(root / "dead"),
            "progress": False,
            "schema": {"fields": {"category": "keyword", "level": "keyword"}},
        }
    )
    report = IndexingPipeline(store, embedder, cfg).build(src, INDEX)
    store.close()
    assert report.indexed == len(DOCS)


def app_config(data_dir: Path, embedder_path: Path, chat_lm_path: Path) -> Any:
    from serving.config import AppConfig

    return AppConfig.model_validate(
        {
            "store": "embedded",
            "data_dir": str(data_dir),
            "search": {"default_index": INDEX},
            "embedder": {"model": str(embedder_path), "device": "cpu"},
            "suggest": {"lm": {"enabled": False}, "prefetch_top": 0, "min_sessions": 1},
            "summarizer": {
                "lm": {"model": str(chat_lm_path), "device": "cpu"},
                "max_new_tokens": 24,
                "deadline_s": None,
                "cache_sentence_vectors": False,
            },
        }
    )


@pytest.fixture(scope="module")
def data_dir(tiny_embedder: Any, tiny_embedder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("instantsearch-data")
    build_index(root, tiny_embedder, tiny_embedder_path)
    return root


def readme_snippet() -> str:
    """The HTML block of the README's "Put Sift search on your page", as a newcomer would paste it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Put Sift search on your page") :]
    match = re.search(r"```html\n(.*?)```", section, re.S)
    assert match, "the README section has no html block"
    return match.group(1)


@pytest.fixture(scope="module")
def host_page() -> Iterator[tuple[str, dict[str, str]]]:
    """Another origin serving the README's snippet, pointed at the app (its URL known once the app runs)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    api: dict[str, str] = {}

    async def page(_: Request) -> HTMLResponse:
        body = readme_snippet().replace("https://search.example.org", api["url"]).replace('"help"', f'"{INDEX}"')
        return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Elsewhere</title>'
                            f'<link rel="icon" href="data:,"></head><body>{body}</body></html>')  # fmt: skip

    with serve_in_thread(Starlette(routes=[Route("/", page)])) as url:
        yield url, api


@pytest.fixture(scope="module")
def app_url(
    data_dir: Path, tiny_embedder_path: Path, tiny_chat_lm_path: Path, host_page: tuple[str, dict[str, str]]
) -> Iterator[str]:
    from search.settings import Settings
    from serving.api import create_api
    from serving.local import local_backend

    backend = local_backend(app_config(data_dir, tiny_embedder_path, tiny_chat_lm_path), Settings())
    host_url, api = host_page
    with serve_in_thread(create_api(backend, cors_origins=[host_url])) as url:
        api["url"] = url
        with httpx.Client(base_url=url, timeout=30) as client:
            for q in LOGGED_QUERIES:  # something for the autocomplete to suggest
                client.post("/v1/search", json={"query": q, "limit": 3, "session_id": "is-test"}).raise_for_status()
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
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1200,1000")
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = os.environ.get("SIFT_TEST_ARTIFACTS")
    out = Path(folder) / "instantsearch" if folder else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def click_records(data_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted((data_dir / "clicklog").glob("*.jsonl")) for line in p.open()]


# ---- page state, read in one script each (the page re-renders between Selenium calls) ----------------------------

HITS_JS = """return [...document.querySelectorAll('#hits .hit')].map((h) => ({
  id: h.dataset.id, position: Number(h.dataset.position),
  title: h.querySelector('.hit-title').textContent,
  marks: [...h.querySelectorAll('.hit-title mark')].map((m) => m.textContent),
  snippetMarks: [...h.querySelectorAll('.hit-snippet mark')].map((m) => m.textContent)}));"""
FACET_JS = """const box = document.querySelector(`.facet[data-attribute="${arguments[0]}"]`);
return box ? [...box.querySelectorAll('.ais-RefinementList-item')].map((li) => [
  li.querySelector('.ais-RefinementList-labelText').textContent,
  Number(li.querySelector('.ais-RefinementList-count').textContent),
  li.classList.contains('ais-RefinementList-item--selected')]) : null;"""
PAGES_JS = """return [...document.querySelectorAll('#pagination .ais-Pagination-item--page')].map((li) => [
  li.textContent.trim(), li.classList.contains('ais-Pagination-item--selected')]);"""


def hits(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script(HITS_JS))


def facet(driver: Any, attribute: str) -> dict[str, tuple[int, bool]]:
    rows = driver.execute_script(FACET_JS, attribute) or []
    return {label: (count, selected) for label, count, selected in rows}


def status(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('status').textContent"))


def wait_until(driver: Any, what: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(what)


def idle(driver: Any) -> bool:
    return bool(driver.execute_script("return window.siftSearch && window.siftSearch.status === 'idle'"))


def open_page(driver: Any, url: str) -> Any:
    from selenium.webdriver.common.by import By

    driver.get(url)
    box = driver.find_element(By.ID, "q")
    wait_until(driver, lambda d: box.get_attribute("role") == "combobox" and idle(d))  # module ran, first render
    return box


def severe_console_errors(driver: Any) -> list[str]:
    return [e.get("message", "") for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


# ---- tests -------------------------------------------------------------------------------------------------------


def test_page_and_bundles_are_served_from_sift(app_url: str) -> None:
    assert (VENDOR / ".installed").exists(), "no InstantSearch bundles: run `make setup` (needs npm)"
    versions = json.loads((VENDOR / "versions.json").read_text())
    pinned = json.loads((REPO / "package.json").read_text())["dependencies"]
    assert versions == pinned and versions["instantsearch.js"].startswith("4.")
    with httpx.Client(base_url=app_url) as client:
        page = client.get("/widget/search.html")
        js = client.get("/widget/sift-instantsearch.js")
        bundle = client.get("/widget/vendor/instantsearch.production.min.js")
        insights = client.get("/widget/vendor/search-insights.min.js")
        home = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "export function createSiftSearchClient" in js.text
    assert bundle.status_code == 200 and f"{versions['instantsearch.js']}" in bundle.text
    assert insights.status_code == 200 and "createInsightsClient" in insights.text
    sources = re.findall(r"<(?:script|link)[^>]*(?:src|href)=\"([^\"]+)\"", page.text)
    assert sources and not [s for s in sources if re.match(r"(https?:)?//", s)], sources  # nothing from a CDN
    assert 'href="widget/search.html' in home.text  # linked from the demo page


def test_search_highlights_facets_pagination_click(app_url: str, driver: Any, data_dir: Path, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = open_page(driver, app_url + "/widget/search.html?facets=category,level")
    assert status(driver) == "Type a query and press Enter."
    assert hits(driver) == [] and facet(driver, "category") == {}
    requests_before = driver.execute_script("return window.siftSearchClient.stats.requests")
    assert requests_before == 0  # the empty first query is answered in the page

    # Type a query: hits with <mark> highlights, the total, refinement lists with counts, pages.
    box.send_keys("python", Keys.ENTER)
    wait_until(driver, lambda d: len(hits(d)) == 10 and idle(d))
    page1 = hits(driver)
    assert [h["position"] for h in page1] == list(range(1, 11))
    assert all(h["marks"] and {m.lower() for m in h["marks"]} == {"python"} for h in page1), page1
    assert all("python" in {m.lower() for m in h["snippetMarks"]} for h in page1), page1
    assert status(driver).startswith(f"{len(DOCS)} results"), status(driver)
    assert facet(driver, "category") == {k: (v, False) for k, v in COUNTS.items()}
    beginners = sum(level(i) == "beginner" for i in range(len(DOCS)))
    assert facet(driver, "level") == {"advanced": (len(DOCS) - beginners, False), "beginner": (beginners, False)}
    assert driver.execute_script(PAGES_JS) == [["1", True], ["2", False], ["3", False]]
    assert driver.execute_script("return window.__xss") is None  # the markup title is text
    driver.save_screenshot(str(shots / "instantsearch-results.png"))

    # The summary of the top results streams in (summarize: true -> summary_url -> SSE), with its sources.
    wait_until(driver, lambda d: d.execute_script("return document.getElementById('summary').dataset.state")
               in ("generated", "extractive"), timeout=60)  # fmt: skip
    sources = driver.find_elements(By.CSS_SELECTOR, "#summary .summary-sources li")
    assert sources and all(s.text for s in sources)
    assert driver.find_element(By.CSS_SELECTOR, "#summary .summary-text").text

    # Refine: one category narrows the hits; the category list keeps its other values and their counts
    # (disjunctive), the other facet counts within the refinement; InstantSearch's second request is answered
    # from Sift's own disjunctive counts (no request).
    stats0 = driver.execute_script("return {...window.siftSearchClient.stats}")
    checkbox = "//div[@data-attribute='category']//label[.//span[text()='{}']]//input"
    driver.find_element(By.XPATH, checkbox.format("reference")).click()
    wait_until(driver, lambda d: idle(d) and status(d).startswith(f"{COUNTS['reference']} results"))
    refs = {d["id"] for d in DOCS if d["fields"]["category"] == "reference"}
    shown = hits(driver)
    assert {h["id"] for h in shown} == refs, shown
    assert facet(driver, "category") == {k: (v, k == "reference") for k, v in COUNTS.items()}
    ref_beginners = sum(level(i) == "beginner" for i in range(len(DOCS)) if category(i) == "reference")
    ref_levels = {"advanced": (len(refs) - ref_beginners, False), "beginner": (ref_beginners, False)}
    assert facet(driver, "level") == ref_levels
    stats1 = driver.execute_script("return {...window.siftSearchClient.stats}")
    assert stats1["requests"] == stats0["requests"] + 1 and stats1["derived"] == stats0["derived"] + 1, (stats0, stats1)
    assert XSS_TITLE in {h["title"] for h in shown} and driver.execute_script("return window.__xss") is None
    driver.save_screenshot(str(shots / "instantsearch-refined.png"))

    # A second value of the same facet widens the result (OR), a value of the other narrows it (AND).
    driver.find_element(By.XPATH, checkbox.format("tutorial")).click()
    both = COUNTS["reference"] + COUNTS["tutorial"]
    wait_until(driver, lambda d: idle(d) and status(d).startswith(f"{both} results"))
    assert facet(driver, "category") == {k: (v, k != "guide") for k, v in COUNTS.items()}
    driver.find_element(By.XPATH, "//div[@data-attribute='level']//label[.//span[text()='beginner']]//input").click()
    narrowed = [i for i in range(len(DOCS)) if category(i) != "guide" and level(i) == "beginner"]
    wait_until(driver, lambda d: idle(d) and status(d).startswith(f"{len(narrowed)} result"))
    assert {h["id"] for h in hits(driver)} == {f"d{i}" for i in narrowed}
    assert facet(driver, "category")["guide"] == (sum(level(i) == "beginner" for i in range(12)), False)
    for value in ("reference", "tutorial"):  # back to all categories, beginners only
        driver.find_element(By.XPATH, checkbox.format(value)).click()
        wait_until(driver, idle)
    driver.find_element(By.XPATH, "//div[@data-attribute='level']//label[.//span[text()='beginner']]//input").click()
    wait_until(driver, lambda d: idle(d) and status(d).startswith(f"{len(DOCS)} results"))

    # Pagination: page 2 shows positions 11-20, none of page 1.
    driver.find_element(By.XPATH, "//nav[@id='pagination']//a[text()='2']").click()
    wait_until(driver, lambda d: idle(d) and [h["position"] for h in hits(d)] == list(range(11, 21)))
    page2 = hits(driver)
    assert not {h["id"] for h in page2} & {h["id"] for h in page1}
    assert driver.execute_script(PAGES_JS) == [["1", False], ["2", True], ["3", False]]
    driver.save_screenshot(str(shots / "instantsearch-page2.png"))

    # A click on a hit reaches POST /v1/events through the insights middleware and search-insights.
    driver.execute_script(  # hits link to example.org: keep the page here (the beacon goes either way)
        "document.addEventListener('click', (e) => { if (e.target.closest('a')) e.preventDefault(); })"
    )
    before = {r["event_id"] for r in click_records(data_dir)}
    target = page2[2]
    driver.find_element(By.CSS_SELECTOR, f"#hits .hit[data-id='{target['id']}'] .hit-title").click()

    def stored(_: Any) -> list[dict[str, Any]] | None:
        rows = [r for r in click_records(data_dir) if r["event_id"] not in before]
        return rows or None

    rows = wait_until(driver, stored, timeout=20)
    assert len(rows) == 1, rows
    rec = rows[0]
    assert rec["type"] == "click" and rec["event_name"] == "Hit Clicked" and rec["source"] == "search"
    assert rec["query"] == "python" and rec["index"] == INDEX
    assert rec["object_ids"] == [target["id"]] and rec["positions"] == [target["position"]] == [13]
    assert str(rec.get("user_token", "")).startswith("anonymous-")  # search-insights' token, as the search sent
    assert not severe_console_errors(driver)


def test_autocomplete_picks_run_the_instantsearch_query(app_url: str, driver: Any, shots: Path) -> None:
    """The existing autocomplete widget on the page's input: a picked suggestion refines InstantSearch's query
    (one search, by InstantSearch; the widget's own search is replaced by its onSubmit hook)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = open_page(driver, app_url + "/widget/search.html?facets=category")
    box.send_keys("python c")
    listbox = driver.find_element(By.ID, box.get_attribute("aria-controls"))
    wait_until(driver, lambda d: listbox.is_displayed() and box.get_attribute("value") == "python c")
    options = [o.get_attribute("data-value") for o in listbox.find_elements(By.CSS_SELECTOR, "[role=option]")]
    assert "python classes" in options, options  # logged twice (other sources may add more)
    driver.save_screenshot(str(shots / "instantsearch-suggest.png"))
    box.send_keys(*[Keys.ARROW_DOWN] * (options.index("python classes") + 1), Keys.ENTER)
    wait_until(driver, lambda d: idle(d) and hits(d) and box.get_attribute("value") == "python classes")
    assert driver.execute_script("return window.siftSearchClient.stats.requests") == 1
    searches = "return performance.getEntriesByType('resource').filter((e) => e.name.endsWith('/v1/search')).length"
    assert driver.execute_script(searches) == 1  # InstantSearch's; the autocomplete ran none of its own
    top = hits(driver)[0]
    assert top["id"] == "d1" and {m.lower() for m in top["marks"]} == {"python", "classes"}, top
    assert not listbox.is_displayed()

    # The refinement list's own search box: searchForFacetValues, matched on the counts Sift returned.
    listed = facet(driver, "category")
    assert set(listed) == set(COUNTS), listed
    facet_box = driver.find_element(By.CSS_SELECTOR, ".facet[data-attribute='category'] .ais-SearchBox-input")
    facet_box.send_keys("ref")
    wait_until(driver, lambda d: set(facet(d, "category")) == {"reference"})
    assert facet(driver, "category") == {"reference": listed["reference"]}
    marked = driver.find_element(
        By.CSS_SELECTOR, ".facet[data-attribute='category'] .ais-RefinementList-labelText mark"
    )
    assert marked.text == "ref"
    assert not severe_console_errors(driver)


def test_the_readme_snippet_on_another_origin(
    app_url: str, host_page: tuple[str, dict[str, str]], driver: Any, data_dir: Path, shots: Path
) -> None:
    """What a newcomer pastes from the README, served by another site: hits with highlights, a refinement list
    with counts, pages, and a click that reaches the click log across origins."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    host_url, _ = host_page
    driver.get(host_url + "/")
    box = wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#box input.ais-SearchBox-input"))[0]
    box.send_keys("python")
    # Enter submits the search box's state, which Preact updates after the keystrokes: wait for its re-render
    # (the reset button shows once the query is not empty).
    wait_until(driver, lambda d: d.execute_script("return !document.querySelector('#box .ais-SearchBox-reset').hidden"))
    box.send_keys(Keys.ENTER)
    items = "#hits .ais-Hits-item"
    wait_until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, items)) == 20)  # Algolia's default page
    marks = driver.execute_script(
        f"return [...document.querySelectorAll('{items}')].map((h) => h.querySelector('mark')?.textContent)"
    )
    assert all(m and m.lower() == "python" for m in marks), marks
    counts = driver.execute_script(
        "return [...document.querySelectorAll('#category .ais-RefinementList-item')].map((li) => "
        "[li.querySelector('.ais-RefinementList-labelText').textContent, "
        "Number(li.querySelector('.ais-RefinementList-count').textContent)])"
    )
    assert dict(counts) == COUNTS
    assert len(driver.find_elements(By.CSS_SELECTOR, "#pages .ais-Pagination-item--page")) == 2
    driver.save_screenshot(str(shots / "instantsearch-readme-snippet.png"))

    driver.execute_script(
        "document.addEventListener('click', (e) => { if (e.target.closest('a')) e.preventDefault(); })"
    )
    before = {r["event_id"] for r in click_records(data_dir)}
    first = driver.find_elements(By.CSS_SELECTOR, f"{items} a")[0]
    first.click()
    rows = wait_until(
        driver, lambda _: [r for r in click_records(data_dir) if r["event_id"] not in before] or None, timeout=20
    )
    assert rows[0]["query"] == "python" and rows[0]["positions"] == [1] and rows[0]["event_name"] == "Hit Clicked"
    assert not severe_console_errors(driver)
