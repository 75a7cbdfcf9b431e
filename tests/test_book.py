"""The book (``make book``): executed chapters to a static HTML site with an index, figures, profile and run time."""

from __future__ import annotations

import nbformat
import pytest

from druids import book
from druids.plotting import load_manifest


def executed_chapter(path, metadata: dict) -> None:
    """A small executed notebook as ``druids run`` writes it: a title, a code cell with output, run metadata."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Chapter 1 — Data: the world\n\nText."),
        nbformat.v4.new_code_cell(
            "1 + 1", outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
        ),
    ]
    notebook.metadata.update(metadata)
    nbformat.write(notebook, str(path))


def test_book_has_index_chapters_figures_profile_and_run_time(tmp_path):
    notebooks, figures, out = tmp_path / "notebooks", tmp_path / "figures", tmp_path / "book"
    notebooks.mkdir()
    figures.mkdir()
    run = {"profile": "smoke", "seed": 0, "config_hash": "abc123def456", "git_revision": "f" * 40, "git_dirty": "true",
           "wall_seconds": 65.2, "finished_utc": "2026-01-01T00:00:00+00:00", "torch": "2.13.0"}  # fmt: skip
    executed_chapter(notebooks / "01_data.ipynb", {"druids": run})
    papermill_only = {"papermill": {"parameters": {"profile": "default", "seed": 3}, "duration": 7.0, "end_time": "t"}}
    executed_chapter(notebooks / "02_training.ipynb", papermill_only)
    executed_chapter(notebooks / "02_training.source.ipynb", {})  # druids run's temporary file: not a chapter
    (figures / "data_snapshots.png").write_bytes(b"\x89PNG\r\n\x1a\n")

    index = book.build_book(notebooks, out, figures).read_text()
    assert 'href="01_data.html"' in index and 'href="02_training.html"' in index and "source" not in index
    assert "Chapter 1 — Data: the world" in index
    assert "profile smoke, seed 0, config abc123def456, git ffffffffffff (dirty), run time 1 min 5 s" in index
    assert "profile default, seed 3" in index and "run time 7 s" in index

    page = (out / "01_data.html").read_text()
    caption = load_manifest()["data_snapshots"]["caption"]
    assert "figures/data_snapshots.png" in page and caption.split(":")[0] in page and "torch 2.13.0" in page
    assert (out / "figures" / "data_snapshots.png").exists()


def test_book_without_executed_chapters_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run them first"):
        book.build_book(tmp_path, tmp_path / "book", tmp_path)


def test_duration_text():
    assert [book.duration_text(s) for s in (None, 4.4, 60, 3725)] == ["unknown", "4 s", "1 min 0 s", "62 min 5 s"]
