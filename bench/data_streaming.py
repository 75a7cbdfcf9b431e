"""Benchmark of reading ERA5 at real size: a synthetic multi-GB store streamed into training (not a test).

Writes a synthetic store in WeatherBench2's layout and the ``era5`` profile's
shape (9 variables, 69 channels at 64 x 32: 5 variables on 13 levels and 4 at
the surface, 6-hourly, one time per chunk, latitude descending) of about
``--gb`` GB float32 to local disk under ``--dir``, then measures in a fresh
process, so that its peak memory is the reader's alone:

1. the normalisation statistics of the training split in one streaming pass
   (``source.open_dataset``): seconds and GB/s;
2. the streamed training dataset: samples/s read by :func:`druids.data.dataset.collate`
   (batches of ``batch_size``, one thread as for a local store) and with
   ``READ_THREADS`` threads (as for a remote store), at random positions as
   training draws them;
3. what one training process consumes: samples/s of the ``era5`` profile's
   training step (forward, backward, AdamW) on batches already in memory, and
   the same steps with their batches streamed from the store (end to end);
4. denoiser evaluations per second at the sampler's member batch (for chapter
   estimates); and the peak resident memory of the whole process (``ru_maxrss``).

The store is deleted afterwards. Results go to ``bench/data_streaming.json``;
copy the summary into ``bench/RESULTS.md``.

Usage: ``python bench/data_streaming.py [--gb 4] [--dir /tmp] [--steps 10] [--batches 40]``
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from druids.config import ERA5_LEVELS, ERA5_VARIABLES, get_config

UPPER_AIR = ERA5_VARIABLES[:5]
BYTES_PER_TIME = (len(UPPER_AIR) * len(ERA5_LEVELS) + len(ERA5_VARIABLES) - len(UPPER_AIR)) * 32 * 64 * 4
START = "2000-01-01"


def synthetic_store(path: Path, n_times: int, seed: int = 0, block: int = 200) -> None:
    """AR(1) fields (lag-1 correlation 0.9) in the era5 profile's layout, written block by block (bounded memory)."""
    time = pd.date_range(START, periods=n_times, freq="6h").values
    lat = (-90 + 180 / 32 * (np.arange(32) + 0.5))[::-1]
    coords = {"time": time, "level": np.array(ERA5_LEVELS, dtype=np.int64), "latitude": lat, "longitude": 360 / 64 * np.arange(64)}
    dims = {name: ("time", "level", "latitude", "longitude") if name in UPPER_AIR else ("time", "latitude", "longitude") for name in ERA5_VARIABLES}
    shape = {name: tuple(len(coords[d]) for d in dim) for name, dim in dims.items()}
    import dask.array as da

    template = xr.Dataset(
        {name: (dims[name], da.zeros(shape[name], chunks=(1, *shape[name][1:]), dtype=np.float32), {"units": "1"}) for name in ERA5_VARIABLES},
        coords=coords,
    )
    template["land_sea_mask"] = (("latitude", "longitude"), (np.random.default_rng(seed).random((32, 64)) > 0.7).astype(np.float32))
    template.to_zarr(path, compute=False, zarr_format=2)
    xr.Dataset({"land_sea_mask": template["land_sea_mask"]}).to_zarr(path, mode="r+")
    rng = np.random.default_rng(seed)
    state = {name: rng.standard_normal(shape[name][1:]).astype(np.float32) for name in ERA5_VARIABLES}
    for start in range(0, n_times, block):
        stop = min(start + block, n_times)
        fields = {}
        for name in ERA5_VARIABLES:
            values = np.empty((stop - start, *shape[name][1:]), dtype=np.float32)
            for t in range(stop - start):
                state[name] = 0.9 * state[name] + np.float32(np.sqrt(1 - 0.81)) * rng.standard_normal(state[name].shape, dtype=np.float32)
                values[t] = 280.0 + 10.0 * state[name]
            fields[name] = (dims[name], values)
        xr.Dataset(fields).to_zarr(path, region={"time": slice(start, stop)})


def bench_config(store: Path, n_times: int):
    """The era5 profile on the synthetic store: all years but the last two for training, then one each."""
    years = pd.date_range(START, periods=n_times, freq="6h").year
    first, last = int(years.min()), int(years.max())
    if last - first < 2:
        raise ValueError(f"the store covers {first}-{last}; --gb must give at least 3 years (about 2.5 GB)")
    split = ((first, last - 2), (last - 1, last - 1), (last, last))
    cfg = get_config("era5")
    return dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, source=str(store), time_range=None, split_years=split))


def rate(n_samples: int, run) -> float:
    """Samples per second of ``run()``, which handles ``n_samples``."""
    start = time.perf_counter()
    run()
    return n_samples / (time.perf_counter() - start)


