"""POST /search on a MoEE ``sum`` collection: the API ranks by cos(hs) + w * cos(rw) over the
two named vectors (exact fused search), the same ranking as numpy's brute force and as the
library's ``search_batch``. A tiny random Mixtral stands in for a pretrained MoE (none exists
offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from encoders import Encoder, EncoderConfig
from encoders.config import MoeeConfig
from encoders.moee import MoeeEncoder, sum_similarity
from encoders.testing import tiny_model_folder
from indexer.pipeline import index_corpus
from indexer.search import search_batch
from indexer.stores import open_store
from search_api.app import create_app
from tests.search_api.conftest import make_settings, wait_ready

DOCS = [
    "the cat sat on the mat",
    "a dog chased the ball in the park",
    "proteins fold into shapes",
    "genes are copied before cells divide",
    "large language models turn text into vectors",
    "vitamin D deficiency and infection",
    "stock markets fell sharply on monday",
    "a lazy dog sleeps",
]
INSTRUCTION = "Retrieve:"


@pytest.mark.parametrize("weight", [0.8, 3.0])
def test_search_endpoint_fuses_moee_sum_vectors(
    tmp_path: Path, weight: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_model_folder(tmp_path / "mixtral", "mixtral")
    config = EncoderConfig(
        base_model=str(folder), kind="moee", moee=MoeeConfig(similarity="sum", rw_weight=weight)
    )
    enc = Encoder.from_config(config)
    assert isinstance(enc, MoeeEncoder)
    enc.fit_stats(DOCS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in
                              enumerate(DOCS)))  # fmt: skip
    settings = make_settings(tmp_path / "data", api_default_collection="docs")
    store = open_store(settings)
    try:
        index_corpus(corpus, "docs", enc, store, progress=False)
        assert set(store.collection_info("docs").vectors) == {"hs", "rw"}  # no "dense" vector
        queries = ["proteins and genes", "a dog", "vectors from language models"]
        expected_scores = sum_similarity(
            enc.encode_queries_named(queries, INSTRUCTION), enc.encode_named(DOCS), weight
        )
        library = search_batch(store, enc, "docs", queries, instruction=INSTRUCTION, top_k=5)
        app = create_app(settings, encoder=enc, store=store)

        def no_round_trip(vectors: object) -> None:
            raise AssertionError("queries travel as named vectors, never combined and split")

        monkeypatch.setattr(enc, "split_combined", no_round_trip)
        with TestClient(app) as client:
            wait_ready(client)
            for query, row, lib in zip(queries, expected_scores, library, strict=True):
                r = client.post(
                    "/search", json={"query": query, "instruction": INSTRUCTION, "top_k": 5}
                )
                assert r.status_code == 200, r.text
                hits = r.json()["hits"]
                order = np.argsort(-row, kind="stable")[:5]
                assert [h["payload"]["doc_id"] for h in hits] == [f"d{i}" for i in order]
                np.testing.assert_allclose([h["score"] for h in hits], row[order], atol=1e-5)
                assert [h["id"] for h in hits] == [h.id for h in lib]
            # filters go through the fused search too
            r = client.post(
                "/search",
                json={"query": "a dog", "instruction": INSTRUCTION, "top_k": 3,
                      "filter": {"doc_id": "d7"}},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            assert [h["payload"]["doc_id"] for h in r.json()["hits"]] == ["d7"]
            # listed as searchable though it holds no "dense" vector (its own hs + rw)
            [listed] = client.get("/collections").json()["collections"]
            assert listed["vectors"] == {"hs": enc.hs_dim, "rw": enc.rw_dim}
            assert listed["searchable"] is True
    finally:
        store.close()


def test_moee_document_hits_and_pages(tmp_path: Path) -> None:
    folder = tiny_model_folder(tmp_path / "mixtral", "mixtral")
    config = EncoderConfig(
        base_model=str(folder), kind="moee", moee=MoeeConfig(similarity="sum", rw_weight=3.0)
    )
    enc = Encoder.from_config(config)
    assert isinstance(enc, MoeeEncoder)
    enc.fit_stats(DOCS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(
        json.dumps({"id": f"d{i}", "text": f"{t}. {DOCS[(i + 2) % len(DOCS)]}. {DOCS[i - 1]}"})
        + "\n" for i, t in enumerate(DOCS)
    ))  # fmt: skip
    settings = make_settings(tmp_path / "data", api_default_collection="docs")
    store = open_store(settings)
    try:
        index_corpus(corpus, "docs", enc, store, chunk_tokens=6, overlap=1, progress=False)
        query = "a dog in the park"
        (chunks,) = search_batch(store, enc, "docs", [query], instruction=INSTRUCTION, top_k=200)
        best: dict[str, object] = {}
        for h in chunks:  # the exact fused chunk ranking (checked against numpy above)
            best.setdefault(h.payload["doc_id"], h)
        assert len(chunks) > len(best) == len(DOCS)
        app = create_app(settings, encoder=enc, store=store)
        with TestClient(app) as client:
            wait_ready(client)
            body = {"query": query, "instruction": INSTRUCTION}
            whole = client.post("/search", json={**body, "top_k": 8}).json()["hits"]
            assert [h["payload"]["doc_id"] for h in whole] == list(best)
            assert [h["id"] for h in whole] == [h.id for h in best.values()]  # type: ignore[attr-defined]
            for hit in whole:
                own = [c for c in chunks if c.payload["doc_id"] == hit["payload"]["doc_id"]]
                assert hit["score"] == pytest.approx(own[0].score, abs=1e-5)
                passages = hit["passages"]  # its best chunks among the candidates fetched
                assert 1 <= len(passages) <= 3
                assert [p["id"] for p in passages] == [c.id for c in own[: len(passages)]]
            pages = [
                client.post("/search", json={**body, "top_k": 3, "offset": o}).json()["hits"]
                for o in (0, 3, 6)
            ]
            assert [h["id"] for p in pages for h in p] == [h["id"] for h in whole]
            r = client.post(
                "/search", json={**body, "top_k": 8, "filter": {"doc_id": ["d1", "d2"]}}
            )
            assert sorted(h["payload"]["doc_id"] for h in r.json()["hits"]) == ["d1", "d2"]
    finally:
        store.close()
