"""Shared by every test package. Kept free of service imports, so the SDK's
tests (tests/sdk) run where only pitcrew-sdk is installed."""
