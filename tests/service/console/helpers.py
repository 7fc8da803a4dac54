"""A browser-like client for console pages over Flask's test client: keeps
the session cookie and sends each form's CSRF token, as a browser would."""

import re
from html import unescape

from service.domain import Actor
from service.domain import tokens as token_domain

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def token(role: str, name: str | None = None) -> str:
    return token_domain.create_token(Actor("tests"), name or f"{role}-console", role)[1]


class Console:
    def __init__(self, client):
        self.client = client
        self.page = None

    def get(self, path, **kw):
        response = self.client.get(path, **kw)
        self.page = response.get_data(as_text=True)
        return response

    def csrf(self) -> str:
        if self.page is None or not CSRF.search(self.page):
            self.get("/login")
        return unescape(CSRF.search(self.page).group(1))

    def post(self, path, data=None, *, csrf=True, **kw):
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf())
        response = self.client.post(path, data=data, **kw)
        self.page = response.get_data(as_text=True)
        return response

    def login(self, secret: str):
        self.get("/login")
        response = self.post("/login", {"token": secret})
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        return response

    @staticmethod
    def version(page: str, form_action: str | None = None) -> str:
        return re.search(r'name="version" value="(\d+)"', page).group(1)


def signed_in(app, role: str, name: str) -> "Console":
    """A console client signed in with a new token of ``role`` named ``name``."""
    c = Console(app.test_client())
    c.login(token(role, name))
    return c
