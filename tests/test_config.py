"""Settings.resolve(): argument, then specific env var, then generic, then default."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from hackagent_otel._config import (
    DEFAULT_BASE_URL,
    DEFAULT_SERVICE_NAME,
    Settings,
    default_outbox_path,
)


def test_defaults_with_an_empty_environment() -> None:
    settings = Settings.resolve(env={})

    assert settings.service_name == DEFAULT_SERVICE_NAME
    assert settings.otlp_enabled is False
    assert settings.otlp_endpoint is None
    assert settings.otlp_protocol == "http/protobuf"
    assert settings.hackagent_base_url is None
    assert settings.hackagent_api_key is None
    assert settings.outbox_path == (
        Path.home() / ".local" / "state" / "hackagent-otel" / "outbox.sqlite3"
    )
    assert settings.redact_keys == ()


def test_service_name_argument_beats_env_beats_default() -> None:
    env = {"OTEL_SERVICE_NAME": "from-env"}

    assert Settings.resolve(service_name="from-arg", env=env).service_name == "from-arg"
    assert Settings.resolve(env=env).service_name == "from-env"
    assert Settings.resolve(env={}).service_name == DEFAULT_SERVICE_NAME


def test_protocol_argument_beats_specific_env_beats_generic_env_beats_default() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }

    assert Settings.resolve(otlp_protocol="http/protobuf", env=env).otlp_protocol == (
        "http/protobuf"
    )
    assert Settings.resolve(env=env).otlp_protocol == "grpc"
    generic = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert Settings.resolve(env=generic).otlp_protocol == "grpc"
    assert Settings.resolve(env={}).otlp_protocol == "http/protobuf"


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
    ],
)
def test_an_endpoint_env_var_enables_otlp_and_is_left_to_the_exporter(
    env: dict[str, str],
) -> None:
    settings = Settings.resolve(env=env)

    assert settings.otlp_enabled is True
    assert settings.otlp_endpoint is None  # the SDK exporter reads its own env vars


def test_an_endpoint_argument_beats_the_env() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}

    settings = Settings.resolve(otlp_endpoint=" http://local:4318 ", env=env)

    assert settings.otlp_enabled is True
    assert settings.otlp_endpoint == "http://local:4318"


def test_traces_exporter_none_disables_otlp() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}

    assert Settings.resolve(env=env).otlp_enabled is False


@pytest.mark.parametrize(("exporters", "enabled"), [("console", False), ("otlp,console", True)])
def test_traces_exporter_must_name_otlp_when_set(exporters: str, enabled: bool) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_TRACES_EXPORTER": exporters,
    }

    assert Settings.resolve(env=env).otlp_enabled is enabled


def test_hackagent_settings_argument_beats_env() -> None:
    env = {"HACKAGENT_API_KEY": "env-key", "HACKAGENT_BASE_URL": "http://env:8000/"}

    from_env = Settings.resolve(env=env)
    from_args = Settings.resolve(
        hackagent_api_key="arg-key", hackagent_base_url="https://arg.example/", env=env
    )

    assert (from_env.hackagent_api_key, from_env.hackagent_base_url) == (
        "env-key",
        "http://env:8000",
    )
    assert (from_args.hackagent_api_key, from_args.hackagent_base_url) == (
        "arg-key",
        "https://arg.example",
    )


def test_an_api_key_alone_uses_the_default_base_url() -> None:
    settings = Settings.resolve(env={"HACKAGENT_API_KEY": "k"})

    assert settings.hackagent_base_url == DEFAULT_BASE_URL


def test_outbox_path_argument_beats_env_beats_xdg_state_home(tmp_path: Path) -> None:
    env = {
        "HACKAGENT_OUTBOX_PATH": str(tmp_path / "env.sqlite3"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }

    assert Settings.resolve(outbox_path=tmp_path / "arg.sqlite3", env=env).outbox_path == (
        tmp_path / "arg.sqlite3"
    )
    assert Settings.resolve(env=env).outbox_path == tmp_path / "env.sqlite3"
    xdg = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert Settings.resolve(env=xdg).outbox_path == (
        tmp_path / "state" / "hackagent-otel" / "outbox.sqlite3"
    )


def test_redact_keys_argument_beats_the_comma_separated_env() -> None:
    env = {"HACKAGENT_REDACT_KEYS": "ssn, iban,,"}

    assert Settings.resolve(env=env).redact_keys == ("ssn", "iban")
    assert Settings.resolve(redact_keys=["pin"], env=env).redact_keys == ("pin",)


def test_blank_values_count_as_unset() -> None:
    env = {"OTEL_SERVICE_NAME": "  ", "OTEL_EXPORTER_OTLP_ENDPOINT": "", "HACKAGENT_API_KEY": " "}

    settings = Settings.resolve(service_name="", env=env)

    assert settings.service_name == DEFAULT_SERVICE_NAME
    assert settings.otlp_enabled is False
    assert settings.hackagent_api_key is None


@pytest.mark.parametrize(
    ("kwargs", "env"),
    [
        ({"otlp_protocol": "udp"}, {}),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}),
        ({}, {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "kafka"}),
    ],
)
def test_an_unsupported_protocol_is_a_clear_error(
    kwargs: dict[str, str], env: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"OTLP protocol .* is not supported") as raised:
        Settings.resolve(**kwargs, env=env)

    assert "http/protobuf" in str(raised.value)
    assert "grpc" in str(raised.value)


@pytest.mark.parametrize("base_url", ["api.hackagent.dev", "ftp://api.hackagent.dev"])
def test_a_base_url_without_http_is_a_clear_error(base_url: str) -> None:
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        Settings.resolve(hackagent_base_url=base_url, env={})
    with pytest.raises(ValueError, match=re.escape(base_url)):
        Settings.resolve(env={"HACKAGENT_BASE_URL": base_url})


def test_settings_are_frozen() -> None:
    settings = Settings.resolve(env={})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.service_name = "other"  # type: ignore[misc]


def test_default_path_honours_env_then_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HACKAGENT_OUTBOX_PATH", str(tmp_path / "x.db"))
    assert default_outbox_path() == tmp_path / "x.db"
    monkeypatch.delenv("HACKAGENT_OUTBOX_PATH")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_outbox_path() == tmp_path / "state" / "hackagent-otel" / "outbox.sqlite3"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_outbox_path() == Path(
        os.path.expanduser("~/.local/state/hackagent-otel/outbox.sqlite3")
    )


def test_an_invalid_duration_in_the_env_is_warned_about_and_defaulted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for text in ("soon", "-1", "inf"):
        settings = Settings.resolve(env={"HACKAGENT_RESULT_ID_TIMEOUT": text})
        assert settings.result_id_timeout == 5.0
        assert "HACKAGENT_RESULT_ID_TIMEOUT" in caplog.text
        assert "using the default" in caplog.text
    with pytest.raises(ValueError, match="result_id_timeout"):
        Settings.resolve(result_id_timeout=-1.0, env={})


def test_without_a_home_folder_the_outbox_goes_to_a_folder_of_the_users_own_in_tmp(
    no_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert Settings.resolve().outbox_path == no_home / "outbox.sqlite3"
    assert "no home folder" in caplog.text
    assert str(no_home) in caplog.text


def test_without_a_home_folder_a_tmp_folder_someone_else_made_is_not_used(
    no_home: Path,
) -> None:
    no_home.mkdir()
    os.chown(no_home, os.getuid() + 4242, -1)  # made by another user (the tests run as root)

    chosen = Settings.resolve().outbox_path.parent

    assert chosen != no_home
    assert chosen.name.startswith(f"hackagent-otel-{os.getuid()}-")
    assert chosen.stat().st_uid == os.getuid()


def test_a_tilde_path_with_no_home_folder_is_an_error_naming_the_variable(
    no_home: Path,
) -> None:
    with pytest.raises(ValueError, match="HACKAGENT_OUTBOX_PATH"):
        Settings.resolve(env={"HACKAGENT_OUTBOX_PATH": "~/outbox.sqlite3"})


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_otlp_over_json_a_standard_value_falls_back_to_protobuf_with_a_warning(
    variable: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Python SDK has no OTLP/JSON exporter; the same endpoint takes protobuf."""
    settings = Settings.resolve(env={variable: "http/json"})

    assert settings.otlp_protocol == "http/protobuf"
    assert f"OTLP protocol 'http/json' (from {variable}) is not supported here" in caplog.text
    with pytest.raises(ValueError, match="udp"):
        Settings.resolve(env={variable: "udp"})  # unknown: still an error
