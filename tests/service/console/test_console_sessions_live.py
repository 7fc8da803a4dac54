"""Console sessions over the live gunicorn server (real cookies, real HTTP): sign-out ends the
session on the server for every copy of its cookie, concurrent sign-ins of one token each get
their own session, and a forged or tampered cookie is refused without an error."""

import http.client
import re
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa

from service.extensions import db
from service.models import ConsoleSession

from ..support import at_once, make_token

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """One cookie jar of one name (``pitcrew_session``) over plain HTTP connections."""

    def __init__(self, base_url: str, cookie: str | None = None):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.cookie = cookie

    def request(self, method: str, path: str, form: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        headers = {"Cookie": f"pitcrew_session={self.cookie}"} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            page = response.read().decode()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie" and value.startswith("pitcrew_session="):
                    self.cookie = value.split(";", 1)[0].split("=", 1)[1] or None
            return response.status, response.getheader("Location") or "", page
        finally:
            conn.close()

    def csrf(self, path: str = "/login") -> str:
        return CSRF.search(self.request("GET", path)[2]).group(1)

    def sign_in(self, secret: str) -> int:
        return self.request("POST", "/login", {"token": secret, "csrf_token": self.csrf()})[0]


def sessions() -> list[ConsoleSession]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(ConsoleSession).order_by(ConsoleSession.id)))


def test_sign_out_over_http_refuses_a_copy_of_the_cookie(live_server):
    browser = Browser(live_server.url)
    assert browser.sign_in(make_token("editor", "erin")) == 303
    assert browser.request("GET", "/flags")[0] == 200
    stolen = browser.cookie
    status, _, _ = browser.request("POST", "/logout", {"csrf_token": browser.csrf("/flags")})
    assert status == 303
    thief = Browser(live_server.url, stolen)
    status, location, _ = thief.request("GET", "/flags")
    assert status == 303 and "ended=1" in location
    assert [s.ended_at is not None for s in sessions()] == [True]


def test_concurrent_sign_ins_of_one_token_each_get_their_own_session(live_server):
    secret = make_token("editor", "many")
    browsers = [Browser(live_server.url) for _ in range(10)]
    tokens = [b.csrf() for b in browsers]  # each browser's own pre-login session and CSRF token
    statuses = at_once(*[lambda b=b, t=t: b.request("POST", "/login", {"token": secret, "csrf_token": t})[0]
                         for b, t in zip(browsers, tokens, strict=True)])
    assert statuses == [303] * 10
    assert len({b.cookie for b in browsers}) == 10
    assert all(b.request("GET", "/flags")[0] == 200 for b in browsers)
    rows = sessions()
    assert len(rows) == 10 and len({r.session_hash for r in rows}) == 10
    # One signs out; the nine others go on.
    browsers[0].request("POST", "/logout", {"csrf_token": browsers[0].csrf("/flags")})
    assert [b.request("GET", "/flags")[0] for b in browsers] == [303] + [200] * 9


def test_forged_and_tampered_cookies_are_refused_cleanly(live_server):
    browser = Browser(live_server.url)
    assert browser.sign_in(make_token("viewer")) == 303
    cookie = browser.cookie
    for forged in (cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), "x" * 5000, "e30.AAAA.BBBB", ""):
        status, location, _ = Browser(live_server.url, forged or None).request("GET", "/flags")
        assert status == 303 and location.startswith("/login"), (forged[:20], status)
    assert browser.request("GET", "/flags")[0] == 200  # the real one still works
