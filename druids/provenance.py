"""Provenance: which configuration, code and packages made a figure, a values file or an executed chapter.

Every generated output records one flat record (:func:`record`), all strings:

* ``profile`` and ``config_hash``: the chapter's configuration. ``druids run``
  executes a chapter inside :func:`run_environment`, which puts the profile and
  ``config_hash(get_config(profile, seed=seed))`` (exactly the ``Config`` that every
  chapter builds from its ``profile`` and ``seed`` parameters) into the environment
  variables ``DRUIDS_PROFILE`` and ``DRUIDS_CONFIG_HASH``; the chapter's kernel
  inherits them. A caller that holds the configuration itself passes it
  (``record(cfg)``), which wins. A chapter run by hand (``jupyter lab``, nbval)
  has neither, and its outputs say ``unrecorded``.
* ``git_revision`` and ``git_dirty``: the repository's ``HEAD`` and whether its
  tracked files had uncommitted changes (``true``/``false``; ``unknown`` outside a
  git checkout, e.g. an unpacked release).
* the versions of the key packages (:data:`KEY_PACKAGES`), from their installed
  distributions, without importing them.

Where it goes: PNG text chunks and PDF metadata (``druids.plotting.savefig``), the
header of ``paper/values/<chapter>.tex`` (``druids.values``), and the executed
notebook's metadata ``druids`` (``druids.cli.execute_chapter``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import subprocess
from collections.abc import Iterator
from typing import Any

from druids import paths
from druids.config import config_hash

PROFILE_ENV = "DRUIDS_PROFILE"
CONFIG_HASH_ENV = "DRUIDS_CONFIG_HASH"
UNRECORDED = "unrecorded"
KEY_PACKAGES = ("druids", "torch", "jax", "dinosaur", "xarray", "numpy")


def _git(*args: str) -> str | None:
    """``git -C <repo> args`` stdout, or None where git or the checkout is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(paths.ROOT), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict[str, str]:
    """``{"git_revision": <HEAD sha or "unknown">, "git_dirty": "true" | "false" | "unknown"}``.

    Dirty means uncommitted changes to tracked files; untracked files do not count.
    """
    revision = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if revision else None
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"git_revision": revision or "unknown", "git_dirty": dirty}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed version of each of :data:`KEY_PACKAGES` (``"not installed"`` where absent)."""
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def record(cfg: Any = None) -> dict[str, str]:
    """The provenance of an output made now: profile, config hash, git state, package versions.

    ``cfg``: the chapter's ``Config`` where the caller has it; otherwise the
    environment set by :func:`run_environment`, or ``unrecorded``.
    """
    if cfg is not None:
        run = {
            "profile": getattr(cfg, "profile", UNRECORDED),
            "config_hash": config_hash(cfg),
        }
    else:
        run = {
            "profile": os.environ.get(PROFILE_ENV, UNRECORDED),
            "config_hash": os.environ.get(CONFIG_HASH_ENV, UNRECORDED),
        }
    return {**run, **git_state(), **package_versions()}


def describe(rec: dict[str, str]) -> str:
    """One line for humans and for text headers: ``profile P, config H, git R (dirty), druids V, torch V, ...``."""
    dirty = {"true": " (dirty)", "false": "", "unknown": " (dirty: unknown)"}.get(rec["git_dirty"], "")
    packages = ", ".join(f"{name} {rec[name]}" for name in KEY_PACKAGES if name in rec)
    return f"profile {rec['profile']}, config {rec['config_hash']}, git {rec['git_revision']}{dirty}, {packages}"


@contextlib.contextmanager
def run_environment(profile: str, config_digest: str) -> Iterator[None]:
    """Within the block, :func:`record` (here and in child processes such as a chapter's kernel)
    reports ``profile`` and ``config_digest``; the previous environment is restored afterwards."""
    saved = {name: os.environ.get(name) for name in (PROFILE_ENV, CONFIG_HASH_ENV)}
    os.environ[PROFILE_ENV], os.environ[CONFIG_HASH_ENV] = profile, config_digest
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
