"""One figure style and registered, atomic figure saving.

Every figure is saved with :func:`savefig` under a name listed in the figure
manifest ``paper/figures.toml`` (figure -> chapter, caption), and carries its
provenance (:mod:`druids.provenance`): PNG text chunks ``druids:<key>`` and, in the
PDF, ``Keywords`` = ``key=value; ...`` with the same record.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import seaborn as sns

from druids import paths, provenance
from druids.cache import atomic_write

DPI = 150


def set_style() -> None:
    """Apply the compendium's matplotlib style (seaborn "ticks", colour-blind palette, readable sizes)."""
    sns.set_theme(
        context="notebook",
        style="ticks",
        palette="colorblind",
        font_scale=0.9,
        rc={"figure.constrained_layout.use": True, "savefig.dpi": DPI, "image.cmap": "viridis"},
    )


def manifest_path() -> Path:
    """The committed figure manifest, ``paper/figures.toml``."""
    return paths.PAPER / "figures.toml"


def load_manifest() -> dict[str, dict]:
    """Figure name -> ``{"chapter": ..., "caption": ...}`` from the manifest."""
    with open(manifest_path(), "rb") as f:
        figures = tomllib.load(f)["figures"]
    for name, entry in figures.items():
        missing = {"chapter", "caption"} - set(entry)
        if missing:
            raise ValueError(f"Figure {name!r} in {manifest_path()} lacks {sorted(missing)}")
    return figures


def provenance_metadata(rec: dict[str, str], fmt: str, name: str) -> dict[str, str | None]:
    """Matplotlib ``savefig`` metadata for ``fmt`` ("png" or "pdf") that carries the provenance ``rec``.

    PNG: one text chunk ``druids:<key>`` per entry. PDF (which takes only its standard
    keys): ``Keywords`` = ``key=value; ...``, ``Subject`` = the one-line description,
    and no ``CreationDate``, so that the same inputs give the same bytes.
    """
    if fmt == "png":
        return {"Title": name, **{f"druids:{key}": value for key, value in rec.items()}}
    keywords = "; ".join(f"{key}={value}" for key, value in rec.items())
    return {"Title": name, "Subject": provenance.describe(rec), "Keywords": keywords, "CreationDate": None}


def savefig(fig, name: str, config=None) -> list[Path]:
    """Save ``fig`` as ``<FIGURES>/<name>.png`` and ``.pdf``, atomically; ``name`` must be in the manifest.

    Both files record the provenance (``config``: the chapter's ``Config``, else the
    profile and config hash that ``druids run`` put in the environment).
    """
    if name not in load_manifest():
        raise ValueError(
            f"Figure {name!r} is not listed in {manifest_path()}; add a table "
            f'[figures.{name}] with chapter = "..." and caption = "..." before saving it.'
        )
    rec = provenance.record(config)
    saved = []
    for fmt in ("png", "pdf"):
        metadata = provenance_metadata(rec, fmt, name)
        path = paths.FIGURES / f"{name}.{fmt}"
        saved.append(atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)))
    return saved
