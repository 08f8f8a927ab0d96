"""Subprocess apps the reliability suite runs, kills and restarts."""