def loader_rates(train_set, batch_size: int, n_batches: int) -> tuple[dict, list]:
    """Samples/s of ``collate`` at random positions, one thread and :data:`READ_THREADS`; and the batches read."""
    from druids.data import dataset

    rng = np.random.default_rng(0)
    indices = [rng.integers(0, len(train_set), batch_size) for _ in range(n_batches)]
    read = []
    one = rate(n_batches * batch_size, lambda: read.extend(dataset.collate(train_set, idx, "cpu") for idx in indices))
    train_set.read_threads = dataset.READ_THREADS
    threaded = rate(n_batches // 2 * batch_size, lambda: [dataset.collate(train_set, idx, "cpu") for idx in indices[: n_batches // 2]])
    train_set.read_threads = 1
    return {"loader_samples_per_s": one, "loader_threads_samples_per_s": threaded, "read_threads": dataset.READ_THREADS}, read


def training_rates(cfg, stats, train_set, read: list, steps: int) -> dict:
    """Samples/s of the era5 model's EDM training step on batches in memory, and with each batch streamed."""
    import torch

    from druids import training
    from druids.data import dataset
    from druids.models import build_loss
    from druids.training import batches

    tc = cfg.training
    model = training.build_model(cfg, stats)
    loss = build_loss(cfg.model, stats.latitude, len(stats.channel_names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr)
    ratio = torch.as_tensor(train_set.residual_to_state)

    def step(condition, target, k):
        generator = torch.Generator().manual_seed(k)
        condition, target = batches.perturb_condition(condition, target, ratio, tc.condition_noise, generator, n_static=train_set.n_static)
        optimizer.zero_grad()
        loss(model, target, condition, generator).backward()
        optimizer.step()

    step(*read[0], 0)  # warm-up
    in_memory = rate(steps * tc.batch_size, lambda: [step(*read[k % len(read)], k) for k in range(steps)])
    positions = np.random.default_rng(1).integers(0, len(train_set), (steps, tc.batch_size))
    streamed = rate(steps * tc.batch_size, lambda: [step(*dataset.collate(train_set, positions[k], "cpu"), k) for k in range(steps)])
    members = cfg.sampling.member_batch
    y, c = torch.zeros(members, len(stats.channel_names), 32, 64), read[0][0][:1].expand(members, -1, -1, -1)
    with torch.no_grad():
        model.denoise(y, c, torch.ones(members))
        evaluations = rate(3 * members, lambda: [model.denoise(y, c, torch.ones(members)) for _ in range(3)])
    return {
        "training_samples_per_s": in_memory,
        "training_end_to_end_samples_per_s": streamed,
        "denoiser_member_evaluations_per_s": evaluations,
        "member_batch": members,
        "torch_threads": torch.get_num_threads(),
    }


def measure(store: Path, n_times: int, steps: int, n_batches: int) -> dict:
    """Everything timed in this process (run fresh, so that ``ru_maxrss`` is the reader's)."""
    from druids.data import dataset, source

    cfg = bench_config(store, n_times)
    start = time.perf_counter()
    ds, stats = source.open_dataset(cfg, progress=False)
    stats_s = time.perf_counter() - start
    train_set = dataset.ForecastDataset(ds, stats, "train", cfg.dataset)
    train_gb = (len(train_set) + 1) * BYTES_PER_TIME / 1e9
    loader, read = loader_rates(train_set, cfg.training.batch_size, n_batches)
    trained = training_rates(cfg, stats, train_set, read, steps)
    return {
        "n_channels": len(stats.channel_names),
        "static_channels": stats.static_channel_names,
        "train_samples": len(train_set),
        "train_split_gb": train_gb,
        "dataset_in_memory": train_set.in_memory,
        "stats_pass_s": stats_s,
        "stats_pass_gb_per_s": train_gb / stats_s,
        "batch_size": cfg.training.batch_size,
        **loader,
        **trained,
        "loader_over_training": loader["loader_samples_per_s"] / trained["training_samples_per_s"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=4.0, help="store size, float32 GB")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="local directory for the store (deleted afterwards)")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    parser.add_argument("--batches", type=int, default=40, help="batches read for the loader rate")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: the measuring child process
    parser.add_argument("--times", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.times, args.steps, args.batches)))
        return

    n_times = int(args.gb * 1e9 / BYTES_PER_TIME)
    work = Path(tempfile.mkdtemp(prefix="druids-bench-", dir=args.dir))
    store = work / "era5-synthetic.zarr"
    env = {**os.environ, "DRUIDS_CACHE": str(work / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        start = time.perf_counter()
        synthetic_store(store, n_times)
        write_s = time.perf_counter() - start
        disk_gb = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 1e9
        child = [sys.executable, __file__, "--measure", str(store), "--times", str(n_times), "--steps", str(args.steps), "--batches", str(args.batches)]
        out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
        measured = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "date": datetime.date.today().isoformat(),
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, local disk",
        "command": "python bench/data_streaming.py " + " ".join(sys.argv[1:]),
        "store_times": n_times,
        "store_gb_float32": n_times * BYTES_PER_TIME / 1e9,
        "store_gb_on_disk": disk_gb,
        "write_s": write_s,
        **measured,
    }
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
