"""Benchmark of ``druids.runtime.process_map`` (not a test): small independent work in one process or side by side.

Chapters 01, 03 and 04 run independent pieces of work that are too small to keep
two threads busy: the world's dynamics at T21, free runs of one or two members,
Jacobian products at batch 1 for the Lanczos eigensolver, tiny networks. This
bench runs the same ``--items`` pieces of each kind (a) one after the other in
this process with all torch threads, and (b) through ``process_map`` in one
spawned one-thread process per core (spawning, imports and the processes' own
warm-up included), and reports the wall times and their ratio, in one run:

- ``jacobian``: 20 vector-Jacobian products at batch 1 through a freshly
  initialised default-size EDM denoiser (25 channels, 32 x 64), sigma 1;
- ``tiny_training``: 150 Adam steps of batch 32 of chapter 04's memorisation
  network (``ExplainConfig.memo_base_channels``, levels (1, 2), one block) on 3 channels;
- ``world``: 60 days of the ``default`` Held–Suarez world from rest (JAX; each process compiles its own step).

Results go to ``bench/process_map.json``.
Usage: ``OMP_WAIT_POLICY=PASSIVE python bench/process_map.py [--items 4]``
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from druids import runtime
from druids.config import get_config, objective_config
from druids.models import build_denoiser, build_loss, noise_band

GRID = (32, 64)
N_CHANNELS, N_CONDITION = 25, 29


def _latitude() -> np.ndarray:
    return np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(GRID[0])[0]))


def jacobian(seed: int) -> float:
    """20 batch-1 VJPs through a fresh default-size denoiser; seconds."""
    start = time.perf_counter()
    cfg = objective_config(get_config("default"), "edm")
    torch.manual_seed(seed)
    denoiser = build_denoiser(cfg.model, N_CHANNELS, N_CONDITION, noise_band(_latitude(), 21)).eval().requires_grad_(False)
    y, c = torch.randn(1, N_CHANNELS, *GRID), torch.randn(1, N_CONDITION, *GRID)
    _, pull = torch.func.vjp(lambda v: denoiser.denoise(v, c, 1.0), y)
    for _ in range(20):
        pull(torch.randn_like(y))
    return time.perf_counter() - start


def tiny_training(seed: int) -> float:
    """150 Adam steps of batch 32 of chapter 04's memorisation network on 3 channels; seconds."""
    start = time.perf_counter()
    cfg = get_config("default")
    model_cfg = dataclasses.replace(cfg.model, base_channels=cfg.explain.memo_base_channels, channel_mults=(1, 2), blocks_per_level=1)
    torch.manual_seed(seed)
    denoiser = build_denoiser(model_cfg, 3, 7, noise_band(_latitude(), 21))
    loss = build_loss(model_cfg, _latitude(), 3)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=1e-3)
    target, condition = torch.randn(64, 3, *GRID), torch.randn(64, 7, *GRID)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(150):
        rows = torch.randint(0, 64, (32,), generator=generator)
        optimiser.zero_grad()
        loss(denoiser, target[rows], condition[rows], generator).backward()
        optimiser.step()
    return time.perf_counter() - start


def world(seed: int) -> float:
    """60 days of the default world from rest; seconds."""
    from druids.data.heldsuarez.store import simulate

    start = time.perf_counter()
    simulate(dataclasses.replace(get_config("default").world, seed=seed), 60.0, keep_every=4, progress=False)
    return time.perf_counter() - start


def compare(function, items: int) -> dict:
    """Wall seconds of ``items`` calls here (all threads) and through ``process_map`` (one process per core)."""
    start = time.perf_counter()
    here = [function(k) for k in range(items)]
    serial = time.perf_counter() - start
    start = time.perf_counter()
    spawned = runtime.process_map(function, range(items), progress=False)
    side_by_side = time.perf_counter() - start
    return {
        "serial_seconds": serial, "process_map_seconds": side_by_side, "speed_up": serial / side_by_side,
        "item_seconds_serial": here, "item_seconds_process_map": spawned,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4)
    args = parser.parse_args()
    results = {}
    for function in (jacobian, tiny_training, world):
        results[function.__name__] = compare(function, args.items)
        r = results[function.__name__]
        print(f"{function.__name__}: {r['serial_seconds']:.1f} s here, {r['process_map_seconds']:.1f} s side by side: {r['speed_up']:.2f}x")
    out = {
        "date": datetime.date.today().isoformat(), "device": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads_here": torch.get_num_threads(), "processes": runtime.local_processes(args.items),
        "items": args.items, "results": results,
    }  # fmt: skip
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
