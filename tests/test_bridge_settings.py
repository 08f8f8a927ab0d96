"""BridgeSettings.resolve: arguments, then env vars, then defaults; the bridge's own outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from hackagent_otel.bridge import BridgeSettings
from hackagent_otel.bridge._settings import default_bridge_outbox_path


def test_defaults_listen_on_loopback_port_4328_with_collector_sized_limits(
    tmp_path: Path,
) -> None:
    settings = BridgeSettings.resolve(env={"XDG_STATE_HOME": str(tmp_path)})

    assert (settings.header_timeout, settings.body_timeout) == (10.0, 30.0)
    assert settings.max_spans_per_request == 10_000
    assert (settings.max_connections, settings.max_buffered_bytes) == (512, 64 * 1024 * 1024)

    assert (settings.host, settings.port, settings.token) == ("127.0.0.1", 4328, None)
    assert settings.grpc_port is None  # OTLP/gRPC only when asked for
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.max_decompressed_bytes == 20 * 1024 * 1024
    assert settings.hackagent_base_url is None
    assert settings.outbox_path == tmp_path / "hackagent-otel" / "bridge-outbox.sqlite3"


def test_env_vars_configure_everything() -> None:
    env = {
        "HACKAGENT_BRIDGE_HOST": "0.0.0.0",
        "HACKAGENT_BRIDGE_PORT": "5000",
        "HACKAGENT_BRIDGE_GRPC_PORT": "5001",
        "HACKAGENT_BRIDGE_TOKEN": "tok",
        "HACKAGENT_BRIDGE_MAX_BODY_BYTES": "1000",
        "HACKAGENT_BRIDGE_MAX_DECOMPRESSED_BYTES": "2000",
        "HACKAGENT_BRIDGE_MAX_PENDING": "30",
        "HACKAGENT_BRIDGE_MAX_SPANS_PER_REQUEST": "70",
        "HACKAGENT_BRIDGE_MAX_BUFFERED_BYTES": "4000",
        "HACKAGENT_BRIDGE_MAX_CONNECTIONS": "40",
        "HACKAGENT_BRIDGE_HEADER_TIMEOUT": "2.5",
        "HACKAGENT_BRIDGE_BODY_TIMEOUT": "12",
        "HACKAGENT_BRIDGE_OUTBOX_PATH": "/tmp/b.sqlite3",
        "HACKAGENT_API_KEY": "key",
        "HACKAGENT_REDACT_KEYS": "prompt, session",
        "HACKAGENT_BRIDGE_LOG_LEVEL": "WARNING",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",  # an app's setting: not the bridge's
    }

    settings = BridgeSettings.resolve(env=env)

    assert (settings.host, settings.port, settings.token) == ("0.0.0.0", 5000, "tok")
    assert settings.grpc_port == 5001
    assert (settings.max_body_bytes, settings.max_decompressed_bytes) == (1000, 2000)
    assert (settings.max_pending_records, settings.max_spans_per_request) == (30, 70)
    assert (settings.max_buffered_bytes, settings.max_connections) == (4000, 40)
    assert (settings.header_timeout, settings.body_timeout) == (2.5, 12.0)
    assert settings.outbox_path == Path("/tmp/b.sqlite3")
    assert settings.hackagent_base_url == "https://api.hackagent.dev"
    assert settings.hackagent_api_key == "key"
    assert settings.redact_keys == ("prompt", "session")
    assert settings.log_level == "warning"


def test_arguments_win_over_env_vars() -> None:
    env = {"HACKAGENT_BRIDGE_PORT": "5000", "HACKAGENT_BASE_URL": "http://env:1"}

    settings = BridgeSettings.resolve(port=6000, hackagent_base_url="http://arg:2", env=env)

    assert (settings.port, settings.hackagent_base_url) == (6000, "http://arg:2")


def test_the_apps_outbox_variable_is_used_when_no_bridge_specific_one_is_set() -> None:
    assert default_bridge_outbox_path({"HACKAGENT_OUTBOX_PATH": "/x/o.sqlite3"}) == Path(
        "/x/o.sqlite3"
    )
    assert default_bridge_outbox_path(
        {"HACKAGENT_OUTBOX_PATH": "/x/o.sqlite3", "HACKAGENT_BRIDGE_OUTBOX_PATH": "/y/b.sqlite3"}
    ) == Path("/y/b.sqlite3")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HACKAGENT_BRIDGE_PORT": "http"}, "HACKAGENT_BRIDGE_PORT='http' is not an integer"),
        ({"HACKAGENT_BRIDGE_PORT": "70000"}, "not a TCP port"),
        ({"HACKAGENT_BRIDGE_GRPC_PORT": "70000"}, "grpc_port 70000 is not a TCP port"),
        ({"HACKAGENT_BRIDGE_GRPC_PORT": "grpc"}, "HACKAGENT_BRIDGE_GRPC_PORT='grpc' is not"),
        ({"HACKAGENT_BRIDGE_MAX_BODY_BYTES": "0"}, "max_body_bytes must be at least 1"),
        ({"HACKAGENT_BRIDGE_MAX_CONNECTIONS": "0"}, "max_connections must be at least 1"),
        ({"HACKAGENT_BRIDGE_HEADER_TIMEOUT": "soon"}, "HEADER_TIMEOUT='soon' is not a number"),
        ({"HACKAGENT_BRIDGE_BODY_TIMEOUT": "0"}, "body_timeout must be positive"),
        ({"HACKAGENT_BASE_URL": "ftp://x"}, "must start with http"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BridgeSettings.resolve(env=env)


def test_every_setting_has_its_env_var_and_the_old_names_are_still_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "HACKAGENT_BRIDGE_MAX_CONCURRENT_REQUESTS": "2",
        "HACKAGENT_BRIDGE_MAX_WAITING_REQUESTS": "0",
        "HACKAGENT_BRIDGE_RETRY_AFTER_SECONDS": "9",
        "HACKAGENT_BRIDGE_SHUTDOWN_TIMEOUT": "3.5",
        "HACKAGENT_BRIDGE_MAX_PENDING": "30",
    }

    settings = BridgeSettings.resolve(env=env)

    assert (settings.max_concurrent_requests, settings.max_waiting_requests) == (2, 0)
    assert (settings.retry_after_seconds, settings.shutdown_timeout) == (9, 3.5)
    assert settings.max_pending_records == 30
    assert "HACKAGENT_BRIDGE_MAX_PENDING_RECORDS" in caplog.text  # the name to use now
    current = {"HACKAGENT_BRIDGE_MAX_PENDING_RECORDS": "40", **env}
    assert BridgeSettings.resolve(env=current).max_pending_records == 40


def test_a_setting_that_names_no_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="max_pendnig"):
        BridgeSettings.resolve(max_pendnig=3, env={})
