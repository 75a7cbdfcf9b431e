"""The adaptive basis: what the leading eigenvectors of a denoiser's Jacobian look like.

Kadkhodaie, Guth, Simoncelli & Mallat (2024, ICLR, "Generalization in
diffusion models arises from geometry-adaptive harmonic representations")
read the eigenvectors of a bias-free denoiser's Jacobian as an adaptive basis:
oscillating like harmonics, but concentrated where the image has structure
(contours). On the sphere the questions are: how much of the top-k subspace
lies in the k lowest spherical harmonics, and does its energy sit where the
weather has structure — temperature fronts (``|grad T|``) and the jet.

Eigenvectors are fields ``(k, C, H, W)``, ``G``-orthonormal
(:func:`druids.explain.spectra.top_eigenpairs`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from druids import sphere
from druids.explain.geometry import NoiseGeometry

EARTH_RADIUS_KM = 6371.0


def energy_maps(vectors: np.ndarray) -> np.ndarray:
    """Where each eigenvector lives: ``sum_channels v^2``, ``(k, C, H, W) -> (k, H, W)``, each of mean 1 over the grid."""
    energy = (np.asarray(vectors) ** 2).sum(axis=1)
    return energy / energy.mean(axis=(1, 2), keepdims=True)


def power_spectrum(fields: np.ndarray, geometry: NoiseGeometry) -> np.ndarray:
    """Power per wavenumber summed over channels, ``(..., C, H, W) -> (..., n)``.

    Total wavenumber ``n <= M`` (:func:`druids.sphere.power_by_total_wavenumber`)
    for band-limited noise on a Gaussian grid; zonal wavenumber (area-weighted
    mean over latitudes) for grid-white noise, whose grids need not be Gaussian.
    """
    fields = np.asarray(fields, dtype=np.float64)
    if geometry.truncation is not None:
        return sphere.power_by_total_wavenumber(fields, geometry.latitude, geometry.truncation).sum(axis=-2)
    weights = geometry.weights[:, None] / geometry.weights.sum()
    return (weights * np.abs(np.fft.rfft(fields, axis=-1)) ** 2).sum(axis=(-3, -2))


def low_harmonic_degree(k: int) -> int:
    """``N_k``: the smallest total wavenumber with ``(N_k + 1)^2 >= k``, so that the harmonics ``n <= N_k`` of one
    field are its ``k`` "top" (smoothest) harmonics, rounded up to whole wavenumbers."""
    return int(np.ceil(np.sqrt(k))) - 1


def low_harmonic_share(spectra: np.ndarray) -> float:
    """Share of the top-k subspace's power at total wavenumbers ``n <= N_k`` (:func:`low_harmonic_degree`).

    ``spectra`` ``(k, n)`` from :func:`power_spectrum`. 1 when the subspace is
    spanned by the smoothest harmonics (the Gaussian, stationary case of a
    field whose spectrum falls with ``n``), smaller when the basis adapts to
    smaller-scale structure.
    """
    degree = low_harmonic_degree(spectra.shape[0])
    return float(spectra[:, : degree + 1].sum() / spectra.sum())


def gradient_magnitude(field: np.ndarray, latitude, longitude) -> np.ndarray:
    """``|grad f|`` on the sphere (units of ``f`` per 1000 km), centred differences: ``(H, W) -> (H, W)``.

    Longitude periodic; latitude one-sided at the rows next to the poles.
    """
    lat, lon = np.deg2rad(np.asarray(latitude)), np.deg2rad(np.asarray(longitude))
    d_lon = (np.roll(field, -1, axis=1) - np.roll(field, 1, axis=1)) / (2 * (lon[1] - lon[0]))
    d_lat = np.gradient(field, lat, axis=0)
    radius = EARTH_RADIUS_KM / 1000.0
    return np.hypot(d_lon / (radius * np.cos(lat)[:, None]), d_lat / radius)


def weighted_correlation(a: np.ndarray, b: np.ndarray, weights: np.ndarray) -> float:
    """Area-weighted Pearson correlation of two maps ``(H, W)``; ``weights`` (H,) per latitude."""
    w = np.broadcast_to(np.asarray(weights)[:, None], a.shape)
    a_anomaly = a - np.average(a, weights=w)
    b_anomaly = b - np.average(b, weights=w)
    covariance = np.average(a_anomaly * b_anomaly, weights=w)
    return float(covariance / np.sqrt(np.average(a_anomaly**2, weights=w) * np.average(b_anomaly**2, weights=w)))


def feature_correlations(maps: np.ndarray, features: dict[str, np.ndarray], weights) -> pd.DataFrame:
    """Correlation of each eigenvector's energy map ``(k, H, W)`` with each feature map: rows ``eigenvector``, columns features."""
    table = {name: [weighted_correlation(m, feature, weights) for m in maps] for name, feature in features.items()}
    return pd.DataFrame(table, index=pd.RangeIndex(len(maps), name="eigenvector"))
