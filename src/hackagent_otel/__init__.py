"""HackAgent pipeline step tracking on OpenTelemetry."""

__all__: list[str] = []
