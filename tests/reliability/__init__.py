"""Reliability and security under faults, load and hostile input (issue 7); see RELIABILITY.md."""
