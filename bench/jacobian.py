"""Benchmark of the Jacobian spectra (not a test): matrix-free Lanczos against the per-row approach.

The reference implementations of Mohan et al. (2020) and Kadkhodaie et al.
(2024) build the Jacobian one backward pass per output element and then call a
dense eigensolver. ``druids.explain`` instead runs Lanczos on the operator
(``spectra.top_eigenpairs``: one JVP and one VJP per Lanczos vector, JVPs
through ``torch.func.linearize``). Both give the top-32 eigenpairs of the
symmetric part of ``J_hat = G^(1/2) T J T G^(-1/2)`` (the noise space, the
Gaussian grid's area weights). Measured in one run, on the CPU and, when
``torch.cuda.is_available()``, on the GPU:

(a) one field (temperature at 562.5 hPa to itself, 2,048 dims): the per-row
    approach in full (2,048 backward passes, then LAPACK ``eigh`` of the
    2,048 x 2,048 symmetric part, the reference's dense eigensolver) against
    Lanczos; the two top-32 spectra on the noise space are compared (equal
    accuracy: the dense one from the same rows, projected);
(b) the full state (25 channels x 32 x 64 = 51,200 dims): Lanczos in full;
    the per-row approach's backward passes timed on ``--rows`` rows and
    extrapolated to 51,200, and its dense ``eigh`` (a 51,200-square matrix:
    21 GB in float64) extrapolated as ``n^3`` from timed ``eigh`` at 2,048 and
    4,096 dims (the larger fixes the constant). Both extrapolations are
    recorded as such.

The model: the trained ``default`` EDM model if its run is cached (``DRUIDS_CACHE``),
otherwise a freshly initialised default-size model (the cost does not depend on
the weights; the JSON says which), in float32, at sigma = 1, on a validation
state if the data is cached and a random T21 state otherwise. Results go to
``bench/jacobian.json``.

Usage: ``python bench/jacobian.py [--rows 64] [--k 32]``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from druids.config import get_config, objective_config
from druids.explain import spectra
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import FieldBlock, Linearisation
from druids.models import build_denoiser, noise_band
from druids.training.checkpoint import CHECKPOINT, default_run_dir, read_checkpoint

GRID = (32, 64)
N_CHANNELS, N_CONDITION = 25, 29
FIELD_CHANNEL = 8 * 2 + 4  # temperature at the 5th of 8 levels (562.5 hPa) in u, v, T, ps order
SIGMA = 1.0


def load_model(device: torch.device):
    """The trained default EDM model's EMA weights if cached, else a fresh default-size model; and a label."""
    cfg = objective_config(get_config("default"), "edm")
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(GRID[0])[0]))
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model, N_CHANNELS, N_CONDITION, noise_band(latitude, 21))
    checkpoint = default_run_dir(cfg) / CHECKPOINT
    label = "freshly initialised default-size EDM model (no trained run cached)"
    if checkpoint.exists():
        denoiser.load_state_dict(read_checkpoint(checkpoint)["ema"])
        label = f"trained default EDM model ({checkpoint.parent.name}, EMA weights)"
    return denoiser.to(device).eval().requires_grad_(False), latitude, label


def test_point(geometry: NoiseGeometry, device: torch.device):
    """A noisy state y = x + sigma n and a condition: random T21 fields of unit variance (seeded)."""
    generator = torch.Generator().manual_seed(0)
    x = geometry.noise((N_CHANNELS, *GRID), generator, torch.float32)
    c = torch.cat([geometry.noise((N_CHANNELS, *GRID), generator, torch.float32), torch.randn(4, *GRID, generator=generator)])
    y = x + SIGMA * geometry.noise((N_CHANNELS, *GRID), generator, torch.float32)
    return y.to(device), c.to(device)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_row(denoiser, y, c, rows) -> tuple[np.ndarray, float]:
    """Rows of J_y (one backward pass per output element, as the reference code does) and the seconds taken."""
    start = time.perf_counter()
    y = y.clone().requires_grad_(True)
    with torch.enable_grad():
        out = denoiser.denoise(y[None], c[None], SIGMA)[0].reshape(-1)
        gradients = [torch.autograd.grad(out[i], y, retain_graph=True)[0].reshape(-1).cpu() for i in rows]
    synchronise(y.device)
    return torch.stack(gradients).double().numpy(), time.perf_counter() - start


def matrix_free(linearisation, geometry, k: int, device: torch.device) -> tuple[np.ndarray, float, dict]:
    """Top-k eigenvalues by Lanczos (tracing the linearisation included), seconds and operator applications."""
    start = time.perf_counter()
    values = spectra.top_eigenpairs(linearisation, geometry, k, tol=1e-6).values
    synchronise(device)
    return values, time.perf_counter() - start, dict(linearisation.applications)


def dense_eigh_seconds(n: int) -> float:
    """Seconds of LAPACK ``eigh`` (all eigenpairs, float64) on a random symmetric n x n matrix."""
    a = np.random.default_rng(0).standard_normal((n, n))
    start = time.perf_counter()
    np.linalg.eigh(a + a.T)
    return time.perf_counter() - start


