"""Where a run's records go: one delivery service per HackAgent API target.

* A run whose ``TrackingContext`` carries its own client is delivered through that
  client.
* Other runs go to the default target: the configured API (``HACKAGENT_BASE_URL`` /
  ``HACKAGENT_API_KEY``), or with none, the local outbox (the embedded default sink)
  until ``hackagent-otel push`` delivers them. In-process delivery of those runs can be
  off: with ``records="auto"`` it is off when spans go out over OTLP and no API is
  configured, because then a Collector and the bridge make the records.

Every API's records spool to that API's own outbox file, which records its base URL as
the target (see :mod:`hackagent_otel._outbox_files`); the default outbox holds only the
records made with no API. So a record spooled for one API is never pushed to another,
and ``hackagent-otel push`` knows where each file's records go.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from hackagent_otel._config import Settings
from hackagent_otel._delivery.client import HackAgentClient
from hackagent_otel._delivery.service import DeliveryService
from hackagent_otel._forksafe import renew_after_fork
from hackagent_otel._outbox_files import api_target, outbox_path_for_target
from hackagent_otel._routing import routes
from hackagent_otel._sanitize import Sanitizer

_logger = logging.getLogger("hackagent_otel.delivery")


def default_service(settings: Settings, sanitizer: Sanitizer) -> DeliveryService:
    """Delivery to the configured API, or outbox-only (the default file, no target)
    when no API is configured.

    The API key is pinned as a known secret of ``sanitizer`` (the tracker's), so no
    free text this process writes can carry it (the exporter's entry point configures
    through here alone).
    """
    sanitizer.pin_secret(settings.hackagent_api_key, configured=True)
    if not settings.hackagent_base_url:
        return DeliveryService(None, outbox_path=settings.outbox_path)
    sender = HackAgentClient(settings.hackagent_base_url, settings.hackagent_api_key)
    return api_service(settings, sender)


def api_service(settings: Settings, sender: HackAgentClient) -> DeliveryService:
    """Delivery through ``sender``, spooling to its API's outbox beside the default one,
    which records the API's base URL as its target (never a key)."""
    target = api_target(sender.base_url)
    return DeliveryService(
        sender,
        outbox_path=outbox_path_for_target(settings.outbox_path, target),
        outbox_target=target,
    )


#: Client objects whose service is looked up by identity first (each holds a reference).
_MAX_CLIENTS_REMEMBERED = 256


class SinkRouter:
    """Callable run id -> delivery service (or ``None``: no in-process records).

    ``sanitizer``: the set-up's, which learns the credentials of every client a run's
    records are sent with.
    """

    def __init__(
        self, settings: Settings, sanitizer: Sanitizer, *, default_enabled: bool = True
    ) -> None:
        self._settings = settings
        self._sanitizer = sanitizer
        self._default_enabled = default_enabled
        self._default: DeliveryService | None = None
        # Identity cache of the clients seen (bounded), and one service per target:
        # a pipeline that makes a new client object per run still gets one service.
        self._by_client: OrderedDict[int, tuple[Any, DeliveryService]] = OrderedDict()
        self._by_target: dict[tuple[str, str], DeliveryService] = {}
        self._lock = threading.Lock()
        # A fork while the mapping thread built a service (holding the lock) would leave
        # the child's copy locked for good: its first record or its exit would hang.
        renew_after_fork(self, "_lock")
        if default_enabled:
            # Built now, on the thread that configures, not lazily on the mapping thread:
            # a fork while that thread builds it (importing httpx's transport lazily)
            # would leave the child a half-imported module and no way to deliver.
            self._default = default_service(settings, sanitizer)

    @property
    def default(self) -> DeliveryService:
        if self._default is None:
            with self._lock:
                if self._default is None:
                    self._default = default_service(self._settings, self._sanitizer)
        return self._default

    def __call__(self, run_id: str) -> DeliveryService | None:
        client = routes.client_for(run_id)
        if client is None:
            return self.default if self._default_enabled else None
        entry = self._by_client.get(id(client))
        if entry is not None and entry[0] is client:
            return entry[1]
        with self._lock:
            entry = self._by_client.get(id(client))
            if entry is None or entry[0] is not client:
                entry = (client, self._service_for(client))
                self._by_client[id(client)] = entry
                while len(self._by_client) > _MAX_CLIENTS_REMEMBERED:
                    self._by_client.popitem(last=False)
        return entry[1]

    def _service_for(self, client: Any) -> DeliveryService:
        """The service for ``client``'s target, built on first sight (under the lock)."""
        try:
            sender = HackAgentClient.from_any(client)
        except (TypeError, ValueError) as exc:
            _logger.error("hackagent_otel: %s; this run's records go to the default target", exc)
            return self.default
        self._sanitizer.pin_client_secrets(sender)
        service = self._by_target.get(sender.target)
        if service is not None:
            sender.close()  # only connections it opened itself; a user's client stays open
            return service
        service = api_service(self._settings, sender)
        self._by_target[sender.target] = service
        return service

    def result_id(self, run_id: str, ref: str, timeout: float) -> str | None:
        """The id the API gave the Result ``ref`` names, from the delivery that sends the
        run's records, waiting up to ``timeout`` seconds; ``None`` without in-process
        records for the run, past the bound, or when the creation was refused."""
        service = self(run_id)
        return None if service is None else service.wait_for(ref, timeout)

    def sinks(self) -> Iterator[DeliveryService]:
        """Every service built so far (for flush, shutdown and stats)."""
        with self._lock:
            services = list(self._by_target.values())
            services += [service for _, service in self._by_client.values()]
            if self._default is not None:
                services.append(self._default)
        return iter(dict.fromkeys(services))


def sink_from_env(sanitizer: Sanitizer) -> DeliveryService:
    """The default service from env vars alone (the exporter's entry point), its API
    key pinned in ``sanitizer``."""
    return default_service(Settings.resolve(), sanitizer)
