"""Benchmark of ensemble sampling with the default-size denoiser (not a test).

On synthetic states of the Held–Suarez world's shape (u, v, T on 8 levels and
surface pressure: 25 channels on the 32 x 64 Gaussian grid) and an untrained
``default``-profile EDM denoiser (the cost does not depend on the weights),
measures in one run, on the CPU and, when ``torch.cuda.is_available()``, on the GPU:
- the CPU's peak in the same run (``bench/peak.py``) and each result's achieved
  network GFLOP/s as a fraction of the convolution forward peak;
- member-steps/s of ``druids.sampling.ensembles`` with GenCast's sampler
  (``SamplingConfig()``: DPM-Solver++(2S), 20 noise levels, 39 NFE per 6-hour
  step; the ``default`` profile's chapters use 10 levels), all members in
  one batch (``member_batch = members``) for the variants of ``SamplingConfig``
  (eager fp32: the baseline; ``bf16``; ``channels_last``; both; ``compile``;
  all three), and eager fp32 one member at a time (``member_batch = 1``);
- denoiser evaluations/s inside those forecasts (one evaluation = one sample
  through the network: NFE x member-steps / s), and, for the baseline, of the
  bare network (forward passes only, same batch size), which shows the
  forecast's overhead.
Each forecast is warmed up by one untimed step (which also compiles). Results go to ``bench/sampling.json``.

Usage: ``python bench/sampling.py [--members 16] [--steps 2] [--gpu-members 64]``
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
import xarray as xr
from peak import cpu_peak

from druids import sampling
from druids.config import SamplingConfig, get_config
from druids.data.normalisation import compute_norm_stats
from druids.models import build_denoiser

N_LEVELS, GRID = 8, (32, 64)
GENCAST_SAMPLER = SamplingConfig()  # DPM-Solver++(2S) with GenCast's 20 noise levels and churn


def synthetic_states(n_times: int = 8, seed: int = 0) -> xr.Dataset:
    """Random-walk states in the data store's schema, 6-hourly, on the 32 x 64 Gaussian grid."""
    rng = np.random.default_rng(seed)
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(GRID[0])[0]))
    coords = {
        "time": np.datetime64("2000-01-01T00", "ns") + np.arange(n_times) * np.timedelta64(6, "h"),
        "level": (np.arange(N_LEVELS) + 0.5) * 1000.0 / N_LEVELS,
        "latitude": latitude,
        "longitude": np.arange(GRID[1]) * 360.0 / GRID[1],
    }
    walk = lambda scale, *shape: np.cumsum(scale * rng.standard_normal((n_times, *shape)), axis=0).astype(np.float32)  # noqa: E731
    dims3, dims2 = ("time", "level", "latitude", "longitude"), ("time", "latitude", "longitude")
    return xr.Dataset(
        {
            "u_component_of_wind": (dims3, 10 + walk(2.0, N_LEVELS, *GRID), {"units": "m s-1"}),
            "v_component_of_wind": (dims3, walk(2.0, N_LEVELS, *GRID), {"units": "m s-1"}),
            "temperature": (dims3, 260 + walk(1.0, N_LEVELS, *GRID), {"units": "K"}),
            "surface_pressure": (dims2, 1e5 + walk(100.0, *GRID), {"units": "Pa"}),
        },
        coords=coords,
    )


def forward_rate(denoiser, n_channels: int, n_condition: int, batch: int, device, calls: int) -> float:
    """Samples per second through the bare network (``denoise``) at ``batch``, after 2 warm-up calls."""
    y = torch.randn(batch, n_channels, *GRID, device=device)
    c = torch.randn(batch, n_condition, *GRID, device=device)
    sigma = torch.ones(batch, device=device)
    with torch.no_grad():
        for _ in range(2):
            denoiser.denoise(y, c, sigma)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            denoiser.denoise(y, c, sigma)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return calls * batch / (time.perf_counter() - start)