def one_field(denoiser, geometry, y, c, k: int) -> dict:
    """(a): the per-row approach in full against Lanczos on one field's block."""
    size = GRID[0] * GRID[1]
    rows, row_seconds = per_row(denoiser, y, c, range(FIELD_CHANNEL * size, (FIELD_CHANNEL + 1) * size))
    print(f"one field: {size} rows in {row_seconds:.1f} s", flush=True)
    block = rows[:, FIELD_CHANNEL * size : (FIELD_CHANNEL + 1) * size]
    start = time.perf_counter()  # the reference's dense eigensolver: all eigenpairs of the 2,048-square matrix
    root = np.sqrt(np.repeat(geometry.weights, GRID[1]))
    symmetric = 0.5 * (root[:, None] * block / root + (root[:, None] * block / root).T)
    np.linalg.eigh(symmetric)
    eigh_seconds = time.perf_counter() - start
    dense_values = spectra.dense_top_eigenvalues(spectra.dense_whitened(block, geometry, (1, *GRID)), k)  # on the noise space
    lanczos = FieldBlock(Linearisation(denoiser, y, c, SIGMA), FIELD_CHANNEL)
    values, seconds, applications = matrix_free(lanczos, geometry, k, y.device)
    return {
        "dims": size,
        "per_row_backward_passes": size,
        "per_row_rows_seconds": row_seconds,
        "per_row_eigh_seconds": eigh_seconds,
        "per_row_total_seconds": row_seconds + eigh_seconds,
        "matrix_free_seconds": seconds,
        "matrix_free_applications": applications,
        "speedup": (row_seconds + eigh_seconds) / seconds,
        "top_eigenvalues_max_relative_difference": float(np.max(np.abs(values - dense_values) / np.abs(dense_values))),
        "top_eigenvalues": values.tolist(),
    }


def full_state(denoiser, geometry, y, c, k: int, n_rows: int) -> dict:
    """(b): Lanczos on the 51,200-dim state in full; the per-row approach sampled and extrapolated."""
    size = N_CHANNELS * GRID[0] * GRID[1]
    sample = np.random.default_rng(1).choice(size, n_rows, replace=False)
    _, row_seconds = per_row(denoiser, y, c, sample)
    eigh_small, eigh_large = dense_eigh_seconds(2048), dense_eigh_seconds(4096)
    eigh_full = eigh_large * (size / 4096) ** 3
    rows_full = row_seconds / n_rows * size
    values, seconds, applications = matrix_free(Linearisation(denoiser, y, c, SIGMA), geometry, k, y.device)
    return {
        "dims": size,
        "per_row_rows_measured": n_rows,
        "per_row_rows_seconds_measured": row_seconds,
        "per_row_rows_seconds_extrapolated": rows_full,
        "per_row_eigh_seconds_measured": {"2048": eigh_small, "4096": eigh_large},
        "per_row_eigh_seconds_extrapolated": eigh_full,
        "per_row_total_seconds_extrapolated": rows_full + eigh_full,
        "matrix_free_seconds": seconds,
        "matrix_free_applications": applications,
        "speedup": (rows_full + eigh_full) / seconds,
        "speedup_rows_only": rows_full / seconds,
        "top_eigenvalues": values.tolist(),
    }


def measure(device: torch.device, k: int, n_rows: int) -> dict:
    denoiser, latitude, label = load_model(device)
    geometry = NoiseGeometry.of_denoiser(denoiser, latitude, GRID[1])
    y, c = test_point(geometry, device)
    result = {"device": device.type, "model": label, "sigma": SIGMA, "k": k}
    result["one_field"] = one_field(denoiser, geometry, y, c, k)
    print(json.dumps(result["one_field"]), flush=True)
    result["full_state"] = full_state(denoiser, geometry, y, c, k, n_rows)
    print(json.dumps(result["full_state"]), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows of the per-row approach timed on the full state")
    parser.add_argument("--k", type=int, default=32, help="eigenpairs")
    args = parser.parse_args()
    results = [measure(torch.device("cpu"), args.k, args.rows)]
    if torch.cuda.is_available():
        results.append(measure(torch.device("cuda"), args.k, args.rows))
    cpu = f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    out = {
        "date": datetime.date.today().isoformat(),
        "device": cpu + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"),
        "torch": torch.__version__,
        "command": f"python bench/jacobian.py --rows {args.rows} --k {args.k}",
        "results": results,
    }
    Path(__file__).with_name("jacobian.json").write_text(json.dumps(out, indent=2) + "\n")
    for row in results:
        a, b = row["one_field"], row["full_state"]
        print(
            f"{row['device']}: one field {a['per_row_total_seconds']:.1f} s per-row vs {a['matrix_free_seconds']:.1f} s "
            f"matrix-free ({a['speedup']:.1f}x, top-{row['k']} max rel. diff {a['top_eigenvalues_max_relative_difference']:.1e}); "
            f"full state {b['per_row_total_seconds_extrapolated']:.0f} s (extrapolated) vs {b['matrix_free_seconds']:.1f} s "
            f"({b['speedup']:.0f}x; rows only {b['speedup_rows_only']:.0f}x)"
        )


if __name__ == "__main__":
    main()
