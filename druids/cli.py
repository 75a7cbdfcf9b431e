"""Command line: ``druids run [CHAPTER...] --profile P [--data STORE]``, ``druids generate``, ``druids train``, ``druids chapters``.

Chapters are the py:percent notebooks ``notebooks/<stem>.py``. ``run`` converts
each with jupytext and executes it with papermill (parameters ``profile`` and
``seed`` injected, and ``data_source`` with ``--data``); executed notebooks go to
``build/notebooks/``. A failing cell stops the run with the chapter and cell named.
On a WeatherBench2 store (``--data``, or the ``era5`` profile) figures, values
and executed notebooks go to ``build/<profile>-<store name>/`` instead, so the
paper's own (Held–Suarez) ones are never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import typer

from druids import paths
from druids.config import PROFILES, Config, from_dict, get_config, objective_config, with_data

app = typer.Typer(add_completion=False, help="DRUIDS compendium: run chapters, generate data.")


def chapter_stems() -> list[str]:
    """All chapters, in order (``01_data``, ``02_training``, ...)."""
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _resolve(chapters: list[str]) -> list[str]:
    available = chapter_stems()
    if not chapters:
        return available
    unknown = [c for c in chapters if c not in available]
    if unknown:
        raise typer.BadParameter(f"unknown chapter(s) {', '.join(unknown)}; available: {', '.join(available)}")
    return chapters


def _check_profile(profile: str) -> str:
    try:
        get_config(profile)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--profile") from None
    return profile


def _read_config(path: Path) -> Config:
    """The :class:`Config` in the JSON file ``path`` (as written by ``to_dict``); a usage error if it is not one."""
    try:
        return from_dict(Config, json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise typer.BadParameter(f"{path} is not a Config as JSON ({type(err).__name__}: {err})", param_hint="--config") from None


def _configure(profile: str, seed: int | None, data: str | None) -> Config:
    """The profile's config on ``data`` (:func:`druids.config.with_data`); a usage error if they do not go together."""
    try:
        return with_data(get_config(_check_profile(profile), seed=seed), data)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--data") from None


def _store_outputs(cfg: Config) -> Path | None:
    """For a store: ``build/<profile>-<store name>/``, where figures and values go (unless ``DRUIDS_FIGURES`` /
    ``DRUIDS_VALUES`` say otherwise; the chapters' kernels inherit them) and its ``notebooks/``; None for the world."""
    if cfg.dataset.source == "heldsuarez":
        return None
    root = paths.BUILD / f"{cfg.profile}-{Path(cfg.dataset.source.rstrip('/')).stem}"
    os.environ.setdefault("DRUIDS_FIGURES", str(root / "figures"))
    os.environ.setdefault("DRUIDS_VALUES", str(root / "values"))
    return root / "notebooks"


def execute_chapter(
    stem: str, profile: str, seed: int, output_dir: Path | None = None, stream: bool = False, data: str | None = None
) -> Path:
    """Execute one chapter with papermill; return the executed notebook's path.

    ``stream``: echo the cells' stdout/stderr (progress bars included) while they run.
    ``data``: injected as the chapter's ``data_source`` (a store path or URL; None: the profile's data).
    The kernel runs inside ``provenance.run_environment`` (profile and config hash for
    the chapter's figures and values), and the executed notebook's metadata ``druids``
    records the run (:func:`_record_run`).
    """
    import jupytext
    import papermill

    from druids import provenance
    from druids.config import config_hash

    output_dir = paths.BUILD / "notebooks" if output_dir is None else Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = output_dir / f"{stem}.source.ipynb"
    executed = output_dir / f"{stem}.ipynb"
    notebook = jupytext.read(paths.NOTEBOOKS / f"{stem}.py")
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    jupytext.write(notebook, source)
    if data is not None and "data_source" not in papermill.inspect_notebook(str(source)):
        source.unlink()
        raise typer.BadParameter(f"chapter {stem} has no data_source parameter: it cannot run on {data}", param_hint="--data")
    clock = time.perf_counter()
    try:
        with provenance.run_environment(profile, config_hash(with_data(get_config(profile, seed=seed), data))):
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters={"profile": profile, "seed": seed, **({} if data is None else {"data_source": data})},
                cwd=str(paths.NOTEBOOKS),
                kernel_name="python3",
                progress_bar=stream,
                stdout_file=sys.stdout if stream else None,
                stderr_file=sys.stderr if stream else None,
            )
            _record_run(executed, seed, time.perf_counter() - clock)
    except papermill.PapermillExecutionError as err:
        raise ChapterFailed(stem, err) from None
    finally:
        source.unlink(missing_ok=True)
    return executed


