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
# Scripts run more than once, with these arguments each time (default: once, none).
RUNS = {"bench_events.py": [[], ["--pin"]]}


def main() -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    only = set(sys.argv[1:])
    failed = []
    for script in scripts:
        if only and script.stem not in only and script.name not in only:
            continue
        for args in RUNS.get(script.name, [[]]):
            print(f"\n## {' '.join([script.name, *args])}\n", flush=True)
            if subprocess.run([sys.executable, str(script), *args], cwd=HERE.parent).returncode != 0:
                failed.append(" ".join([script.name, *args]))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
