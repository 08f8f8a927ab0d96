"""The bridge: OTLP/HTTP traces in, HackAgent records out (``hackagent-otel bridge``).

For deployments where apps only speak OTLP: a Collector (or an app's own OTLP/HTTP
exporter) posts spans to ``/v1/traces``; the bridge maps them to the HackAgent calls
the in-process exporter would make, commits them to a durable outbox before answering
200, and delivers them to the HackAgent API in order per result.

* :func:`build_app`: the ASGI application (serve it with any ASGI server);
* :func:`run`: serve it with uvicorn until SIGTERM (needs the ``bridge`` extra);
* :class:`BridgeSettings`: host, port, token, limits, API and outbox.
"""

from hackagent_otel.bridge._app import BridgeApp, build_app
from hackagent_otel.bridge._pipeline import BridgePipeline
from hackagent_otel.bridge._server import run
from hackagent_otel.bridge._settings import BridgeSettings

__all__ = ["BridgeApp", "BridgePipeline", "BridgeSettings", "build_app", "run"]
