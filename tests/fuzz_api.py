"""API fuzz pass: schemathesis against the generated OpenAPI document of a
real gunicorn server on a loopback port, with a throw-away SQLite database.

Fails on any 5xx or on a response that breaks its documented schema.
Bounded: FUZZ_EXAMPLES examples per operation, FUZZ_SECONDS in all.
Run with ``make fuzz``; CI runs it after the test suites.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.service.support import LiveServer  # noqa: E402


def main() -> int:
    examples = os.environ.get("FUZZ_EXAMPLES", "25")
    seconds = int(os.environ.get("FUZZ_SECONDS", "600"))
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/fuzz.db"
        env = dict(os.environ, DATABASE_URL=database_url, FLASK_APP="service", PITCREW_INSTANCE_DIR=tmp)
        bin_dir = Path(sys.executable).parent
        subprocess.run([bin_dir / "flask", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        token = subprocess.run([bin_dir / "flask", "tokens", "create", "--role", "admin", "--name", "fuzz"],
                               cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()
        server = LiveServer(database_url, {"PITCREW_INSTANCE_DIR": tmp})
        server.start()
        try:
            command = [
                bin_dir / "schemathesis", "run", f"{server.url}/api/openapi.json",
                "--url", server.url,
                "-H", f"Authorization: Bearer {token}",
                "--checks", "not_a_server_error,response_schema_conformance",
                "--max-examples", examples,
                "--seed", os.environ.get("FUZZ_SEED", "20261125"),
                "--max-time", str(seconds - 30),
                "--request-timeout", "10",
                # Revoking the fuzzer's own token would end the run early.
                "--exclude-path", "/api/v1/tokens/{token_id}",
                "--suppress-health-check", "all",
            ]
            result = subprocess.run(command, cwd=ROOT, env=env, timeout=seconds)
            return result.returncode
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
