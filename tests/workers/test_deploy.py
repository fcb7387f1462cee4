"""deploy/: the compose file's structure and settings (Docker itself cannot run here), and the
env-var reference covering every setting."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from search_api.settings import ApiSettings
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SERVICES = {"redis", "qdrant", "api", "worker-cpu", "worker-gpu0", "beat"}
DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-(?P<default>[^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's EMBER_* variables with ``${VAR:-default}`` replaced by its default."""
    env = service.get("environment") or {}
    return {k: DEFAULTED.sub(lambda m: m["default"], str(v)) for k, v in env.items()}


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name in ("api", "worker-cpu", "worker-gpu0", "beat"):
        depends = compose["services"][name]["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}


def test_the_gpu_worker_reserves_its_device(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["worker-gpu0"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["device_ids"] == ["0"]  # one worker process per device
    assert gpu["build"]["dockerfile"] == "deploy/Dockerfile.gpu"
    assert environment(gpu)["EMBER_WORKER_DEVICE"] == "cuda"
    assert "--queues" in gpu["command"] and "index,train" in gpu["command"]


def test_workers_have_unique_stable_node_names(compose: dict[str, Any]) -> None:
    names = []
    for name, service in compose["services"].items():
        if not name.startswith("worker-"):
            continue
        assert service["hostname"], name  # a fixed hostname: %h survives restarts
        command = service["command"]
        names.append(command[command.index("--name") + 1].replace("%h", service["hostname"]))
        assert "replicas" not in (service.get("deploy") or {})
    assert len(names) == len(set(names)) == 2


def test_every_service_shares_one_qdrant_server_and_broker(compose: dict[str, Any]) -> None:
    for name in ("api", "worker-cpu", "worker-gpu0", "beat"):
        env = environment(compose["services"][name])
        assert env["EMBER_QDRANT_URL"] == "http://qdrant:6333", name
        assert env["EMBER_BROKER_URL"] == "redis://redis:6379/0", name


def test_compose_environment_is_valid_settings(compose: dict[str, Any]) -> None:
    fields = set(ApiSettings.model_fields)
    for name, service in compose["services"].items():
        env = environment(service)
        ember = {k[len("EMBER_") :].lower(): v for k, v in env.items() if k.startswith("EMBER_")}
        unknown = sorted(set(ember) - fields)
        assert not unknown, f"{name}: not settings: {unknown}"
        if ember:  # values parse (JSON lists, numbers) as the services would read them
            values = {k: v for k, v in ember.items() if v != ""}
            ApiSettings.model_validate(
                {k: (yaml.safe_load(v) if k in JSON_FIELDS else v) for k, v in values.items()}
            )


JSON_FIELDS = {"api_keys", "worker_queues", "retrain_schedule", "trainer_modules"}


def test_redis_keeps_its_data_across_restarts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_the_reference_documents_every_setting() -> None:
    text = (DEPLOY / "README.md").read_text()
    missing = [n for n in ApiSettings.model_fields if f"`EMBER_{n.upper()}`" not in text]
    assert not missing, f"deploy/README.md does not document: {missing}"


def test_dockerfiles_install_the_right_torch() -> None:
    cpu = (DEPLOY / "Dockerfile").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in cpu
    gpu = (DEPLOY / "Dockerfile.gpu").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:", gpu, re.M)
    assert 'pip install --index-url "${TORCH_INDEX}" torch==2.13.0' in gpu
    for dockerfile in (cpu, gpu):
        for package in ("encoders", "indexer", "workers", "search_api", "ember"):
            assert f"COPY {package} ./{package}" in dockerfile
    assert Path(DEPLOY / "Dockerfile.dockerignore").is_file()
