"""Which client a run's records go to.

A ``TrackingContext`` may carry its own client (a hackagent ``AuthenticatedClient``, an
``httpx.Client``). Clients hold credentials, so they never travel on spans: the tracker
notes here which client a run uses, and the SDK-side processor asks when it routes that
run's records. Runs with no client of their own use the configured default. A client
seen for a run has its credentials pinned as known secrets of the sanitizer in force
(``_tracer.source.sanitizer``) first, so they are scrubbed from the run's free text (an
exception quoting the token) from its first step on.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from hackagent_otel import _tracer
from hackagent_otel._forksafe import renew_after_fork

_MAX_RUNS = 10_000


class ClientRoutes:
    """run id -> client, bounded (least recently registered runs are forgotten first)."""

    def __init__(self) -> None:
        self._routes: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")

    def register(self, run_id: str, client: Any) -> None:
        if self._routes.get(run_id) is client:
            with self._lock:  # still in use: keep it away from the eviction end
                if run_id in self._routes:
                    self._routes.move_to_end(run_id)
            return
        _tracer.source.sanitizer.pin_client_secrets(client)
        with self._lock:
            self._routes[run_id] = client
            self._routes.move_to_end(run_id)
            while len(self._routes) > _MAX_RUNS:
                self._routes.popitem(last=False)

    def client_for(self, run_id: str) -> Any:
        return self._routes.get(run_id)

    def clear(self) -> None:
        with self._lock:
            self._routes.clear()


routes = ClientRoutes()
