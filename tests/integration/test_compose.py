"""docker-compose.yml runs the same configs, at the same versions, as the local stack.

There is no Docker engine here, so the file is checked as data: its services, images,
ports and mounted configs must match what ``scripts/otel-bins.sh`` builds and what the
other integration tests run; the env vars it sets must be ones the configs read; and the
built binaries must accept the configs with exactly the environment compose gives them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ._otel_processes import (
    JAEGER_BIN,
    JAEGER_CONFIG,
    LOADBALANCING_CONFIG,
    OTELCOL_BIN,
    REPO_ROOT,
)
from .conftest import require_binary

pytestmark = pytest.mark.integration

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
OTEL_BINS = REPO_ROOT / "scripts" / "otel-bins.sh"
MANIFEST = REPO_ROOT / "collector" / "builder-config.yaml"
BRIDGE_PORT = 4328
BRIDGE_GRPC_PORT = 4329
BRIDGES = ("bridge-1", "bridge-2")


def _pinned(name: str) -> str:
    """A ``readonly NAME="..."`` version pin from scripts/otel-bins.sh."""
    match = re.search(rf'^readonly {name}="([^"]+)"$', OTEL_BINS.read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in {OTEL_BINS}"
    return match.group(1)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind mount."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            mounts[target] = (REPO_ROOT / source).resolve()
    return mounts


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """Container port -> (host address, host port) of each published port."""
    published = {}
    for spec in service.get("ports", []):
        host, host_port, container_port = str(spec).split(":")
        published[int(container_port)] = (host, int(host_port))
    return published


def _config_env_vars(config: Path) -> set[str]:
    return set(re.findall(r"\$\{env:([A-Z0-9_]+)", config.read_text()))


def _config_path_in_command(service: dict[str, Any]) -> str:
    [flag] = [arg for arg in service["command"] if str(arg).startswith("--config=")]
    return str(flag).removeprefix("--config=")


def test_services_are_the_stack_two_bridges_and_demo(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"jaeger", "collector", *BRIDGES, "demo"}


def test_images_are_the_versions_otel_bins_builds(compose: dict[str, Any]) -> None:
    jaeger_version = _pinned("JAEGER_VERSION").removeprefix("v")
    collector_version = _pinned("OCB_VERSION").removeprefix("v")
    assert _service(compose, "jaeger")["image"] == f"jaegertracing/jaeger:{jaeger_version}"
    assert (
        _service(compose, "collector")["image"]
        == f"otel/opentelemetry-collector-contrib:{collector_version}"
    )
    # The ocb manifest builds the same Collector release.
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["dist"]["version"] == collector_version
    for kind in ("receivers", "processors", "exporters"):
        for module in manifest[kind]:
            assert module["gomod"].endswith(f" v{collector_version}"), module
    # The stable confmap providers of the same release: v1.(minor - 94).
    minor = int(collector_version.split(".")[1])
    for module in manifest["providers"]:
        assert module["gomod"].endswith(f" v1.{minor - 94}.0"), module


@pytest.mark.parametrize(
    ("service_name", "config"), [("jaeger", JAEGER_CONFIG), ("collector", LOADBALANCING_CONFIG)]
)
def test_mounted_config_is_the_one_the_tests_run(
    compose: dict[str, Any], service_name: str, config: Path
) -> None:
    service = _service(compose, service_name)
    mounts = _mounts(service)
    target = _config_path_in_command(service)
    assert mounts[target] == config
    assert config.is_file()


@pytest.mark.parametrize(
    ("service_name", "config"), [("jaeger", JAEGER_CONFIG), ("collector", LOADBALANCING_CONFIG)]
)
def test_every_env_var_compose_sets_is_read_by_the_config(
    compose: dict[str, Any], service_name: str, config: Path
) -> None:
    assert set(_env(_service(compose, service_name))) <= _config_env_vars(config)


def test_published_ports_are_the_ports_the_services_listen_on(compose: dict[str, Any]) -> None:
    jaeger = _env(_service(compose, "jaeger"))
    collector = _env(_service(compose, "collector"))
    # Inside a container, a server on 127.0.0.1 could not be reached from other containers.
    assert jaeger["JAEGER_LISTEN_HOST"] == "0.0.0.0"
    assert collector["OTELCOL_LISTEN_HOST"] == "0.0.0.0"

    assert _published(_service(compose, "jaeger")) == {
        int(jaeger["JAEGER_QUERY_HTTP_PORT"]): ("127.0.0.1", 16686)
    }
    assert _published(_service(compose, "collector")) == {
        int(collector["OTELCOL_OTLP_GRPC_PORT"]): ("127.0.0.1", 4317),
        int(collector["OTELCOL_OTLP_HTTP_PORT"]): ("127.0.0.1", 4318),
    }


def test_services_point_at_each_other(compose: dict[str, Any]) -> None:
    jaeger = _env(_service(compose, "jaeger"))
    collector = _env(_service(compose, "collector"))
    assert collector["JAEGER_OTLP_GRPC_ENDPOINT"] == f"jaeger:{jaeger['JAEGER_OTLP_GRPC_PORT']}"
    # The load_balancing exporter's static list: every bridge's OTLP/gRPC port, once.
    endpoints = yaml.safe_load(collector["HACKAGENT_BRIDGE_GRPC_ENDPOINTS"])
    assert endpoints == [f"{name}:{BRIDGE_GRPC_PORT}" for name in BRIDGES]
    assert yaml.safe_load(collector["OTELCOL_TRACES_EXPORTERS"]) == [
        "otlp_grpc/jaeger",
        "load_balancing/bridges",
    ]
    demo = _env(_service(compose, "demo"))
    assert demo["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        f"http://collector:{collector['OTELCOL_OTLP_HTTP_PORT']}"
    )
    assert demo.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") == "http/protobuf"


def test_bridges_and_demo_run_the_project_image(compose: dict[str, Any]) -> None:
    bridges = [_service(compose, name) for name in BRIDGES]
    demo = _service(compose, "demo")
    for service in (*bridges, demo):
        assert service["image"] == demo["image"]
        dockerfile = REPO_ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile == REPO_ROOT / "collector" / "bridge.Dockerfile"
    for bridge in bridges:
        assert bridge["command"] == [
            "hackagent-otel",
            "bridge",
            "--host",
            "0.0.0.0",
            "--grpc-port",
            str(BRIDGE_GRPC_PORT),
        ]
    assert demo["command"] == ["hackagent-otel", "demo"]


def test_each_bridge_has_its_own_outbox_volume(compose: dict[str, Any]) -> None:
    volumes = [tuple(_service(compose, name)["volumes"]) for name in BRIDGES]
    sources = [volume.split(":")[0] for mounts in volumes for volume in mounts]
    assert len(set(sources)) == len(BRIDGES), volumes
    assert set(sources) == set(compose["volumes"])


def test_bridge_dockerfile_installs_the_project() -> None:
    dockerfile = (REPO_ROOT / "collector" / "bridge.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    # Everything it copies into the build exists (pip install . needs all of it).
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in sources.split():
            assert (REPO_ROOT / source).exists(), source
    assert 'CMD ["hackagent-otel", "bridge", "--host", "0.0.0.0"]' in dockerfile
    assert f"EXPOSE {BRIDGE_PORT} {BRIDGE_GRPC_PORT}" in dockerfile


@pytest.mark.parametrize(
    ("service_name", "binary", "config"),
    [("jaeger", JAEGER_BIN, JAEGER_CONFIG), ("collector", OTELCOL_BIN, LOADBALANCING_CONFIG)],
)
def test_binaries_accept_the_configs_with_the_compose_environment(
    compose: dict[str, Any], service_name: str, binary: Path, config: Path
) -> None:
    require_binary(binary)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTELCOL_", "JAEGER_", "OTEL_"))
    }
    env.update(_env(_service(compose, service_name)))
    result = subprocess.run(
        [str(binary), "validate", f"--config={config}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
