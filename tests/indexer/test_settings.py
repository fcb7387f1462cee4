"""The settings layers: the indexer's, the workers' (which extend it) and the API's (which extend
those), read from one ``EMBER_*`` environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.settings import Settings, clear_settings_cache, get_settings
from search_api.settings import ApiSettings, get_api_settings
from workers.settings import WorkerSettings, get_worker_settings


def test_each_layer_types_only_its_own_settings() -> None:
    indexer, worker, api = (set(k.model_fields) for k in (Settings, WorkerSettings, ApiSettings))
    assert indexer < worker < api
    assert not any(n.startswith(("api_", "job_", "worker_")) or "broker" in n for n in indexer)
    assert not any(n.startswith("api_") for n in worker)
    assert {"broker_url", "job_input_dir", "retrain_schedule"} <= worker - indexer
    assert {"api_keys", "api_port", "api_max_batch"} <= api - worker


def test_one_environment_feeds_every_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMBER_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("EMBER_API_PORT", "8123")
    clear_settings_cache()
    try:
        assert get_settings().data_dir == tmp_path  # the other variables are not its business
        worker = get_worker_settings()
        assert (worker.data_dir, worker.broker_url) == (tmp_path, "redis://127.0.0.1:1/0")
        api = get_api_settings()
        assert (api.data_dir, api.broker_url, api.api_port) == (tmp_path, worker.broker_url, 8123)
        monkeypatch.setenv("EMBER_API_PORT", "8124")
        assert get_api_settings().api_port == 8123  # read once per process ...
        clear_settings_cache()
        assert get_api_settings().api_port == 8124  # ... until the cache is cleared
    finally:
        clear_settings_cache()


def test_a_setting_of_another_layer_is_refused_by_name() -> None:
    # extra="ignore" lets every layer read one environment; a keyword is a caller's mistake
    with pytest.raises(TypeError, match="Settings has no setting broker_url"):
        Settings(broker_url="redis://x")
    with pytest.raises(TypeError, match="WorkerSettings has no setting api_port"):
        WorkerSettings(api_port=1)
    assert ApiSettings(broker_url="redis://x", api_port=1).broker_url == "redis://x"
