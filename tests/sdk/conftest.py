"""The SDK's tests: standard library, pytest and hypothesis only (no Flask, no
database). Stubs of the /sdk/v1 endpoints live in support.py; tests against
the real service are in tests/service."""
