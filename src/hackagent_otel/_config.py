"""``Settings``: what ``configure()`` acts on, resolved once from its rows of the table.

Each field with a row (:mod:`hackagent_otel._settings_table`) resolves in the
OpenTelemetry order: argument, specific env var, generic env var, default. A few
fields follow from the others: whether the service name was given, whether OTLP is on
at all (an endpoint from an argument or the ``OTEL_EXPORTER_OTLP_*`` vars, and
``OTEL_TRACES_EXPORTER`` naming otlp or nothing), and the default API for a key given
without a base URL.

The rows shared with the bridge (the HackAgent API, its key, the extra secret words)
and the app's outbox file are defined here once; ``BridgeSettings`` uses them too.
Reads the environment it is given; touches nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hackagent_otel._delivery.client import DEFAULT_BASE_URL
from hackagent_otel._goals import DEFAULT_RESULT_ID_TIMEOUT
from hackagent_otel._settings_table import (
    PATH,
    SECONDS_OR_ZERO,
    TEXT,
    URL,
    WORDS,
    Choice,
    Setting,
    path_of,
    resolve,
    setting,
    state_file,
)

__all__ = [
    "API_KEY",
    "BASE_URL",
    "DEFAULT_BASE_URL",
    "DEFAULT_SERVICE_NAME",
    "OUTBOX_PATH",
    "REDACT_KEYS",
    "Settings",
    "default_outbox_path",
    "with_default_api",
]

DEFAULT_SERVICE_NAME = "hackagent-pipeline"
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
RECORDS_MODES = ("auto", "on", "off")

#: Where records go: one row for the app and the bridge alike.
BASE_URL: Setting[str] = Setting(
    URL,
    None,
    "HackAgent API root",
    env=("HACKAGENT_BASE_URL",),
    flag="--base-url",
    shown=f"none (records wait in the outbox); `{DEFAULT_BASE_URL}` when a key is set",
)
API_KEY: Setting[str] = Setting(
    TEXT, None, "HackAgent API key", env=("HACKAGENT_API_KEY",), secret=True
)
REDACT_KEYS: Setting[tuple[str, ...]] = Setting(
    WORDS, (), "extra secret key words", env=("HACKAGENT_REDACT_KEYS",)
)
OUTBOX_PATH: Setting[Path] = Setting(
    PATH,
    state_file("outbox.sqlite3"),
    "outbox file (records made with no API; each API's outbox sits beside it)",
    env=("HACKAGENT_OUTBOX_PATH",),
    shown="`$XDG_STATE_HOME/hackagent-otel/outbox.sqlite3`",
)


def default_outbox_path(env: Mapping[str, str] | None = None) -> Path:
    """The app's outbox file when no argument names one: ``$HACKAGENT_OUTBOX_PATH``, else
    ``${XDG_STATE_HOME:-~/.local/state}/hackagent-otel/outbox.sqlite3``."""
    return path_of(OUTBOX_PATH, env)


def with_default_api(values: dict[str, tuple[Any, str]]) -> None:
    """An API key with no base URL means the default API (``DEFAULT_BASE_URL``)."""
    if values["hackagent_api_key"][0] and not values["hackagent_base_url"][0]:
        values["hackagent_base_url"] = (DEFAULT_BASE_URL, "default")


def _otlp_selected(exporters: set[str]) -> bool:
    """``OTEL_TRACES_EXPORTER`` unset (the SDK default is otlp) or naming otlp."""
    named = exporters - {""}
    return not named or "otlp" in named


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` acts on, after resolution (:meth:`resolve`)."""

    service_name: str = setting(
        Setting(TEXT, DEFAULT_SERVICE_NAME, "service name", env=("OTEL_SERVICE_NAME",))
    )
    #: Whether the service name came from an argument or ``OTEL_SERVICE_NAME``.
    service_name_given: bool = False
    #: OTLP endpoint given as an argument (``None``: the OTLP exporter reads the env
    #: vars, which only say here whether OTLP is on).
    otlp_endpoint: str | None = setting(
        Setting(
            TEXT,
            None,
            "OTLP endpoint",
            env=("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
            shown="none (no OTLP)",
        )
    )
    #: Whether any OTLP endpoint is configured at all, by argument or env var.
    otlp_enabled: bool = False
    otlp_protocol: str = setting(
        Setting(
            # The Python SDK has no OTLP/JSON exporter; the same endpoint takes protobuf.
            Choice(*OTLP_PROTOCOLS, lower=False, substitutes={"http/json": "http/protobuf"}),
            "http/protobuf",
            "OTLP protocol",
            env=("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        )
    )
    hackagent_base_url: str | None = setting(BASE_URL)
    hackagent_api_key: str | None = setting(API_KEY)
    outbox_path: Path = setting(OUTBOX_PATH)
    redact_keys: tuple[str, ...] = setting(REDACT_KEYS)
    #: In-process HackAgent records: ``on``, ``off``, or ``auto`` (see ``delivers_records``).
    records: str = setting(
        Setting(
            Choice(*RECORDS_MODES),
            "auto",
            "in-process records mode",
            env=("HACKAGENT_RECORDS",),
            note="(`auto`: see [HackAgent records](#hackagent-records))",
        )
    )
    #: Seconds a read of a goal's Result id waits for its creation's answer; past it the
    #: read gives ``None``.
    result_id_timeout: float = setting(
        Setting(
            SECONDS_OR_ZERO,
            DEFAULT_RESULT_ID_TIMEOUT,
            "how long a read of a goal's Result id waits for its creation's answer",
            env=("HACKAGENT_RESULT_ID_TIMEOUT",),
            on_invalid="warn",
            configure_argument=False,
        )
    )

    @property
    def delivers_default_records(self) -> bool:
        """Whether runs without a client of their own get records in this process.

        ``auto``: yes when an API is configured, or when spans do not go out over OTLP
        (then the outbox keeps them); no when spans go out over OTLP and no API is
        configured, because a Collector and the bridge make the records from them.
        """
        if self.records != "auto":
            return self.records == "on"
        return bool(self.hackagent_base_url) or not self.otlp_enabled

    @classmethod
    def resolve(cls, *, env: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Resolve every setting from ``given`` (keyword arguments named as the fields;
        ``None``: not given), then ``env`` (default ``os.environ``), then the defaults;
        ``ValueError`` names a bad one."""
        env = os.environ if env is None else env
        values = resolve(cls, given, env)
        with_default_api(values)
        exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
        endpoint, endpoint_from = values["otlp_endpoint"]
        fields = {name: value for name, (value, _) in values.items()}
        # An endpoint from the env is left to the SDK's exporter, which reads it again.
        fields["otlp_endpoint"] = endpoint if endpoint_from == "argument" else None
        return cls(
            **fields,
            service_name_given=values["service_name"][1] != "default",
            otlp_enabled=endpoint is not None and _otlp_selected(exporters),
        )
