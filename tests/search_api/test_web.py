"""The web page at /: served HTML, and a real search in headless Chromium (Playwright driving
Debian's /usr/bin/chromium; no browser download) against a real uvicorn server."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from encoders.instructions import TASKS
from tests.search_api.conftest import DOCS, LiveServer


def test_page_is_served_with_its_controls(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for testid in ("query", "task", "collection", "mode", "top-k", "submit", "results", "api-key",
                   "chunks", "prev", "next"):  # fmt: skip
        assert f'data-testid="{testid}"' in html
    # the page reads the same routes the API serves, and writes text with textContent only
    for route in ('"/tasks"', '"/collections"', '"/search"', '"/health"'):
        assert route in html
    assert "innerHTML" not in html


def test_search_in_headless_chromium(
    browser: Any, live_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = live_server(api_keys=["browser-key"])
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-loaded='true']", timeout=30_000)

    # tasks come from /tasks, default selected, instruction shown
    options = page.eval_on_selector_all("#task option", "els => els.map(e => e.value)")
    assert set(TASKS) <= set(options)
    assert page.input_value("#task") == "web_search"
    assert TASKS["web_search"] in page.text_content("#instruction-text")
    assert page.text_content("#status").startswith("ready")

    # without the key the API refuses, and the page says so
    page.fill("#query", "vitamin d infection")
    page.click("#submit")
    page.wait_for_selector("#error:not(:empty)", timeout=30_000)
    assert "missing API key" in page.text_content("#error")
    assert page.is_visible("#api-key")  # the key field opened itself

    page.fill("#api-key", "browser-key")
    page.dispatch_event("#api-key", "change")
    page.wait_for_function(
        "document.querySelectorAll('#collection option').length >= 2", timeout=30_000
    )
    assert {"default", "small"} <= set(
        page.eval_on_selector_all("#collection option", "els => els.map(e => e.value)")
    )
    page.select_option("#task", "scifact")
    assert TASKS["scifact"] in page.text_content("#instruction-text")
    page.fill("#top-k", "4")
    page.click("#submit")
    page.wait_for_selector("li.hit", timeout=30_000)
    hits = page.query_selector_all("li.hit")
    assert len(hits) == 4
    assert page.text_content("#error") == ""
    assert "task scifact" in page.text_content("#summary")

    scores = [
        float(s) for s in page.eval_on_selector_all(".score", "els => els.map(e => e.textContent)")
    ]
    assert scores == sorted(scores, reverse=True)
    # the page shows what the API returns for the same request
    api = httpx.post(
        server.url + "/search",
        json={"query": "vitamin d infection", "task": "scifact", "top_k": 4},
        headers={"Authorization": "Bearer browser-key"},
    ).json()
    assert scores == pytest.approx([h["score"] for h in api["hits"]], abs=1e-4)
    titles = page.eval_on_selector_all(".title", "els => els.map(e => e.textContent)")
    top = api["hits"][0]["payload"]
    assert re.sub(r"^1\. ", "", titles[0]) == (top["title"] or top["doc_id"])
    texts = {d["text"] for d in DOCS}
    assert all(
        t in texts for t in page.eval_on_selector_all(".text", "els => els.map(e => e.textContent)")
    )

    # an unknown collection is shown as an error, not a crash
    page.evaluate(
        "() => { const s = document.getElementById('collection');"
        " s.append(new Option('nope', 'nope')); s.value = 'nope'; }"
    )
    page.click("#submit")
    page.wait_for_selector("#error:not(:empty)", timeout=30_000)
    assert "'nope' not found" in page.text_content("#error")
    assert page.query_selector_all("li.hit") == []

    # the mode selector: each mode answers as the API does for it
    page.select_option("#collection", "default")
    for mode in ("sparse", "dense", "hybrid"):
        page.select_option("#mode", mode)
        page.click("#submit")
        page.wait_for_function(
            f"document.getElementById('summary').textContent.includes('({mode},')",
            timeout=30_000,
        )
        shown = [
            float(s)
            for s in page.eval_on_selector_all(".score", "els => els.map(e => e.textContent)")
        ]
        want = httpx.post(
            server.url + "/search",
            json={"query": "vitamin d infection", "task": "scifact", "top_k": 4, "mode": mode},
            headers={"Authorization": "Bearer browser-key"},
        ).json()
        assert want["mode"] == mode
        assert shown == pytest.approx([h["score"] for h in want["hits"]], abs=1e-4)

    # back to a good search, then a screenshot for people to look at
    page.click("#submit")
    page.wait_for_selector("li.hit", timeout=30_000)
    shots = Path(os.environ.get("EMBER_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "web_page.png"), full_page=True)
    assert errors == []


def test_the_page_shows_one_result_per_document(
    browser: Any, live_server: Callable[..., LiveServer], chunked_store: Any
) -> None:
    server = live_server(app_store=chunked_store)
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-loaded='true']", timeout=30_000)
    page.wait_for_function(
        "document.querySelectorAll('#collection option').length >= 1", timeout=30_000
    )
    query = {"query": "vitamin d infection", "task": "web_search", "top_k": 3, "mode": "dense"}
    page.select_option("#mode", "dense")
    page.fill("#query", query["query"])
    page.fill("#top-k", "3")

    def shown() -> list[str]:
        return list(page.eval_on_selector_all("li.hit", "els => els.map(e => e.dataset.doc)"))

    def api(**body: Any) -> list[dict[str, Any]]:
        return list(httpx.post(server.url + "/search", json={**query, **body}).json()["hits"])

    page.click("#submit")
    page.wait_for_selector("li.hit", timeout=30_000)
    first = api()
    assert shown() == [h["payload"]["doc_id"] for h in first]
    assert len(set(shown())) == 3  # each document once
    assert "3 documents from" in page.text_content("#summary")
    assert page.is_disabled("#prev") and not page.is_disabled("#next")
    # the further passages of each document are listed under it
    assert len(page.query_selector_all("li.passage")) == sum(len(h["passages"]) - 1 for h in first)

    page.click("#next")  # page 2 starts exactly after page 1's last document
    page.wait_for_function(
        "document.getElementById('summary').textContent.includes('from #4')", timeout=30_000
    )
    assert shown() == [h["payload"]["doc_id"] for h in api(offset=3)]
    assert not set(shown()) & {h["payload"]["doc_id"] for h in first}
    assert page.text_content(".title").startswith("4. ")
    page.click("#prev")
    page.wait_for_function(
        "!document.getElementById('summary').textContent.includes('from #')", timeout=30_000
    )
    assert shown() == [h["payload"]["doc_id"] for h in first]

    page.check("#chunks")  # chunk hits: documents may repeat
    page.fill("#top-k", "12")
    page.click("#submit")
    page.wait_for_function(
        "document.getElementById('summary').textContent.includes('chunks from')", timeout=30_000
    )
    chunks = api(top_k=12, group_by=None)
    assert shown() == [h["payload"]["doc_id"] for h in chunks]
    assert len(set(shown())) < len(shown())
    assert errors == []
