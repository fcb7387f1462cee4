"""The API docs offline: /docs (Swagger UI) and /redoc (ReDoc) load their assets from the app
(fastapi-offline's packaged copies), and render the operations in headless Chromium with every
request beyond loopback refused."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.search_api.conftest import ClientFactory, LiveServer

# what each docs page must load from the app, by the content type it must arrive with
ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
LOOPBACK = {"127.0.0.1", "localhost"}
# ReDoc's sidebar badge ("API docs by Redocly") is an <img> its bundle always requests from
# cdn.redoc.ly; refused, ReDoc drops the image and the page is otherwise whole. The only request
# beyond loopback allowed to be attempted (and it is refused like any other).
REDOC_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', html)


@pytest.mark.parametrize(("path", "kinds"), [("/docs", {".js", ".css"}), ("/redoc", {".js"})])
def test_docs_html_loads_only_same_origin_assets(
    make_client: ClientFactory, path: str, kinds: set[str]
) -> None:
    client = make_client(api_keys=["k1"])  # the docs stay open with keys configured
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # no absolute (http(s)://) or scheme-relative (//host) URL anywhere in the page
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == [], html
    assets = _asset_urls(html)
    assert {u[u.rfind(".") :] for u in assets} >= kinds | {".png"}, assets
    for url in assets:
        assert url.startswith("/") and not url.startswith("//"), url
        got = client.get(url)
        assert got.status_code == 200, url
        want = ASSET_TYPES[url[url.rfind(".") :]]
        assert want in got.headers["content-type"], (url, got.headers["content-type"])
        assert len(got.content) > 1000, url
    # the spec the page reads is the app's own, same origin
    spec_url = re.search(r"""(?:url: |spec-url=)['"]([^'"]+)['"]""", html)
    assert spec_url is not None and spec_url.group(1) == "/openapi.json"
    assert client.get(spec_url.group(1)).json()["paths"]


def _offline_page(browser: Any) -> tuple[Any, list[str], list[str]]:
    """A page whose requests beyond loopback are refused (listed in ``outside``); page errors
    and responses of 400 or more (from the app) land in ``errors``."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    outside: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if urlparse(r.request.url).hostname in LOOPBACK:
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on(
        "response",
        lambda resp: errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None,
    )
    return page, outside, errors


def _operations(server: LiveServer) -> set[tuple[str, str, str]]:
    """(method, path, operationId) of every operation in the app's spec."""
    spec = httpx.get(server.url + "/openapi.json").json()
    return {
        (method.upper(), path, op["operationId"])
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }


def test_swagger_ui_renders_the_operations_offline(
    browser: Any, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server()
    operations = _operations(server)
    assert ("POST", "/search", "search_search_post") in operations
    page, outside, errors = _offline_page(browser)
    page.goto(server.url + "/docs")
    page.wait_for_selector("#operations-search-search_search_post", timeout=30_000)
    shown = page.eval_on_selector_all(
        ".opblock",
        "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent,"
        " e.querySelector('.opblock-summary-path').dataset.path, e.id])",
    )
    assert {(m, p, i.rsplit("-", 1)[-1]) for m, p, i in shown} == operations
    assert page.text_content(".info .title").startswith("Ember search API")
    assert outside == [] and errors == []


def test_redoc_renders_the_operations_offline(
    browser: Any, live_server: Callable[..., LiveServer]
) -> None:
    server = live_server()
    operations = _operations(server)
    page, outside, errors = _offline_page(browser)
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[id='tag/search/operation/search_search_post']", timeout=30_000)
    sections = page.eval_on_selector_all(
        "[id*='/operation/']", "els => els.map(e => e.id.split('/operation/')[1])"
    )
    assert set(sections) == {op_id for _, _, op_id in operations}
    # each operation's heading and its method + path, as ReDoc writes them
    search = page.locator("[id='tag/search/operation/search_search_post']")
    assert "POST" in search.inner_text().upper() and "/search" in search.inner_text()
    # and the sidebar lists every operation too
    menu = page.eval_on_selector_all(
        "li[data-item-id*='/operation/']", "els => els.map(e => e.dataset.itemId.split('/')[3])"
    )
    assert sorted(menu) == sorted(op_id for _, _, op_id in operations)
    assert set(outside) <= {REDOC_BADGE}, outside
    assert errors == []
