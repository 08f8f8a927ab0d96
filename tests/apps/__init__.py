"""Small programs the end-to-end tests run as subprocesses, and what they share."""
