"""Run the web server and the worker side by side, and stop them together.

    python -m service.serve [WEB COMMAND...]

``make serve`` uses it: the web command (gunicorn by default) and
``flask --app service worker`` start as child processes with the same
environment. Ctrl-C (SIGINT) or SIGTERM stops both; if either exits on its
own, the other is stopped too and the exit status is the failed child's,
so nothing is left running half of the service.
"""

import os
import signal
import subprocess
import sys
import time

WEB = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf", "service:create_app()"]
WORKER = [sys.executable, "-m", "flask", "--app", "service", "worker"]
GRACE_SECONDS = 15


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = [subprocess.Popen(argv or WEB, env=os.environ), subprocess.Popen(WORKER, env=os.environ)]
    names = ("web", "worker")
    try:
        while not stopping:
            exited = [(name, child) for name, child in zip(names, children, strict=True) if child.poll() is not None]
            if exited:
                name, child = exited[0]
                print(f"serve: the {name} process exited ({child.returncode}); stopping the other",
                      file=sys.stderr, flush=True)
                _stop(children)
                return child.returncode or 1
            time.sleep(0.2)
    finally:
        _stop(children)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
