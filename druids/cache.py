"""Compute-or-load artifacts keyed by configuration hash, written atomically.

An artifact lives at ``<cache>/<kind>/<kind>-<hash>.<suffix>`` next to a
``.json`` file holding the full configuration. Writes go to a temporary path in
the same directory and are renamed into place, so a killed run never leaves a
half-written artifact that could be mistaken for a finished one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from druids import paths
from druids.config import config_hash, to_dict

T = TypeVar("T")


def artifact_path(kind: str, cfg: Any, suffix: str, root: Path | None = None) -> Path:
    """Where the artifact of ``kind`` for config ``cfg`` lives."""
    root = paths.cache_dir() if root is None else Path(root)
    return root / kind / f"{kind}-{config_hash(cfg)}.{suffix}"


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` to ``path`` (file or directory).

    An existing ``path`` is replaced only after ``write`` has succeeded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path


def write_json(path: Path, data: dict) -> Path:
    """Atomically write ``data`` as pretty JSON."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def compute_or_load(
    kind: str,
    cfg: Any,
    compute: Callable[[], T],
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    suffix: str,
    root: Path | None = None,
) -> T:
    """Load the cached artifact for ``cfg`` or compute, save atomically and return it.

    The config is written beside the artifact (``.json``) for provenance; a
    different config has a different hash and so never reuses this artifact.
    """
    path = artifact_path(kind, cfg, suffix, root)
    if path.exists():
        return load(path)
    value = compute()
    atomic_write(path, lambda tmp: save(value, tmp))
    write_json(path.with_suffix(path.suffix + ".json"), {"kind": kind, "config": to_dict(cfg)})
    return load(path)
