"""A training run on disk: its configuration, checkpoint and metrics log.

A run is fixed by its :class:`RunConfig` (seed, world, dataset, model,
training) and lives in ``<cache>/runs/<objective>-<hash>/``:

* ``checkpoint.pt``: the latest state (weights, EMA weights, optimiser,
  scheduler, step, run configuration), replaced atomically. Only tensors,
  numbers and strings, so it loads with ``torch.load(weights_only=True)``.
  Any file that cannot be read as one raises :class:`CheckpointError`, which
  names the file and the fix.
* ``metrics.jsonl``: one JSON record per line; ``{"kind": "train", "step",
  "loss", "lr", "grad_norm", "samples_per_s"}`` after every optimiser step,
  ``{"kind": "val", "step", "sigma": [...], "val_mse": [...]}`` after every
  validation and ``{"kind": "val_extra", "step", ...}`` from extra validators
  (see :func:`read_metrics`, :func:`read_extra_validation`).
* ``config.json``: the run configuration, for people.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from druids import paths
from druids.cache import atomic_write
from druids.config import Config, DatasetConfig, ModelConfig, TrainingConfig, WorldConfig, config_hash, to_dict

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; its hash names the run directory."""

    seed: int
    world: WorldConfig
    dataset: DatasetConfig
    model: ModelConfig
    training: TrainingConfig

    @classmethod
    def of(cls, cfg: Config) -> RunConfig:
        return cls(cfg.seed, cfg.world, cfg.dataset, cfg.model, cfg.training)


def default_run_dir(cfg: Config) -> Path:
    """``<cache>/runs/<objective>-<hash of RunConfig>``."""
    return paths.cache_dir() / "runs" / f"{cfg.model.objective}-{config_hash(RunConfig.of(cfg))}"


# ----------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or written for another configuration."""


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths where two :func:`~druids.config.to_dict` trees differ: ``["model.base_channels: 8 != 16"]``."""
    differences = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {json.dumps(a)} != {json.dumps(b)}")
    return differences


def save_checkpoint(path: Path, step: int, model, ema, optimizer, scheduler, run: RunConfig) -> None:
    """Write the training state atomically (temporary file, then rename)."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": json.dumps(to_dict(run), sort_keys=True),
        "config_hash": config_hash(run),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: Path, device="cpu") -> dict:
    """The state saved by :func:`save_checkpoint`, on ``device``; :class:`CheckpointError` if it cannot be read.

    Whatever goes wrong (a truncated or corrupt file, another program's file,
    missing entries) is the same problem for the user and gets one message.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        int(state["step"]), json.loads(state["config"])
        for key in ("model", "ema", "optimizer", "scheduler"):
            state[key].keys()
    except Exception as err:  # noqa: BLE001 (every failure to read is the same user error)
        raise CheckpointError(
            f"Cannot read checkpoint {path}: corrupt, truncated or not written by druids.training "
            f"({type(err).__name__}). Delete it to train this run again."
        ) from err
    return state


def load_checkpoint(path: Path, run: RunConfig, device) -> dict:
    """:func:`read_checkpoint`, checked against ``run``: an error names the fields that differ."""
    state = read_checkpoint(path, device)
    differences = config_differences(json.loads(state["config"]), to_dict(run))
    if differences:
        raise CheckpointError(
            f"Checkpoint {path} was written for another configuration (checkpoint != requested): "
            f"{'; '.join(differences)}. Train into another run_dir, or delete {path.parent} to start over."
        )
    return state


def checkpoint_step(run_dir: Path) -> int:
    """The optimiser step of the run's checkpoint, 0 if it has none."""
    path = Path(run_dir) / CHECKPOINT
    return int(read_checkpoint(path)["step"]) if path.exists() else 0


# --------------------------------------------------------------------- metrics


def append_metrics(path: Path, record: dict) -> None:
    """Append one JSON record to the metrics log."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records after ``step`` (logged by a run killed after its last checkpoint)."""
    if path.exists():
        lines = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in lines)))


def logged_step(run_dir: Path) -> int:
    """The step of the last complete record in the run's metrics log (0 if there is none yet)."""
    path = Path(run_dir) / METRICS
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):  # a line being written
            continue
    return 0


def _records(run_dir: Path, kinds: tuple[str, ...]) -> list[dict]:
    """The records of the run's metrics log whose ``kind`` is one of ``kinds``."""
    lines = (Path(run_dir) / METRICS).read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["kind"] in kinds]


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """``metrics.jsonl`` of a run as a tidy table.

    One row per optimiser step (``kind == "train"``: ``step, loss, lr,
    grad_norm, samples_per_s``) and one per validation step and noise level
    (``kind == "val"``: ``step, sigma, val_mse``); other columns are NaN.
    """
    frame = pd.DataFrame.from_records(_records(run_dir, ("train", "val")))
    if "sigma" in frame:
        frame = frame.explode(["sigma", "val_mse"], ignore_index=True)
        frame = frame.astype({"sigma": float, "val_mse": float})
    return frame


def read_extra_validation(run_dir: Path) -> pd.DataFrame:
    """The ``val_extra`` records of a run (from validators), one row per step and list entry."""
    frame = pd.DataFrame.from_records(_records(run_dir, ("val_extra",)))
    if frame.empty:
        return frame
    listed = [c for c in frame.columns if isinstance(frame[c].iloc[0], list)]
    return frame.explode(listed, ignore_index=True)
