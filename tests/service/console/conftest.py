"""Signed-in console clients shared by the console tests (one token each)."""

import pytest

from .helpers import signed_in


@pytest.fixture
def erin(app):
    return signed_in(app, "editor", "erin")


@pytest.fixture
def rita(app):
    return signed_in(app, "editor", "rita")


@pytest.fixture
def ravi(app):
    return signed_in(app, "editor", "ravi")


@pytest.fixture
def ada(app):
    return signed_in(app, "admin", "ada")
