"""Integration tests against the real OpenTelemetry Collector and Jaeger binaries."""
