"""The SDK's data store: the current compiled ruleset, swapped atomically, plus the disk cache.

Readers (every ``variation()`` call) read :attr:`RulesetStore.compiled`, one
attribute holding an immutable :class:`~pitcrew.evaluation.CompiledRuleset`:
compiling happens before the swap, so a reader sees either the old ruleset or
the new one, never half of an update, and never takes a lock.

The disk cache (``cache_path``) holds the last ruleset received from the
service, written atomically (temporary file in the same directory, fsync,
``os.replace``) so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time

from .evaluation import CompiledRuleset, InvalidRuleset, compile_ruleset

log = logging.getLogger("pitcrew")

__all__ = ["RulesetStore", "read_cache", "write_cache"]

CACHE_FORMAT = 1
# Seconds during which the service may offer only older rulesets than the one held
# (an instance behind a load balancer not yet updated) before they are believed.
DOWNGRADE_AFTER = 60.0


def key_fingerprint(url: str, sdk_key: str) -> str:
    """Identifies (service, SDK key) in the cache file without storing the key."""
    return hashlib.sha256(f"{url}\n{sdk_key}".encode()).hexdigest()[:16]


class RulesetStore:
    """Holds the compiled ruleset and where it came from.

    ``compiled`` is None until a ruleset was actually loaded (bootstrap, cache
    file or service): that is what readiness means.
    """

    def __init__(self):
        self.compiled: CompiledRuleset | None = None
        self.etag: str | None = None
        self.source: str | None = None  # "bootstrap" | "cache" | "service"
        self.updated_at: float | None = None  # time.time() of the last swap
        self.checked_at: float | None = None  # last successful contact with the service
        self.ready = threading.Event()
        self._listeners: list = []
        self._write_lock = threading.RLock()
        self._older_since: float | None = None  # monotonic time since which only older rulesets came

    @property
    def version(self):
        c = self.compiled
        return None if c is None else c.version

    def add_listener(self, fn) -> None:
        """``fn(old_compiled, new_compiled)`` is called (on the updating thread) after each swap."""
        self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        try:
            self._listeners.remove(fn)
        except ValueError:
            pass

    def apply(self, ruleset: dict, *, source: str, etag: str | None = None) -> CompiledRuleset | None:
        """Compile ``ruleset`` and swap it in. Raises InvalidRuleset; the old one then stays.

        A ruleset from the service older (lower version) than one the service
        already gave is not applied: None is returned and nothing changes. (Two
        instances behind a load balancer may answer from different versions; a
        ruleset from ``bootstrap`` or the cache file is replaced by whatever the
        service says.) Only while that lasts, though: when every ruleset the
        service offered for ``DOWNGRADE_AFTER`` seconds was older, the service
        really went back (its database was restored) and the older one is
        applied. Writers are serialised; readers take no lock.
        """
        compiled = compile_ruleset(ruleset)
        with self._write_lock:
            old = self.compiled
            if (source == "service" and self.source == "service" and old is not None
                    and compiled.version < old.version):
                now = time.monotonic()
                if self._older_since is None:
                    self._older_since = now
                if now - self._older_since < DOWNGRADE_AFTER:
                    return None
                log.warning("the service has served version %s, older than version %s held, for %.0f s; "
                            "applying it (its database was restored?)", compiled.version, old.version,
                            now - self._older_since)
            self._older_since = None
            # Order: auxiliary data first, the reference readers use last.
            self.etag = etag
            self.source = source
            self.updated_at = time.time()
            self.compiled = compiled
            self.ready.set()
            for fn in list(self._listeners):  # in order of the swaps
                try:
                    fn(old, compiled)
                except Exception:
                    log.exception("ruleset listener failed")
        return compiled

    def confirm(self) -> None:
        with self._write_lock:
            self._older_since = None  # an instance serving the held version: not a restored service
            if self.compiled is not None and self.source != "service":
                self.source = "service"  # the cached ruleset is the current one

    def after_fork(self) -> None:
        """The child keeps the ruleset; only the Event's and the writers' locks are renewed."""
        self._write_lock = threading.RLock()
        ready = threading.Event()
        if self.compiled is not None:
            ready.set()
        self.ready = ready


# --------------------------------------------------------------------------- disk cache


def write_cache(path: str, body: bytes, etag: str | None, fingerprint: str) -> None:
    """Write the ruleset ``body`` (the service's JSON bytes) to ``path`` atomically."""
    header = json.dumps(
        {"format": CACHE_FORMAT, "etag": etag, "fingerprint": fingerprint, "saved_at": time.time()}
    ).encode()
    # {"format":..,"etag":..,"fingerprint":..,"saved_at":..,"ruleset": <body>}
    data = header[:-1] + b', "ruleset": ' + body + b"}"
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pitcrew-cache-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_cache(path: str, fingerprint: str | None = None) -> tuple[dict, str | None, str | None] | None:
    """``(ruleset, etag, fingerprint)`` from a cache file, or None when absent or unusable.

    A file of another format, or without a fingerprint, is refused; with
    ``fingerprint`` (see :func:`key_fingerprint`), so is a file written for
    another service URL or SDK key, i.e. another environment's flags. Each
    refusal is logged at WARNING level, naming the file but never the key.
    """
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable cache file %s: %s", path, exc)
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ruleset"), dict):
        log.warning("ignoring cache file %s: unexpected content", path)
        return None
    if doc.get("format") != CACHE_FORMAT or not isinstance(doc.get("fingerprint"), str):
        log.warning("ignoring cache file %s: written by another version of the SDK; "
                    "the first ruleset fetched replaces it", path)
        return None
    if fingerprint is not None and doc["fingerprint"] != fingerprint:
        log.warning("ignoring cache file %s: it holds the flags of another service URL or SDK key; "
                    "the first ruleset fetched replaces it", path)
        return None
    etag = doc.get("etag")
    return doc["ruleset"], etag if isinstance(etag, str) else None, doc["fingerprint"]


def load_into(store: RulesetStore, ruleset, source: str, etag: str | None = None) -> bool:
    """Apply a ruleset from bootstrap or cache, logging instead of raising."""
    try:
        store.apply(ruleset, source=source, etag=etag)
        return True
    except InvalidRuleset as exc:
        log.warning("ignoring invalid %s ruleset: %s", source, exc)
    except Exception:
        log.exception("could not load %s ruleset", source)
    return False
