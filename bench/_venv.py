"""Virtualenvs with the real ``hackagent`` from PyPI, built once in the user's cache folder.

The project never imports hackagent into its own environment: the bench runs the
original tracking in a virtualenv that has only ``hackagent==0.5.0``
(:func:`bench_python`), and the hackagent test tier runs a real ``BaseAttack`` in one
that also has this checkout installed editable (:func:`tier_python`). Both are built by
:func:`ensure_venv`: under a lock (two test runs at once build it once), logged (each
pip command and its output, then ``pip freeze``, in the venv's ``install.log``), and
marked complete only at the end, so a build that broke half-way is started afresh.

A tier venv is keyed by the hackagent version and a hash of ``pyproject.toml`` (new
dependencies, a new venv) and of the checkout's path: an editable install points at
one checkout, and two checkouts on one machine must not run each other's code.

The peers' venv (:func:`peers_python`, for :mod:`bench.peers`) is built the same way:
Pydantic Logfire and Langfuse at the versions pinned in ``bench/peers-requirements.txt``
and this checkout editable, keyed by that file too.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: The hackagent release whose tracking this project re-makes.
HACKAGENT_VERSION = "0.5.0"
#: The checkout this module belongs to.
ROOT = Path(__file__).resolve().parent.parent
_COMPLETE = ".installed"
_LOG = "install.log"


class VenvError(RuntimeError):
    """A virtualenv could not be built; ``offline`` when the package index is out of
    reach (a machine without network), not because the build itself is broken."""

    def __init__(self, message: str, *, offline: bool) -> None:
        super().__init__(message)
        self.offline = offline


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/hackagent-otel`` (``~/.cache/hackagent-otel`` by default)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "hackagent-otel"


def bench_python() -> Path:
    """The interpreter of the bench's venv: ``hackagent==0.5.0`` and nothing of ours."""
    return ensure_venv(
        f"bench-hackagent-{HACKAGENT_VERSION}", [[f"hackagent=={HACKAGENT_VERSION}"]]
    )


def tier_key(root: Path = ROOT, *extra: Path) -> str:
    """What a venv with this checkout in it depends on: pyproject.toml's bytes, those of
    any ``extra`` file (a requirements file), and the checkout's path."""
    digest = hashlib.sha256((root / "pyproject.toml").read_bytes())
    for path in extra:
        digest.update(path.read_bytes())
    digest.update(str(root).encode())
    return digest.hexdigest()[:12]


def tier_python(root: Path = ROOT) -> Path:
    """The interpreter of the tier's venv: ``hackagent==0.5.0`` and this checkout
    (editable, with its dependencies from PyPI). Once a new one is complete, the tier
    venvs built for an earlier ``pyproject.toml`` of this checkout, or for a checkout
    that is gone (a CI clone, say), are removed: each takes about 450 MB."""
    return _checkout_venv(
        f"tier-hackagent-{HACKAGENT_VERSION}",
        "tier-hackagent-",
        [[f"hackagent=={HACKAGENT_VERSION}"], ["--editable", str(root)]],
        root,
    )


#: The pinned versions of every package of the peers' venv but this checkout's own,
#: relative to the checkout.
PEERS_REQUIREMENTS = Path("bench", "peers-requirements.txt")


def peers_python(root: Path = ROOT) -> Path:
    """The interpreter of the peers' venv: Logfire and Langfuse as pinned in
    :data:`PEERS_REQUIREMENTS` and this checkout (editable), installed in one pip
    command so the pins hold for our dependencies too. Replaced like the tier's."""
    requirements = root / PEERS_REQUIREMENTS
    installs = [["--requirement", str(requirements), "--editable", str(root)]]
    return _checkout_venv("peers", "peers-", installs, root, requirements)


def _checkout_venv(
    prefix: str, family: str, installs: Sequence[Sequence[str]], root: Path, *extra: Path
) -> Path:
    """Venv ``prefix-<key>`` (see :func:`tier_key`) with this checkout installed editable.

    Once a new one is complete, the venvs whose names start with ``family`` built for an
    earlier state of this checkout, or for a checkout that is gone (a CI clone, say), are
    removed."""
    python = ensure_venv(f"{prefix}-{tier_key(root, *extra)}", installs)
    owner = python.parent.parent / ".checkout"
    if not owner.exists():
        owner.write_text(str(root))
        for old in cache_dir().glob(f"{family}*/.checkout"):
            checkout = old.read_text()
            if old != owner and (checkout == str(root) or not Path(checkout).is_dir()):
                _say(f"removing {old.parent}, built for {checkout} as it was")
                shutil.rmtree(old.parent, ignore_errors=True)
                (old.parent.parent / f"{old.parent.name}.lock").unlink(missing_ok=True)
    return python


def ensure_venv(name: str, installs: Sequence[Sequence[str]]) -> Path:
    """The interpreter of venv ``name`` in :func:`cache_dir`, built with one
    ``pip install`` per entry of ``installs`` if it is not complete yet.

    Raises :class:`VenvError` (with pip's last lines) when the build fails.
    """
    venv = cache_dir() / name
    python = venv / "bin" / "python"
    if (venv / _COMPLETE).exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (venv / _COMPLETE).exists():  # built by another run while we waited
            return python
        _build(venv, python, installs)
    return python


def _build(venv: Path, python: Path, installs: Sequence[Sequence[str]]) -> None:
    if venv.exists():
        shutil.rmtree(venv)  # a build that broke half-way
    _say(f"building {venv} (once; later runs reuse it)")
    _run(venv, [sys.executable, "-m", "venv", str(venv)])
    _run(venv, [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    for packages in installs:
        _run(venv, [str(python), "-m", "pip", "install", *packages])
    frozen = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout
    with open(venv / _LOG, "a") as log:
        log.write("\n$ pip freeze\n" + frozen)
    _say(f"installed in {venv}: {len(frozen.splitlines())} packages (see {venv / _LOG})")
    (venv / _COMPLETE).touch()


def _say(message: str) -> None:
    print(f"hackagent venv: {message}", file=sys.stderr, flush=True)


def _run(venv: Path, command: list[str]) -> None:
    """Run one build command, its output appended to the venv's log."""
    shown = " ".join(command[2:] if command[1:2] == ["-m"] else command)
    _say(f"$ {shown}")
    started = time.monotonic()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    log_path = venv / _LOG
    if log_path.parent.exists():
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        offline = not _index_reachable()
        where = "the package index is out of reach" if offline else "the build failed"
        raise VenvError(f"{shown} exited {done.returncode} ({where}):\n{tail}", offline=offline)
    _say(f"  done in {time.monotonic() - started:.0f} s")


def _index_reachable() -> bool:
    """Whether pip can fetch one small file from its configured index (the user's pip
    settings, proxies included), to tell a machine without network from a broken build."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            probe = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--quiet",
                    "--dest",
                    folder,
                    f"hackagent=={HACKAGENT_VERSION}",
                ],
                check=False,
                capture_output=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return False
    return probe.returncode == 0
