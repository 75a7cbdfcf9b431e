"""The book: the executed chapters as a static HTML site in ``build/book``.

``python -m druids.book`` (``make book``) exports every executed chapter
``build/notebooks/<stem>.ipynb`` (written by ``druids run``) to ``<stem>.html``
with nbconvert. A first cell says how the chapter was run (profile, seed, config
hash, git revision and dirty flag, package versions, run time: the notebook's
metadata ``druids`` written by ``druids.cli.execute_chapter``, else what papermill
recorded) and shows the chapter's figures with their manifest captions (PNGs
copied to ``figures/``), marking those that are in the paper. ``index.html``
lists the chapters with the same facts. Everything is local: nbconvert's ``lab``
template inlines its styles (only formulae in markdown would need MathJax from
the network).
"""

from __future__ import annotations

import html
import shutil
import sys
from pathlib import Path

import nbformat

from druids import paths, provenance
from druids.plotting import load_manifest


def duration_text(seconds: float | None) -> str:
    """``65.2`` -> ``1 min 5 s``; ``None`` -> ``unknown``."""
    if seconds is None:
        return "unknown"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def run_info(notebook) -> dict:
    """How a chapter was run: ``druids run``'s metadata, filled in from papermill's where absent."""
    papermill = notebook.metadata.get("papermill", {})
    parameters = papermill.get("parameters", {})
    info = {"profile": parameters.get("profile", "unknown"), "seed": parameters.get("seed", "unknown")}
    info |= {"wall_seconds": papermill.get("duration"), "finished_utc": papermill.get("end_time", "unknown")}
    return info | dict(notebook.metadata.get("druids", {}))


def chapter_title(notebook, stem: str) -> str:
    """The first ``# `` heading of the chapter's markdown, else its stem."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


def run_summary(info: dict) -> str:
    """One line: profile, seed, config, git revision, run time."""
    dirty = " (dirty)" if info.get("git_dirty") == "true" else ""
    revision = str(info.get("git_revision", "unknown"))[:12]
    return (
        f"profile {info['profile']}, seed {info['seed']}, config {info.get('config_hash', 'unknown')}, "
        f"git {revision}{dirty}, run time {duration_text(info['wall_seconds'])}, finished {info['finished_utc']}"
    )


def header_cell(stem: str, info: dict, manifest: dict, figures_dir: Path, out_dir: Path):
    """A markdown cell: how the chapter was run and its figures (copied into ``out_dir/figures``)."""
    lines = [f"**How this chapter was run:** {run_summary(info)}."]
    packages = [f"{name} {info[name]}" for name in provenance.KEY_PACKAGES if name in info]
    if packages:
        lines.append(f"**Packages:** {', '.join(packages)}.")
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    for name, entry in manifest.items():
        png = figures_dir / f"{name}.png"
        if entry["chapter"] != stem or not png.exists():
            continue
        shutil.copy2(png, out_dir / "figures" / png.name)
        where = "supplementary" if entry.get("supplementary") else "in the paper"
        lines.append(f"![{name}](figures/{png.name})\n\n`{name}` ({where}): {entry['caption']}")
    return nbformat.v4.new_markdown_cell("\n\n".join(lines))


def export_chapter(path: Path, out_dir: Path, manifest: dict, figures_dir: Path) -> dict:
    """Write ``out_dir/<stem>.html`` for the executed chapter ``path``; return its row of the index."""
    from nbconvert import HTMLExporter

    notebook = nbformat.read(path, as_version=4)
    info, title = run_info(notebook), chapter_title(notebook, path.stem)
    notebook.cells.insert(0, header_cell(path.stem, info, manifest, figures_dir, out_dir))
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook, resources={"metadata": {"name": title}})
    (out_dir / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return {"stem": path.stem, "title": title, "info": info}


def index_page(rows: list[dict]) -> str:
    """``index.html``: one entry per chapter with its title, profile and run time."""
    items = "\n".join(
        f'<li><a href="{r["stem"]}.html">{html.escape(r["title"])}</a><br><small>{html.escape(run_summary(r["info"]))}</small></li>'
        for r in rows
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>DRUIDS: the executed chapters</title>'
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto}li{margin:0.8em 0}</style></head>\n"
        "<body><h1>DRUIDS: the executed chapters</h1>\n"
        "<p>Each chapter as <code>druids run</code> executed it, with its figures, its profile and its run time. "
        "The paper is <code>paper/main.pdf</code> (<code>make paper</code>).</p>\n"
        f"<ol>\n{items}\n</ol></body></html>\n"
    )


def build_book(notebooks_dir: Path | None = None, out_dir: Path | None = None, figures_dir: Path | None = None) -> Path:
    """Export the executed chapters in ``notebooks_dir`` (default ``build/notebooks``) to ``out_dir``
    (default ``build/book``); return the index page. A usage error if there is nothing to export."""
    notebooks_dir = paths.BUILD / "notebooks" if notebooks_dir is None else Path(notebooks_dir)
    out_dir = paths.BUILD / "book" if out_dir is None else Path(out_dir)
    figures_dir = paths.FIGURES if figures_dir is None else Path(figures_dir)
    chapters = sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb") if not p.name.endswith(".source.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"No executed chapters in {notebooks_dir}: run them first (make all, or druids run).")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    rows = [export_chapter(path, out_dir, manifest, figures_dir) for path in chapters]
    index = out_dir / "index.html"
    index.write_text(index_page(rows), encoding="utf-8")
    return index


def main() -> None:
    try:
        index = build_book()
    except FileNotFoundError as err:
        sys.exit(str(err))
    print(f"wrote {index}")


if __name__ == "__main__":
    main()
