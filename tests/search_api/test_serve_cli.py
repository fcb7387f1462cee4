"""``ember serve``: a real subprocess on a loopback port on the embedded store, and its
one-line errors (in-process, through click's runner)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ember.cli import cli
from encoders import load_encoder
from encoders.testing import tiny_model_folder
from indexer.pipeline import index_corpus
from indexer.settings import Settings
from indexer.stores import open_store

EMBER = [sys.executable, "-m", "ember"]
# another process that opens the default embedded store in a folder and holds it until stdin ends
LOCK_HOLDER = """
import sys
from indexer.settings import Settings
from indexer.stores import open_store
store = open_store(Settings(data_dir=sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
store.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("EMBER_")}
    out["TRANSFORMERS_VERBOSITY"] = "error"
    return out


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("serve") / "tiny", "llama")


def test_serve_answers_on_the_embedded_default(tmp_path: Path, model_folder: Path) -> None:
    port = free_port()
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "the quick brown fox"}) + "\n")
    common = ["--encoder", str(model_folder), "--data-dir", str(tmp_path / "data")]
    with open_store(Settings(data_dir=tmp_path / "data")) as store:  # what `ember index` does
        index_corpus(docs, "default", load_encoder(str(model_folder)), store, progress=False)
    proc = subprocess.Popen(
        [*EMBER, "serve", "--port", str(port), "--log-level", "warning", *common],
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"{url}/health", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"not ready (exit code {proc.poll()})"
        hits = httpx.post(f"{url}/search", json={"query": "fox"}, timeout=30).json()["hits"]
        assert [h["payload"]["doc_id"] for h in hits] == ["a"]
        page = httpx.get(f"{url}/", timeout=30)
        assert page.status_code == 200 and "<title>Ember search</title>" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"serving on http://127.0.0.1:{port}/" in err


def test_serve_fails_fast_on_an_unknown_encoder(tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--encoder", "no-such-encoder"]
    r = CliRunner().invoke(cli, args, env={"EMBER_DEBUG": ""})
    assert r.exit_code == 1
    assert "--encoder: encoder 'no-such-encoder' is not a preset" in r.output
    assert "Traceback" not in r.output


def test_serve_refuses_a_store_locked_by_another_process(
    tmp_path: Path, model_folder: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
        env=env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        args = ["serve", "--data-dir", str(tmp_path), "--encoder", str(model_folder)]
        r = CliRunner().invoke(cli, args, env={"EMBER_DEBUG": ""})
    finally:
        holder.communicate(input="", timeout=60)  # EOF on stdin: the holder closes and exits
    assert r.exit_code == 1
    assert "locked by another process" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    ("args", "environ", "serves"),
    [
        (["--host", "0.0.0.0"], {}, False),
        (["--host", "::"], {}, False),
        (["--host", "192.0.2.7"], {}, False),
        (["--host", "example.org"], {}, False),
        ([], {"EMBER_API_HOST": "0.0.0.0"}, False),
        (["--host", "0.0.0.0", "--insecure"], {}, True),
        (["--host", "0.0.0.0"], {"EMBER_API_KEYS": '["k"]'}, True),
        (["--host", "127.0.0.1"], {}, True),
        (["--host", "127.0.0.2"], {}, True),
        (["--host", "localhost"], {}, True),
        (["--host", "::1"], {}, True),
        ([], {}, True),
    ],
)
def test_serve_binds_beyond_loopback_only_with_a_key_or_insecure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    environ: dict[str, str],
    serves: bool,
) -> None:
    import uvicorn

    started: list[str] = []  # never a real server on a public interface: record the bind
    monkeypatch.setattr(uvicorn, "run", lambda app, host, **_: started.append(host))
    cli_args = ["serve", "--data-dir", str(tmp_path), "--encoder", "minilm", *args]
    base = {"EMBER_DEBUG": "", "EMBER_API_KEYS": "[]", "EMBER_API_HOST": "127.0.0.1"}
    r = CliRunner().invoke(cli, cli_args, env={**base, **environ})
    if serves:
        assert r.exit_code == 0, r.output
        assert len(started) == 1
    else:
        assert r.exit_code == 1 and started == []
        (line,) = r.output.strip().splitlines()
        assert "refusing to serve beyond loopback without an API key" in line
        assert "EMBER_API_KEYS" in line and "--insecure" in line
