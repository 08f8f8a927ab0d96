"""The bridge: OTLP/HTTP traces in, HackAgent records out."""
