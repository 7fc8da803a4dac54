"""docker-compose.yml: every process that reads the server secret gets the same one.

The secret signs console sessions and encrypts webhook secrets, which the
worker decrypts to sign deliveries; a container left to generate its own
would sign with a key the others cannot read (docs/operations.md)."""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def test_web_and_worker_share_a_required_secret_key():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    keys = {name: (services[name].get("environment") or {}).get("PITCREW_SECRET_KEY") for name in ("web", "worker")}
    assert keys["web"] and keys["web"] == keys["worker"], keys
    # Required from the host environment (compose refuses to start without it), never a literal.
    assert keys["web"].startswith("${PITCREW_SECRET_KEY:?"), keys["web"]
