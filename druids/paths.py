"""Repository-anchored paths, independent of the current working directory.

papermill and nbval execute notebooks with different working directories, so
every path is derived from this file's location. ``DRUIDS_DATA`` and
``DRUIDS_CACHE`` override where generated data and cached artifacts go;
``DRUIDS_FIGURES`` and ``DRUIDS_VALUES`` redirect the paper's outputs (the test
suite uses them so that smoke runs never overwrite the paper's figures).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PAPER = ROOT / "paper"
FIGURES = Path(os.environ.get("DRUIDS_FIGURES", PAPER / "figures"))
VALUES = Path(os.environ.get("DRUIDS_VALUES", PAPER / "values"))
BUILD = ROOT / "build"
BENCH = ROOT / "bench"


def data_dir() -> Path:
    """Directory for generated datasets (``$DRUIDS_DATA`` or ``<repo>/data``)."""
    return Path(os.environ.get("DRUIDS_DATA", ROOT / "data"))


def cache_dir() -> Path:
    """Directory for cached artifacts keyed by config hash (``$DRUIDS_CACHE`` or ``<repo>/.cache``)."""
    return Path(os.environ.get("DRUIDS_CACHE", ROOT / ".cache"))
