#!/usr/bin/env python3
"""Set up and run chat with nothing but Python 3.11+.

    python3 run.py serve [chat serve options]   # the app on http://127.0.0.1:8000
    python3 run.py test [pytest options]        # lint, type-check and the whole test suite

Creates `.venv` on first use and installs the pinned dependencies from the lock
files (again only when a lock file changes).
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
LOCKS = {"serve": "requirements.lock", "test": "requirements-test.lock"}


def ensure_env(lock: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 (run.py itself may meet an older Python)
        sys.exit("chat needs Python 3.11 or newer")
    if not (BIN / "python").exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256()
    for name in (lock, "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    stamp = VENV / f".installed-{lock}"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    print(f"installing dependencies from {lock}", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / lock)], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    stamp.write_text(digest.hexdigest())


def run(*command: str) -> None:
    code = subprocess.run(command, cwd=ROOT).returncode
    if code:
        sys.exit(code)


def main() -> None:
    task, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if task not in LOCKS:
        sys.exit(__doc__)
    ensure_env(LOCKS[task])
    if task == "serve":
        os.execv(BIN / "chat", [str(BIN / "chat"), "serve", *args])
    run(str(BIN / "ruff"), "check", ".")
    run(str(BIN / "ruff"), "format", "--check", ".")
    run(str(BIN / "mypy"))
    run(str(BIN / "python"), "-m", "pytest", *args)


if __name__ == "__main__":
    main()
