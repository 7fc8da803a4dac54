"""Run every benchmark script in this folder (``make bench``), one after another.

Each prints its own markdown table; figures are medians or rates measured on
this machine in the same run as their baseline. Scripts that need PostgreSQL
reset the schema of the database they are given: bench_ingest.py
BENCH_DATABASE_URL, bench_events.py BENCH_EVENTS_DATABASE_URL.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    only = set(sys.argv[1:])
    failed = []
    for script in scripts:
        if only and script.stem not in only and script.name not in only:
            continue
        print(f"\n## {script.name}\n", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=HERE.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
