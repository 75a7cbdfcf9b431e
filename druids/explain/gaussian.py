"""The exact case: Gaussian random fields on the sphere and their optimal denoiser, the Wiener filter.

Every operator here is isotropic (or at least zonally invariant), so it acts
on each zonal wavenumber ``m`` of a field's Fourier transform in longitude by
one real ``H x H`` matrix, its *symbol* ``Q_m``: ``(Q y)^_m = Q_m y^_m``
(``^`` = ``rfft`` along longitude; symbols ``(W // 2 + 1, H, H)``). Products,
pseudo-inverses and square roots act symbol by symbol, and the eigenvalues of
``Q`` are those of its symbols, each counted once for ``m = 0`` (and the
Nyquist wavenumber) and twice otherwise (cosine and sine).

* :class:`GaussianField`: an isotropic field band-limited to total wavenumber
  ``L``, with variance ``a_n`` per spherical-harmonic coefficient of total
  wavenumber ``n``, in units of :func:`druids.sphere.sphere_noise`'s at the
  same band (``a_n = 1``: that noise, unit variance per grid point). Symbol
  ``C_m = k B_m diag(a_{m..L}) B_m^T``, ``k = 2 W / (L + 1)^2``, ``B_m`` from
  :func:`druids.sphere.harmonic_basis`.
* :func:`noise_symbols`: the diffusion noise covariance ``S``: ``I`` for
  grid-white noise, ``k B_m B_m^T`` for band-limited noise at band ``M``
  (the derivation is in :mod:`druids.explain.geometry`).
* :class:`WienerDenoiser`: ``D(y) = E[x | y] = C (C + sigma^2 S)^+ y`` for
  ``y = x + sigma n``, ``n ~ N(0, S)``, each channel an independent draw of
  the field. Linear, so ``J = C (C + sigma^2 S)^+`` and, by Tweedie,
  ``sigma^2 J S = Cov[x | y]`` exactly. With band-limited noise at the
  field's own band its eigenvalues are ``a_n / (a_n + sigma^2)``, each of
  multiplicity ``2n + 1``, with the spherical harmonics as eigenvectors
  (:meth:`WienerDenoiser.eigenvalues`); with grid-white noise they are
  ``mu / (mu + sigma^2)`` for the eigenvalues ``mu`` of ``C``'s symbols.

These are the exact answers the Jacobian tools are tested against
(Kadkhodaie et al. 2024 use the same Gaussian case to show that a denoiser's
Jacobian eigenvectors are the covariance's eigenvectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from druids import sphere


def _multiplicities(n_lon: int) -> np.ndarray:
    """How often each zonal wavenumber's symbol eigenvalues count: 1 for ``m = 0`` and the Nyquist, else 2."""
    counts = np.full(n_lon // 2 + 1, 2)
    counts[0] = 1
    if n_lon % 2 == 0:
        counts[-1] = 1
    return counts


def harmonic_symbols(latitude, n_lon: int, coefficients: np.ndarray) -> np.ndarray:
    """Symbols ``k B_m diag(coefficients[m..L]) B_m^T`` of the isotropic operator with ``coefficients`` (L + 1,) per total wavenumber."""
    truncation = len(coefficients) - 1
    basis, _ = sphere.harmonic_basis(latitude, truncation)
    symbols = np.zeros((n_lon // 2 + 1, len(latitude), len(latitude)))
    scale = 2.0 * n_lon / (truncation + 1) ** 2
    for m in range(truncation + 1):
        b = basis[m][:, : truncation + 1 - m]
        symbols[m] = scale * (b * coefficients[m:]) @ b.T
    return symbols


def noise_symbols(band: sphere.NoiseBand, latitude, n_lon: int) -> np.ndarray:
    """Symbols of the noise covariance ``S``: identity (``band`` None) or band-limited white noise on the sphere."""
    if band is None:
        return np.broadcast_to(np.eye(len(latitude)), (n_lon // 2 + 1, len(latitude), len(latitude))).copy()
    return harmonic_symbols(latitude, n_lon, np.ones(int(band[1]) + 1))


def apply_symbols(symbols, x: torch.Tensor) -> torch.Tensor:
    """``Q x`` for symbols ``(n_m, H, H)`` (one operator) or ``(B, n_m, H, H)`` (one per sample of ``x`` (B, ..., H, W))."""
    fourier = torch.fft.rfft(x, dim=-1)
    matrices = torch.as_tensor(symbols, device=x.device).to(fourier.dtype)
    if matrices.ndim == 3:
        out = torch.einsum("mhk,...km->...hm", matrices, fourier)
    else:
        out = torch.einsum("bmhk,b...km->b...hm", matrices, fourier)
    return torch.fft.irfft(out, n=x.shape[-1], dim=-1)


def _symbol_power(symbols: np.ndarray, power: float) -> np.ndarray:
    """``Q_m^power`` of symmetric positive semi-definite symbols (eigenvalues below 1e-12 of the largest set to 0)."""
    values, vectors = np.linalg.eigh(symbols)
    floor = 1e-12 * max(values.max(), 1e-300)
    scaled = np.where(values > floor, np.abs(values) ** power, 0.0)
    return np.einsum("mhi,mi,mki->mhk", vectors, scaled, vectors)


@dataclass(frozen=True, eq=False)
class GaussianField:
    """An isotropic Gaussian random field on a Gaussian grid (``latitude`` (H,) degrees, ``n_lon`` longitudes).

    ``spectrum`` (L + 1,): variance ``a_n`` of each spherical-harmonic
    coefficient of total wavenumber ``n`` in units of band-``L`` white noise
    (see the module docstring).
    """

    latitude: np.ndarray
    n_lon: int
    spectrum: np.ndarray

    @classmethod
    def power_law(cls, latitude, n_lon: int, truncation: int, slope: float = 2.0, scale: float = 4.0, amplitude: float = 1.0):
        """``a_n = amplitude (1 + n / scale)^(-slope)``: large scales strong, like a weather field."""
        n = np.arange(truncation + 1)
        return cls(np.asarray(latitude, dtype=np.float64), n_lon, amplitude * (1.0 + n / scale) ** (-slope))

    @property
    def truncation(self) -> int:
        return len(self.spectrum) - 1

    def covariance_symbols(self) -> np.ndarray:
        """The symbols ``C_m`` of the field's covariance, ``(n_lon // 2 + 1, H, H)``."""
        return harmonic_symbols(self.latitude, self.n_lon, np.asarray(self.spectrum, dtype=np.float64))

    def sample(self, shape, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        """Independent draws ``(*shape, H, W)``: ``C^(1/2) z`` for grid-white ``z``."""
        z = torch.randn((*shape, len(self.latitude), self.n_lon), generator=generator, dtype=torch.float64)
        return apply_symbols(_symbol_power(self.covariance_symbols(), 0.5), z).to(dtype)


class WienerDenoiser:
    """The optimal denoiser ``E[x | x + sigma n]`` of a :class:`GaussianField`, as a denoiser the tools can use.

    ``band``: the noise (:data:`druids.sphere.NoiseBand`; None: white on the
    grid). ``denoise(y, c, sigma)`` takes ``y`` (B, C, H, W) (each channel an
    independent field), ignores ``c`` and accepts ``sigma`` as a scalar or (B,).
    """

    def __init__(self, field: GaussianField, band: sphere.NoiseBand = None):
        self.field = field
        self.noise_band = band
        self._prior = field.covariance_symbols()
        self._noise = noise_symbols(band, field.latitude, field.n_lon)
        self._cache: dict[float, np.ndarray] = {}

    def jacobian_symbols(self, sigma: float) -> np.ndarray:
        """Symbols of ``J = C (C + sigma^2 S)^+``, ``(n_m, H, H)``."""
        key = float(sigma)
        if key not in self._cache:
            self._cache[key] = self._prior @ np.linalg.pinv(self._prior + key**2 * self._noise, rcond=1e-12, hermitian=True)
        return self._cache[key]

    def denoise(self, y: torch.Tensor, c, sigma) -> torch.Tensor:
        values = sigma.detach().cpu().numpy() if torch.is_tensor(sigma) else sigma
        sigmas = np.broadcast_to(np.asarray(values, dtype=np.float64), (y.shape[0],))
        symbols = np.stack([self.jacobian_symbols(s) for s in sigmas])
        return apply_symbols(symbols, y)

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return sphere.noise(x.shape, generator, self.noise_band, x.dtype, x.device)

    def eigenvalues(self, sigma: float) -> np.ndarray:
        """All eigenvalues of ``J`` on one field, descending, with multiplicity; zeros outside the field's band dropped.

        Closed form ``a_n / (a_n + sigma^2)`` (multiplicity ``2n + 1``) for
        band-limited noise at the field's band; otherwise the eigenvalues of
        the symbols (grid-white noise: ``mu / (mu + sigma^2)``, ``mu`` those of ``C_m``).
        """
        a = np.asarray(self.field.spectrum, dtype=np.float64)
        if self.noise_band is not None and int(self.noise_band[1]) == self.field.truncation:
            n = np.arange(len(a))
            return np.sort(np.repeat(a / (a + sigma**2), 2 * n + 1))[::-1]
        values = np.linalg.eigvals(self.jacobian_symbols(sigma)).real
        counted = np.repeat(values.ravel(), np.repeat(_multiplicities(self.field.n_lon), values.shape[1]))
        return np.sort(counted[counted > 1e-12])[::-1]

    def trace(self, sigma: float) -> float:
        """``tr J`` on one field, exactly (the sum of all eigenvalues)."""
        per_m = np.trace(self.jacobian_symbols(sigma), axis1=1, axis2=2)
        return float((_multiplicities(self.field.n_lon) * per_m).sum())

    def trace_gjs(self, sigma: float, weights: np.ndarray) -> float:
        """``tr(G J S)`` on one field for latitude weights ``weights`` (H,): ``tr(G Cov[x | y]) / sigma^2``, exactly."""
        products = weights[None, :, None] * (self.jacobian_symbols(sigma) @ self._noise)
        return float((_multiplicities(self.field.n_lon) * np.trace(products, axis1=1, axis2=2)).sum())

    def eigenpairs(self, sigma: float, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` largest eigenvalues of ``T J T`` on one field and ``G``-orthonormal eigenvector fields ``(k, H, W)``.

        ``weights`` (H,): the inner product ``G`` in which ``T J T`` is
        symmetric (:class:`~druids.explain.geometry.NoiseGeometry`). Computed
        symbol by symbol (``cos(m lon)`` and ``sin(m lon)`` fields for ``m > 0``);
        a degenerate eigenvalue's vectors are one basis of its eigenspace.
        """
        root = np.sqrt(weights)
        projector = _projector_symbols(self.noise_band, self.field.latitude, self.field.n_lon)
        operator = projector @ self.jacobian_symbols(sigma) @ projector
        longitude = 2 * np.pi * np.arange(self.field.n_lon) / self.field.n_lon
        values, fields = [], []
        for m, symbol in enumerate(operator):
            m_values, vectors = np.linalg.eigh(0.5 * (root[:, None] * symbol / root + (root[:, None] * symbol / root).T))
            shapes = [np.ones_like(longitude)] if m == 0 or 2 * m == self.field.n_lon else [np.cos(m * longitude), np.sin(m * longitude)]
            for value, vector in zip(m_values, vectors.T):
                for shape in shapes:
                    field = (vector / root)[:, None] * shape[None, :]
                    values.append(value)
                    fields.append(field / np.sqrt((weights[:, None] * field**2).sum()))
        order = np.argsort(values)[::-1][:k]
        return np.asarray(values)[order], np.asarray(fields)[order]


def _projector_symbols(band: sphere.NoiseBand, latitude, n_lon: int) -> np.ndarray:
    """Symbols of ``T``, the quadrature-orthogonal projector onto the noise space (identity for white noise)."""
    if band is None:
        return noise_symbols(None, latitude, n_lon)
    basis, weights = sphere.harmonic_basis(latitude, int(band[1]))
    symbols = np.zeros((n_lon // 2 + 1, len(latitude), len(latitude)))
    symbols[: basis.shape[0]] = np.einsum("mik,mjk->mij", basis, basis) * weights[None, None, :]
    return symbols