def _record_run(executed: Path, seed: int, seconds: float) -> None:
    """Add the run to the executed notebook's metadata ``druids``: profile, config hash, git
    revision and dirty flag, package versions (:func:`druids.provenance.record`), seed,
    wall time in seconds and the UTC time it finished. ``make book`` shows them."""
    import datetime

    import nbformat

    from druids import provenance
    from druids.cache import atomic_write

    notebook = nbformat.read(executed, as_version=4)
    finished = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run = {"seed": seed, "wall_seconds": round(seconds, 1), "finished_utc": finished}
    notebook.metadata["druids"] = {**provenance.record(), **run}
    atomic_write(executed, lambda tmp: nbformat.write(notebook, str(tmp)))


class ChapterFailed(RuntimeError):
    """A chapter's cell raised; names the chapter, the cell and the error."""

    def __init__(self, stem: str, err):
        self.stem = stem
        super().__init__(f"chapter {stem} failed in cell {err.cell_index} (execution count {err.exec_count}): {err.ename}: {err.evalue}")


@app.command()
def run(
    chapters: list[str] = typer.Argument(None, help="chapter stems such as 01_data; default: all"),
    profile: str = typer.Option("default", help=f"one of {', '.join(PROFILES)}"),
    seed: int = typer.Option(0, help="root seed"),
    data: str = typer.Option(None, help="a WeatherBench2-layout zarr store (path or URL, e.g. gs://...; needs gcsfs) instead of the profile's data"),
) -> None:
    """Execute chapters with papermill; figures go to paper/figures, values to paper/values
    (on a store: to build/<profile>-<store name>/).

    The chapters' progress bars (training steps, forecast leads) print as plain
    text and stream to this terminal (``runtime.progress``).
    """
    from druids.runtime import PROGRESS_ENV

    output_dir = _store_outputs(_configure(profile, seed, data))
    if output_dir is not None:
        typer.echo(f"[druids] data: {data or get_config(profile).dataset.source}; outputs in {output_dir.parent}")
    os.environ[PROGRESS_ENV] = "text"  # the chapters' kernels inherit it
    for stem in _resolve(chapters or []):
        typer.echo(f"[druids] running chapter {stem} (profile {profile})")
        start = time.perf_counter()
        try:
            out = execute_chapter(stem, profile, seed, output_dir=output_dir, stream=True, data=data)
        except ChapterFailed as err:
            typer.echo(f"[druids] {err}", err=True)
            raise typer.Exit(1) from None
        shown = out.relative_to(paths.ROOT) if out.is_relative_to(paths.ROOT) else out
        typer.echo(f"[druids] chapter {stem} done in {time.perf_counter() - start:.0f} s; executed notebook: {shown}")


@app.command()
def generate(
    profile: str = typer.Option("default", help=f"one of {', '.join(PROFILES)}"),
    seed: int = typer.Option(None, help="override the profile's seed"),
) -> None:
    """Generate (or resume generating) the profile's Held–Suarez world dataset."""
    from druids.data import heldsuarez

    cfg = get_config(_check_profile(profile), seed=seed)
    path = heldsuarez.generate(cfg.world)
    typer.echo(str(path))


@app.command()
def train(
    profile: str = typer.Option("default", help=f"one of {', '.join(PROFILES)}"),
    objective: str = typer.Option("edm", help="edm or flow"),
    seed: int = typer.Option(None, help="override the profile's seed: the world's (a new data store) and training's"),
    training_seed: int = typer.Option(None, help="override the seed of training only (initial weights, batches, noise), on the same world"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    processes: int = typer.Option(0, help="local CPU training processes; 0: training.auto_processes"),
    run_dir: Path = typer.Option(None, help="run directory (default: <cache>/runs/<objective>-<hash>)"),
    config: Path = typer.Option(None, exists=True, dir_okay=False, help="JSON of a whole Config (druids.config.to_dict); replaces --profile and --seed"),
    data: str = typer.Option(None, help="a WeatherBench2-layout zarr store (path or URL) instead of the profile's data"),
) -> None:
    """Train (or resume, or load if finished) the profile's denoiser; prints the run directory.

    Several processes on one or more machines: ``torchrun --nproc-per-node N -m druids train ...``.
    """
    if config is None:
        cfg = _configure(profile, seed, data)
    else:
        cfg = _read_config(config)
    if objective not in ("edm", "flow"):
        raise typer.BadParameter(f"objective must be edm or flow, not {objective!r}", param_hint="--objective")
    if training_seed is not None:
        cfg = dataclasses.replace(cfg, seed=training_seed)  # cfg.world.seed keeps the world
    cfg = objective_config(cfg, objective)
    # imported after the checks, so that a bad option fails at once
    from druids import calibration, runtime, training

    processes = processes or training.auto_processes(cfg, device)
    result = training.train(cfg, run_dir, device=device, validators=[calibration.SkillValidator(cfg)], processes=processes)
    if runtime.Process.from_env().rank == 0:
        typer.echo(str(result.run_dir))


@app.command()
def chapters() -> None:
    """List the chapters."""
    for stem in chapter_stems():
        typer.echo(stem)

