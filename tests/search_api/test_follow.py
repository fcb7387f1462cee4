"""The API follows collections onto the encoder that built them (issue 17 part 2): an alias moved
onto a build of another encoder is searched with that encoder, loaded on first use, without a
restart and without a failed request; recorded specs outside the allowed roots are refused;
encoders nobody serves are unloaded past the cap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from encoders import Encoder, load_encoder
from encoders.config import EncoderConfig
from encoders.instructions import DEFAULT_TASK, TASKS
from encoders.testing import tiny_model_folder
from indexer.pipeline import (
    begin_build,
    chunk_documents,
    embed_text,
    finish_build,
    index_chunks,
    parse_version,
)
from indexer.readers import Document
from indexer.sources import record_source, source_record
from indexer.store import Store
from indexer.stores import open_store
from search_api.served import EncoderRegistry, check_spec
from tests.search_api.conftest import DOCS, ClientFactory, make_settings

QUERY = "vitamin d and infection"


def encoder_folder(folder: Path, seed: int) -> Encoder:
    """A tiny encoder saved as an encoder folder (what a retrain writes), loaded from it."""
    tiny_model_folder(folder, "llama", seed=seed)
    EncoderConfig(name=f"tiny-{seed}", base_model=str(folder)).save(folder)
    return load_encoder(str(folder))


def build(store: Store, alias: str, encoder: Encoder, spec: str | None) -> str:
    """A build of DOCS by ``encoder`` that records ``spec`` (as an index job does, before any
    point), then the checked alias switch."""
    collection = begin_build(store, alias, encoder)
    if spec is not None:
        record = source_record("job-test", spec, encoder.fingerprint, {"documents": DOCS})
        record_source(store, collection, record)
    chunks = list(chunk_documents(documents(), encoder.tokenizer))
    index_chunks(store, collection, encoder, chunks)
    finish_build(store, alias, collection, len(chunks))
    return collection


def documents() -> list[Document]:
    return [
        Document(id=d["id"], text=d["text"], title=d.get("title", ""), source=d["source"])
        for d in DOCS
    ]


def brute_force(encoder: Encoder, query: str) -> list[str]:
    """Doc ids by cosine of the instructed query and the documents, as the indexer encodes them."""
    chunks = list(chunk_documents(documents(), encoder.tokenizer))
    docs = encoder.encode_documents([embed_text(c) for c in chunks])
    q = encoder.encode_queries([query], TASKS[DEFAULT_TASK])[0]
    order = np.argsort(-(docs @ q), kind="stable")
    return [chunks[i].doc_id for i in order]


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("follow")
    return {"out": base / "jobs-out", "elsewhere": base / "elsewhere"}


@pytest.fixture(scope="module")
def encoder_b(roots: dict[str, Path]) -> Encoder:
    return encoder_folder(roots["out"] / "retrain" / "b", seed=1)


@pytest.fixture(scope="module")
def encoder_c(roots: dict[str, Path]) -> Encoder:
    return encoder_folder(roots["out"] / "retrain" / "c", seed=2)


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(make_settings(tmp_path / "store"))
    yield s
    s.close()


def search(client: Any, collection: str = "docs", **body: Any) -> dict[str, Any]:
    r = client.post("/search", json={"query": QUERY, "collection": collection, **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def settings_for(roots: dict[str, Path], **overrides: Any) -> dict[str, Any]:
    return {"job_output_dir": roots["out"], **overrides}


def test_fingerprints_differ(encoder: Encoder, encoder_b: Encoder, encoder_c: Encoder) -> None:
    assert len({encoder.fingerprint, encoder_b.fingerprint, encoder_c.fingerprint}) == 3


# ---- the alias moves onto another encoder's build ------------------------------------------
def test_search_follows_the_alias_onto_another_encoder(
    make_client: ClientFactory, own_store: Store, encoder: Encoder, encoder_b: Encoder,
    roots: dict[str, Path],
) -> None:  # fmt: skip
    build(own_store, "docs", encoder, None)  # the default encoder's build: no spec needed
    client = make_client(app_store=own_store, **settings_for(roots))
    before = search(client, top_k=100)
    assert before["fingerprint"] == encoder.fingerprint
    assert parse_version(before["collection"]) == ("docs", encoder.fingerprint, 1)
    assert [h["id"] for h in before["hits"]]  # answered

    spec = str(roots["out"] / "retrain" / "b")
    build(own_store, "docs", encoder_b, spec)  # a retrain promotion: same alias, new encoder
    after = search(client, top_k=100)
    assert after["fingerprint"] == encoder_b.fingerprint and after["encoder"] == "tiny-1"
    assert parse_version(after["collection"]) == ("docs", encoder_b.fingerprint, 2)
    assert [h["payload"]["doc_id"] for h in after["hits"]] == brute_force(encoder_b, QUERY)
    assert [h["payload"]["doc_id"] for h in before["hits"]] == brute_force(encoder, QUERY)

    health = client.get("/health").json()
    served = {e["fingerprint"]: e for e in health["encoders"]}
    assert served[encoder.fingerprint]["default"] is True  # still EMBER_ENCODER
    assert served[encoder_b.fingerprint]["serves"] == ["docs"]
    assert served[encoder_b.fingerprint]["name"] == "tiny-1"
    assert health["fingerprint"] == encoder.fingerprint
    listed = {c["name"]: c for c in client.get("/collections").json()["collections"]}
    docs = next(c for c in listed.values() if "docs" in c["aliases"])
    assert docs["name"] == after["collection"]
    assert docs["encoder_fingerprint"] == after["fingerprint"] == encoder_b.fingerprint
    assert docs["encoder"] == "tiny-1" and docs["encoder_loaded"] and docs["searchable"]

    # /v1/embeddings stays on the default encoder
    r = client.post("/v1/embeddings", json={"input": "fox"})
    want = encoder.encode_documents(["fox"])[0]
    assert np.allclose(r.json()["data"][0]["embedding"], want, atol=1e-5)


def test_live_switch_under_load_fails_no_request(
    live_server: Any, own_store: Store, encoder: Encoder, encoder_b: Encoder,
    roots: dict[str, Path],
) -> None:  # fmt: skip
    build(own_store, "docs", encoder, None)
    server = live_server(app_store=own_store, **settings_for(roots))
    answers: list[tuple[int, str, str | None]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/search", json={"query": QUERY, "collection": "docs", "top_k": 3})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                answers.append((r.status_code, body["collection"], body["fingerprint"]))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        build(own_store, "docs", encoder_b, str(roots["out"] / "retrain" / "b"))
        switched = len(answers)
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    fingerprints = [fp for _, _, fp in answers]
    for _, collection, fp in answers:
        parsed = parse_version(collection)
        assert parsed is not None and parsed[1] == fp  # collection and encoder always agree
    assert fingerprints[0] == encoder.fingerprint
    assert fingerprints[-1] == encoder_b.fingerprint
    assert len(answers) > switched + 4  # requests were answered after the switch too
    # once B answered, nobody was answered by A on the moved alias again (per client order
    # is not global, so check the tail only)
    assert set(fingerprints[-4:]) == {encoder_b.fingerprint}


# ---- what may be loaded ---------------------------------------------------------------------
def test_a_spec_outside_the_allowed_roots_is_refused(
    make_client: ClientFactory, own_store: Store, encoder: Encoder, roots: dict[str, Path],
) -> None:  # fmt: skip
    outside = encoder_folder(roots["elsewhere"] / "d", seed=3)
    build(own_store, "docs", outside, str(roots["elsewhere"] / "d"))
    client = make_client(app_store=own_store, **settings_for(roots))
    r = client.post("/search", json={"query": QUERY, "collection": "docs"})
    assert r.status_code == 409
    message = r.json()["message"]
    assert "not one this server loads" in message and "EMBER_JOB_OUTPUT_DIR" in message
    (listed,) = client.get("/collections").json()["collections"]
    assert listed["searchable"] is False and listed["encoder_loaded"] is False
    fingerprints = [e["fingerprint"] for e in client.get("/health").json()["encoders"]]
    assert fingerprints == [encoder.fingerprint]  # nothing was loaded


def test_a_symlink_out_of_a_root_is_refused(roots: dict[str, Path], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, job_output_dir=roots["out"])
    roots["out"].mkdir(parents=True, exist_ok=True)
    link = roots["out"] / "sneaky"
    if not link.exists():
        link.symlink_to(roots["elsewhere"], target_is_directory=True)
    with pytest.raises(ValueError, match="not one this server loads"):
        check_spec(str(link / "d"), settings)
    with pytest.raises(ValueError, match="not one this server loads"):
        check_spec("relative/folder", settings)
    assert check_spec(str(roots["out"] / "retrain" / "b"), settings).endswith("retrain/b")


def test_a_build_without_a_spec_keeps_the_409(
    make_client: ClientFactory, own_store: Store, encoder_c: Encoder, roots: dict[str, Path],
) -> None:  # fmt: skip
    build(own_store, "docs", encoder_c, None)
    client = make_client(app_store=own_store, **settings_for(roots))
    r = client.post("/search", json={"query": QUERY, "collection": "docs"})
    assert r.status_code == 409
    assert encoder_c.fingerprint in r.json()["message"]
    assert "records no encoder spec" in r.json()["message"]


# ---- unloading ------------------------------------------------------------------------------
def test_encoders_past_the_cap_are_unloaded_least_recent_first(
    make_client: ClientFactory, own_store: Store, encoder: Encoder, encoder_b: Encoder,
    encoder_c: Encoder, roots: dict[str, Path],
) -> None:  # fmt: skip
    build(own_store, "b", encoder_b, str(roots["out"] / "retrain" / "b"))
    build(own_store, "c", encoder_c, str(roots["out"] / "retrain" / "c"))
    client = make_client(app_store=own_store, **settings_for(roots, api_max_encoders=2))

    def loaded() -> list[str]:
        return [e["fingerprint"] for e in client.get("/health").json()["encoders"]]

    assert search(client, "b")["fingerprint"] == encoder_b.fingerprint
    assert loaded() == [encoder.fingerprint, encoder_b.fingerprint]
    assert search(client, "c")["fingerprint"] == encoder_c.fingerprint
    assert loaded() == [encoder.fingerprint, encoder_c.fingerprint]  # B unloaded, default kept
    listed = {a: c for c in client.get("/collections").json()["collections"] for a in c["aliases"]}
    assert listed["b"]["searchable"] and not listed["b"]["encoder_loaded"]
    assert listed["c"]["encoder_loaded"]
    # B comes back on demand, with the same ranking
    again = search(client, "b", top_k=100)
    assert again["fingerprint"] == encoder_b.fingerprint
    assert [h["payload"]["doc_id"] for h in again["hits"]] == brute_force(encoder_b, QUERY)
    assert loaded() == [encoder.fingerprint, encoder_b.fingerprint]


def test_a_slow_load_answers_503_with_retry_after_then_serves(
    make_client: ClientFactory, own_store: Store, encoder_b: Encoder, roots: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    build(own_store, "docs", encoder_b, str(roots["out"] / "retrain" / "b"))
    load = EncoderRegistry._load_encoder
    gate = threading.Event()

    def slow(self: EncoderRegistry, spec: str) -> Encoder:
        gate.wait(30)
        return load(self, spec)

    monkeypatch.setattr(EncoderRegistry, "_load_encoder", slow)
    client = make_client(app_store=own_store, **settings_for(roots, api_encoder_wait_s=0.1))
    r = client.post("/search", json={"query": QUERY, "collection": "docs"})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert "loading" in r.json()["message"]
    assert client.get("/health").json()["loading"] == [encoder_b.fingerprint]
    gate.set()
    deadline = time.monotonic() + 30
    while (r := client.post("/search", json={"query": QUERY, "collection": "docs"})).status_code:
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 200 and r.json()["fingerprint"] == encoder_b.fingerprint


def test_an_alias_seen_on_another_encoder_loads_it_ahead(
    make_client: ClientFactory, own_store: Store, encoder_b: Encoder, roots: dict[str, Path],
) -> None:  # fmt: skip
    build(own_store, "docs", encoder_b, str(roots["out"] / "retrain" / "b"))
    client = make_client(app_store=own_store, **settings_for(roots))
    (listed,) = client.get("/collections").json()["collections"]
    assert listed["searchable"] and listed["encoder"] == "tiny-1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # loading in the background, no search asked for it
        served = [e["fingerprint"] for e in client.get("/health").json()["encoders"]]
        if encoder_b.fingerprint in served:
            break
        time.sleep(0.05)
    assert encoder_b.fingerprint in served


@pytest.mark.parametrize(
    ("folder", "message"),
    [("missing", "failed to load"), ("b", "changed since the build")],
)
def test_a_recorded_encoder_that_does_not_load_as_recorded_is_409(
    make_client: ClientFactory, own_store: Store, encoder_b: Encoder, encoder_c: Encoder,
    roots: dict[str, Path], folder: str, message: str,
) -> None:  # fmt: skip
    build(own_store, "docs", encoder_c, str(roots["out"] / "retrain" / folder))
    client = make_client(app_store=own_store, **settings_for(roots))
    for _ in range(2):  # the second answer comes from the remembered failure
        r = client.post("/search", json={"query": QUERY, "collection": "docs"})
        assert r.status_code == 409 and message in r.json()["message"], r.text
    (listed,) = client.get("/collections").json()["collections"]
    assert listed["searchable"] is False