#: Variants of ``SamplingConfig`` measured batched: (name, bf16, channels_last, compile)
VARIANTS = [
    ("eager fp32", False, False, False),
    ("bf16", True, False, False),
    ("channels-last", False, True, False),
    ("bf16 + channels-last", True, True, False),
    ("compile", False, False, True),
    ("compile + bf16 + channels-last", True, True, True),
]


def forward_flops(denoiser, n_channels: int) -> float:
    """FLOPs of one network evaluation (one sample), counted with ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    y, c = torch.randn(1, n_channels, *GRID), torch.randn(1, n_channels + 4, *GRID)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        denoiser.denoise(y, c, torch.ones(1))
    return float(counter.get_total_flops())


def measure(device: torch.device, members: int, steps: int) -> list[dict]:
    cfg = get_config("default")
    states = synthetic_states()
    stats = compute_norm_stats(states, cfg.dataset.variables)
    n_channels = len(stats.channel_names)
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model, n_channels, n_channels + 4).to(device).eval()
    flops = forward_flops(denoiser.cpu(), n_channels)
    denoiser.to(device)
    initial = states.isel(time=[-1])
    runs = [(*variant, members) for variant in VARIANTS]
    runs.append(("eager fp32, one at a time", False, False, False, 1))
    rows = []
    for name, bf16, channels_last, compiled, batch in runs:
        options = {"bf16": bf16, "channels_last": channels_last, "compile": compiled}
        sampling_cfg = dataclasses.replace(GENCAST_SAMPLER, member_batch=batch, **options)
        cost = sampling.sampler_cost(denoiser, stats, initial, sampling_cfg, cfg.dataset, members, steps)
        row = {"device": device.type, "variant": name, **options, "members": members, **cost,
               "achieved_gflops": flops * cost["evaluations_per_s"] / 1e9}  # fmt: skip
        if name == "eager fp32":
            calls = max(4, 4 * members // batch) if device.type == "cuda" else max(2, members // batch)
            row["forward_only_evaluations_per_s"] = forward_rate(denoiser, n_channels, n_channels + 4, batch, device, calls)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for row in rows:
        row["speed_up_vs_eager_batched"] = row["member_steps_per_s"] / rows[0]["member_steps_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=16, help="ensemble size on the CPU")
    parser.add_argument("--steps", type=int, default=2, help="timed 6-hour steps per forecast")
    parser.add_argument("--gpu-members", type=int, default=64, help="ensemble size on the GPU")
    args = parser.parse_args()
    peak = cpu_peak(os.cpu_count() or 1)
    print(json.dumps(peak), flush=True)
    results = measure(torch.device("cpu"), args.members, args.steps)
    for row in results:
        row["fraction_of_conv_forward_peak"] = row["achieved_gflops"] / peak[f"conv_forward_{'bf16' if row['bf16'] else 'fp32'}_gflops"]
    if torch.cuda.is_available():
        results += measure(torch.device("cuda"), args.gpu_members, args.steps)
    cpu = f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    out = {
        "date": datetime.date.today().isoformat(),
        "device": cpu + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"),
        "torch": torch.__version__,
        "command": f"python bench/sampling.py --members {args.members} --steps {args.steps} --gpu-members {args.gpu_members}",
        "sampler": {k: v for k, v in dataclasses.asdict(GENCAST_SAMPLER).items() if k in ("sampler", "n_levels", "s_churn")},
        "cpu_peak": peak,
        "results": results,
    }
    Path(__file__).with_name("sampling.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\nmember-steps/s (default-size model, DPM-Solver++(2S), 20 levels, 39 NFE/step)")
    for row in results:
        print(f"{row['device']:>4} {row['variant']:>26} ({row['members']} members): {row['member_steps_per_s']:8.2f} member-steps/s "
              f"({row['speed_up_vs_eager_batched']:.2f}x), {row['achieved_gflops']:6.1f} GFLOP/s")  # fmt: skip

if __name__ == "__main__":
    main()
