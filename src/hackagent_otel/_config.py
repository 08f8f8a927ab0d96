"""Settings, resolved once: argument, then specific env var, then generic, then default."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hackagent_otel._goals import DEFAULT_RESULT_ID_TIMEOUT

_logger = logging.getLogger("hackagent_otel")

DEFAULT_SERVICE_NAME = "hackagent-pipeline"

DEFAULT_BASE_URL = "https://api.hackagent.dev"
OTLP_PROTOCOLS = ("http/protobuf", "grpc")
RECORDS_MODES = ("auto", "on", "off")


def default_outbox_path(env: Mapping[str, str] | None = None) -> Path:
    """``$HACKAGENT_OUTBOX_PATH``, else ``$XDG_STATE_HOME/hackagent-otel/outbox.sqlite3``."""
    env = os.environ if env is None else env
    explicit = env.get("HACKAGENT_OUTBOX_PATH")
    if explicit:
        return Path(explicit).expanduser()
    state = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state).expanduser() / "hackagent-otel" / "outbox.sqlite3"


def _first(*values: str | None) -> str | None:
    for value in values:
        if value is not None and value.strip():
            return value.strip()
    return None


def _otlp_selected(exporters: set[str]) -> bool:
    """``OTEL_TRACES_EXPORTER`` unset (the SDK default is otlp) or naming otlp."""
    named = exporters - {""}
    return not named or "otlp" in named


@dataclass(frozen=True)
class Settings:
    """Everything ``configure()`` acts on, after resolution."""

    service_name: str = DEFAULT_SERVICE_NAME
    #: Whether the service name came from an argument or ``OTEL_SERVICE_NAME``.
    service_name_given: bool = False
    #: OTLP endpoint given as an argument (``None``: the OTLP exporter reads env vars).
    otlp_endpoint: str | None = None
    #: Whether any OTLP endpoint is configured at all, by argument or env var.
    otlp_enabled: bool = False
    otlp_protocol: str = "http/protobuf"
    hackagent_base_url: str | None = None
    hackagent_api_key: str | None = None
    outbox_path: Path = field(default_factory=default_outbox_path)
    redact_keys: tuple[str, ...] = ()
    #: In-process HackAgent records: ``on``, ``off``, or ``auto`` (see ``delivers_records``).
    records: str = "auto"
    #: Seconds a read of a goal's Result id waits for its creation's answer
    #: (``HACKAGENT_RESULT_ID_TIMEOUT``); past it the read gives ``None``.
    result_id_timeout: float = DEFAULT_RESULT_ID_TIMEOUT

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
    def resolve(
        cls,
        *,
        service_name: str | None = None,
        otlp_endpoint: str | None = None,
        otlp_protocol: str | None = None,
        hackagent_base_url: str | None = None,
        hackagent_api_key: str | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
        redact_keys: tuple[str, ...] | list[str] | None = None,
        records: str | None = None,
        result_id_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting; raise ``ValueError`` naming a bad one."""
        env = os.environ if env is None else env
        exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
        env_endpoint = _first(
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
        protocol = (
            _first(
                otlp_protocol,
                env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
                env.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
            )
            or "http/protobuf"
        )
        if protocol not in OTLP_PROTOCOLS:
            raise ValueError(
                f"OTLP protocol {protocol!r} is not supported; use one of {OTLP_PROTOCOLS}"
            )
        api_key = _first(hackagent_api_key, env.get("HACKAGENT_API_KEY"))
        base_url = _first(hackagent_base_url, env.get("HACKAGENT_BASE_URL"))
        if api_key and not base_url:
            base_url = DEFAULT_BASE_URL
        if base_url and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"HackAgent base URL {base_url!r} must start with http:// or https://")
        records_mode = (_first(records, env.get("HACKAGENT_RECORDS")) or "auto").lower()
        if records_mode not in RECORDS_MODES:
            raise ValueError(f"records mode {records_mode!r} is not one of {RECORDS_MODES}")
        words = redact_keys
        if words is None:
            words = [w for w in env.get("HACKAGENT_REDACT_KEYS", "").split(",") if w.strip()]
        return cls(
            service_name=_first(service_name, env.get("OTEL_SERVICE_NAME")) or DEFAULT_SERVICE_NAME,
            otlp_endpoint=_first(otlp_endpoint),
            service_name_given=_first(service_name, env.get("OTEL_SERVICE_NAME")) is not None,
            otlp_enabled=bool(otlp_endpoint or env_endpoint) and _otlp_selected(exporters),
            otlp_protocol=protocol,
            hackagent_base_url=base_url.rstrip("/") if base_url else None,
            hackagent_api_key=api_key,
            outbox_path=Path(outbox_path).expanduser() if outbox_path else default_outbox_path(env),
            redact_keys=tuple(w.strip() for w in words),
            records=records_mode,
            result_id_timeout=_seconds_setting(
                result_id_timeout, env.get("HACKAGENT_RESULT_ID_TIMEOUT"), DEFAULT_RESULT_ID_TIMEOUT
            ),
        )


def _seconds_setting(given: float | None, env_value: str | None, default: float) -> float:
    """A duration: the argument, else the env var; an invalid env value is warned about
    and the default used, as the OpenTelemetry SDK does with its own settings."""
    if given is not None:
        if not given >= 0:  # negative or NaN
            raise ValueError(f"a duration must be >= 0 seconds, not {given!r}")
        return float(given)
    text = _first(env_value)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        _logger.warning("invalid duration %r; using the default %s s", text, default)
        return default
    return value
