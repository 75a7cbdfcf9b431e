"""Spectra of a denoiser's Jacobian: matrix-free top eigenpairs and singular triplets, asymmetry, dense blocks.

All in the noise geometry of :mod:`druids.explain.geometry` and through the
whitened operator ``J_hat`` (``G^(1/2) T J T G^(-1/2)`` in ``G``-orthonormal
coordinates of the noise space) of :func:`druids.explain.operators.whitened_operator`
(``T``: projector onto the noise space, ``G``: the inner product), so that
eigenvalues and singular values are those of ``J`` on the space the noise
spans, and eigenvectors come back as ``G``-orthonormal fields.

* :func:`top_eigenpairs`: the ``k`` largest eigenvalues of the symmetric part
  ``(J_hat + J_hat^T) / 2`` by implicitly restarted Lanczos (ARPACK through
  ``scipy.sparse.linalg.eigsh``); one JVP and one VJP per Lanczos vector.
  Single-vector Lanczos can miss copies of an exactly degenerate eigenvalue
  (isotropic operators have ``2n + 1`` per total wavenumber), so it computes
  ``k + buffer`` Ritz pairs and keeps the top ``k``; with the default buffer
  the Wiener filter's multiplets are all found (tested).
* :func:`top_singular_triplets`: the ``k`` largest singular values of
  ``J_hat`` (``scipy.sparse.linalg.svds``, Lanczos bidiagonalisation).
* :func:`spectral_density`: the whole eigenvalue distribution on the noise
  space by stochastic Lanczos quadrature (e.g. the share outside [0, 1]).
* :func:`asymmetry`: ``||J_hat - J_hat^T||_F / ||J_hat||_F`` from random
  probes (Hutchinson-type Frobenius estimates), with its standard error.
* :func:`dense_jacobian`: the dense Jacobian of one field (2,048 dims on the
  32 x 64 grid) from blocks of VJPs, and :func:`dense_whitened` for its
  ``J_hat``, to check the matrix-free results against a dense eigensolver.

Operator applications are counted by the linearisation
(``linearisation.applications``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.sparse.linalg import eigsh, svds

from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import symmetric_part, whitened_operator


@dataclass(frozen=True)
class EigenPairs:
    """``values`` (k,) descending; ``vectors`` (k, *field shape): ``G``-orthonormal fields in the noise space."""

    values: np.ndarray
    vectors: np.ndarray


@dataclass(frozen=True)
class SingularTriplets:
    """``values`` (k,) descending; ``left``/``right`` (k, *field shape): ``G``-orthonormal fields with ``J right = s left``."""

    values: np.ndarray
    left: np.ndarray
    right: np.ndarray


def _fields(columns: np.ndarray, shape, geometry: NoiseGeometry) -> np.ndarray:
    """Coordinate columns (r, k) as fields ``(k, *shape)``."""
    return geometry.from_coefficients(torch.from_numpy(np.ascontiguousarray(columns.T)), shape[0]).numpy()


def _start_vector(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(size)


def top_eigenpairs(
    linearisation, geometry: NoiseGeometry, k: int, tol: float = 1e-8, seed: int = 0, buffer: int | None = None
) -> EigenPairs:
    """The ``k`` largest eigenpairs of the ``G``-symmetric part of ``T J T`` (Lanczos, ``eigsh(which="LA")``).

    ``tol``: ARPACK's relative accuracy of the Ritz values; ``seed`` fixes the
    start vector; ``buffer``: extra Ritz pairs computed and dropped (default
    ``max(4, k // 3)``; see the module docstring). ``linearisation``: a
    :class:`~druids.explain.operators.Linearisation` or :class:`~druids.explain.operators.FieldBlock`.
    """
    operator = symmetric_part(whitened_operator(linearisation.prepare_repeated(), geometry))
    size = operator.shape[0]
    n_pairs = min(k + (max(4, k // 3) if buffer is None else buffer), size - 1)
    values, columns = eigsh(operator, k=n_pairs, which="LA", tol=tol, v0=_start_vector(size, seed))
    order = np.argsort(values)[::-1][:k]
    return EigenPairs(values[order], _fields(columns[:, order], linearisation.shape, geometry))


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the symmetric part on the noise space: per probe, Gauss ``nodes`` (Ritz
    values) and ``weights`` (summing to 1), both ``(probes, steps)``. The spectral measure puts ``1 / dim R`` on each eigenvalue."""

    nodes: np.ndarray
    weights: np.ndarray

    def share(self, inside) -> tuple[float, float]:
        """Share of eigenvalues where ``inside(nodes)`` is true, and its standard error over probes."""
        per_probe = (self.weights * inside(self.nodes)).sum(axis=1)
        return float(per_probe.mean()), float(per_probe.std(ddof=1) / np.sqrt(len(per_probe))) if len(per_probe) > 1 else float("nan")

    def share_outside_unit_interval(self, tolerance: float = 1e-6) -> tuple[float, float]:
        """Share of eigenvalues below ``-tolerance`` or above ``1 + tolerance``, and its standard error."""
        return self.share(lambda x: (x < -tolerance) | (x > 1 + tolerance))


def spectral_density(linearisation, geometry: NoiseGeometry, n_probes: int, steps: int, generator: torch.Generator) -> SpectralDensity:
    """The eigenvalue distribution of the ``G``-symmetric part of ``T J T`` on the noise space, by stochastic Lanczos
    quadrature (Ubaru, Chen & Saad 2017, SIAM J. Matrix Anal. Appl.): ``steps`` Lanczos steps (full
    reorthogonalisation) from each of ``n_probes`` random unit vectors of the noise space, run as one block, so
    that every step is one batched JVP and VJP. Shares of the spectrum come out to the resolution of
    ``steps``-point Gauss quadrature, with a standard error over probes.
    """
    operator = symmetric_part(whitened_operator(linearisation.prepare_repeated(), geometry))
    probes = torch.randn((operator.shape[0], n_probes), generator=generator, dtype=torch.float64).numpy()
    basis = [probes / np.linalg.norm(probes, axis=0)]
    alphas, betas = [], []
    for step in range(steps):
        w = operator.matmat(basis[-1])
        alphas.append((w * basis[-1]).sum(axis=0))
        stacked = np.stack(basis)  # (j, n, P): full reorthogonalisation, column by column
        w = w - np.einsum("jnp,jp->np", stacked, np.einsum("jnp,np->jp", stacked, w))
        if step < steps - 1:
            betas.append(np.linalg.norm(w, axis=0))
            basis.append(w / betas[-1])
    nodes, weights = [], []
    for p in range(n_probes):
        tridiagonal = np.diag([a[p] for a in alphas]) + np.diag([b[p] for b in betas], 1) + np.diag([b[p] for b in betas], -1)
        theta, vectors = np.linalg.eigh(tridiagonal)
        nodes.append(theta)
        weights.append(vectors[0] ** 2)
    return SpectralDensity(np.asarray(nodes), np.asarray(weights))


def top_singular_triplets(linearisation, geometry: NoiseGeometry, k: int, tol: float = 1e-8, seed: int = 0) -> SingularTriplets:
    """The ``k`` largest singular triplets of ``T J T`` between ``G``-orthonormal fields (``svds``)."""
    operator = whitened_operator(linearisation.prepare_repeated(), geometry)
    left, values, right_t = svds(operator, k=k, tol=tol, v0=_start_vector(operator.shape[0], seed), solver="arpack")
    order = np.argsort(values)[::-1]
    shape = linearisation.shape
    return SingularTriplets(values[order], _fields(left[:, order], shape, geometry), _fields(right_t[order].T, shape, geometry))


def asymmetry(linearisation, geometry: NoiseGeometry, n_probes: int, generator: torch.Generator) -> tuple[float, float]:
    """``||J_hat - J_hat^T||_F / ||J_hat||_F`` and its standard error, from ``n_probes`` Gaussian probes.

    ``E ||A z||^2 = ||A||_F^2`` for ``z ~ N(0, I)``; numerator and denominator
    use the same probes (one JVP and one VJP each), and the standard error of
    the ratio comes from the delta method. 0 for a ``G``-symmetric ``J``.
    """
    operator = whitened_operator(linearisation, geometry)
    probes = torch.randn((operator.shape[0], n_probes), generator=generator, dtype=torch.float64).numpy()
    forward, adjoint = operator.matmat(probes), operator.rmatmat(probes)
    difference = ((forward - adjoint) ** 2).sum(axis=0)
    norm = (forward**2).sum(axis=0)
    ratio = difference.mean() / norm.mean()
    # delta method for mean(a) / mean(b)
    covariance = np.cov(np.stack([difference, norm])) / n_probes
    gradient = np.array([1 / norm.mean(), -difference.mean() / norm.mean() ** 2])
    variance = float(gradient @ covariance @ gradient)
    return float(np.sqrt(ratio)), float(np.sqrt(max(variance, 0.0)) / (2 * np.sqrt(ratio)) if ratio > 0 else 0.0)


def dense_jacobian(linearisation, chunk: int = 256) -> np.ndarray:
    """The dense Jacobian ``(n, n)`` of ``linearisation`` (``n`` = its field size), row blocks by batched VJPs.

    Meant for one field (:class:`~druids.explain.operators.FieldBlock`, 2,048
    dims): the whole 51,200-dim state would need 21 GB in float64.
    """
    shape = linearisation.shape
    size = int(np.prod(shape))
    rows = []
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        basis = torch.zeros((stop - start, size), dtype=torch.float64)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        rows.append(linearisation.vjp(basis.reshape(-1, *shape)).reshape(stop - start, size).cpu().double().numpy())
    return np.concatenate(rows)


def dense_whitened(jacobian: np.ndarray, geometry: NoiseGeometry, shape) -> np.ndarray:
    """``J_hat`` (``r x r``, in the coordinates of :func:`~druids.explain.operators.whitened_operator`) of a dense
    Jacobian ``(n, n)`` of fields of ``shape``: ``Phi^T G J Phi``."""
    size = geometry.noise_dims(shape[0])
    basis = geometry.from_coefficients(torch.eye(size, dtype=torch.float64), shape[0]).reshape(size, -1).numpy()
    images = torch.from_numpy(np.ascontiguousarray((jacobian @ basis.T).T)).reshape(size, *shape)
    return geometry.to_coefficients(images).numpy().T


def dense_top_eigenvalues(whitened: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest eigenvalues of the symmetric part of a dense ``J_hat``, descending (LAPACK ``eigh``)."""
    n = whitened.shape[0]
    values = scipy.linalg.eigh(0.5 * (whitened + whitened.T), eigvals_only=True, subset_by_index=[n - k, n - 1])
    return values[::-1]
