"""Pitcrew Python SDK: local flag evaluation and event reporting (stdlib only)."""
