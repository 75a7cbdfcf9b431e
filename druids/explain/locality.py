"""Locality of the adaptive filter: how far a denoiser looks to make one output value.

A row of ``J_y`` is the filter that makes output value ``i`` from the noisy
input: ``D_i = sum_j J_ij y_j`` (plus the condition's part); here its part on
the noise space, a row of ``J_y T`` (:func:`jacobian_rows`). Kadkhodaie et al.
(2023, ICLR, "Learning multi-scale local conditional probability models of
images") show that denoisers' rows are local and shrink as the noise falls;
here the rows live on the sphere. As a filter kernel per unit area the row
is ``k_j = J_ij / g_j`` (``g``: the area weight of grid point ``j``), whose
energy ``int k^2 dA`` gets ``sum_channels J_ij^2 / g_j`` from point ``j``;
:func:`radius_km` is the great-circle radius around point ``i`` holding a
given share (90 %) of that energy. The T21 band limit alone spreads a point
over about 1,000 km (the identity's rows, ``T``'s, hold 90 % within
:func:`band_limit_radius_km`), which is the floor of these radii. Rows come from one batched VJP
(:meth:`druids.explain.operators.Linearisation.vjp`).
"""

from __future__ import annotations

import numpy as np
import torch

from druids.explain.basis import EARTH_RADIUS_KM
from druids.explain.geometry import NoiseGeometry


def great_circle_km(lat0: float, lon0: float, latitude, longitude) -> np.ndarray:
    """Great-circle distance (km) from ``(lat0, lon0)`` to every grid point: ``(H, W)``; degrees in."""
    lat = np.deg2rad(np.asarray(latitude))[:, None]
    lon = np.deg2rad(np.asarray(longitude))[None, :]
    phi0, lam0 = np.deg2rad(lat0), np.deg2rad(lon0)
    cosine = np.sin(phi0) * np.sin(lat) + np.cos(phi0) * np.cos(lat) * np.cos(lon - lam0)
    return EARTH_RADIUS_KM * np.arccos(np.clip(cosine, -1.0, 1.0))


def nearest_rows(latitude, targets) -> list[int]:
    """Indices of the grid latitudes nearest to each of ``targets`` (degrees)."""
    latitude = np.asarray(latitude)
    return [int(np.argmin(np.abs(latitude - t))) for t in targets]


def jacobian_rows(linearisation, geometry: NoiseGeometry, channel: int, points: list[tuple[int, int]]) -> np.ndarray:
    """Rows of ``J_y T`` for output ``channel`` at grid points ``(row, column)``: ``(P, C, H, W)`` (one batched VJP).

    ``T`` restricts the input to the noise space, where the denoiser's noisy
    input lives: a grid-point impulse is not a state the denoiser ever sees,
    and on it the EDM skip connection ``c_skip y`` alone would make every row
    a delta. The row is ``T^T J^T e_i`` with ``T^T = G T G^-1``.
    """
    cotangents = torch.zeros((len(points), *linearisation.shape), dtype=linearisation.y.dtype)
    for p, (i, j) in enumerate(points):
        cotangents[p, channel, i, j] = 1.0
    pulled = linearisation.vjp(cotangents).cpu().double()
    weight = geometry.weight(pulled)
    return (weight * geometry.project(pulled / weight)).numpy()


def kernel(row: np.ndarray, weights) -> np.ndarray:
    """The row ``(C, H, W)`` as a filter kernel per unit area, ``J_ij / g_j`` (same shape)."""
    return row / np.asarray(weights)[:, None]


def energy_contributions(row: np.ndarray, weights) -> np.ndarray:
    """Each grid point's share of the kernel's energy ``int k^2 dA``: ``sum_channels J_ij^2 / g_j``, ``(H, W)``."""
    return (row**2).sum(axis=0) / np.asarray(weights)[:, None]


def radius_km(row: np.ndarray, point: tuple[int, int], latitude, longitude, weights, share: float = 0.9) -> float:
    """Great-circle radius (km) around ``point`` (row, column) holding ``share`` of the row's kernel energy."""
    distance = great_circle_km(latitude[point[0]], longitude[point[1]], latitude, longitude).ravel()
    energy = energy_contributions(row, weights).ravel()
    order = np.argsort(distance)
    cumulative = np.cumsum(energy[order]) / energy.sum()
    return float(distance[order][np.searchsorted(cumulative, share)])


def row_sum(row: np.ndarray, channel: int) -> float:
    """``sum_j J_ij`` over the output's own channel: the response to a uniform unit increment of that field."""
    return float(row[channel].sum())


def band_limit_radius_km(geometry: NoiseGeometry, point: tuple[int, int], longitude, share: float = 0.9) -> float:
    """The 90 % radius of a row of ``T`` itself (the identity on the noise space) at ``point``: the radii's floor."""
    impulse = torch.zeros((1, 1, geometry.latitude.size, geometry.n_lon), dtype=torch.float64)
    impulse[0, 0, point[0], point[1]] = 1.0
    weight = geometry.weight(impulse)
    row = (weight * geometry.project(impulse / weight)).numpy()[0]  # T^T e_i = G T G^-1 e_i
    return radius_km(row, point, geometry.latitude, longitude, geometry.weights, share)
