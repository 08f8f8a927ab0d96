"""The tier against the real hackagent 0.5.0 from PyPI, in a virtualenv of its own."""
