"""The inner product and the noise covariance in which a denoiser's Jacobian is read.

The diffusion noise of a denoiser (``denoiser.noise_band``,
:func:`druids.sphere.noise`) is ``y = x + sigma n`` with ``n ~ N(0, S)``:

* white on the grid (``band`` None): ``S = I``;
* white on the sphere up to total wavenumber ``M`` (``band = (latitude, M)``,
  :func:`druids.sphere.sphere_noise`): independent unit coefficients for every
  spherical harmonic ``n <= M`` of every channel, scaled to unit variance per
  grid point. Written on the grid, per channel,
  ``S(h, j; h', j') = (2 / (M + 1)^2) [P_0(h, h') + 2 sum_{m=1..M} P_m(h, h') cos(m (lon_j - lon_j'))]``
  with ``P_m = B_m B_m^T`` the Legendre bases of :func:`druids.sphere.harmonic_basis`.
  The truncation ``T`` (:func:`druids.sphere.truncate`) is the orthogonal
  projector onto the noise's span ``R`` in the Gaussian-quadrature inner
  product ``G`` (weights per latitude, here normalised to mean 1), and the two
  are tied exactly by ``S = c T G^-1`` with ``c = H W / (M + 1)^2``: on ``R``
  the noise is white in ``G`` with variance ``c`` per unit direction (``diag S
  = 1``, ``tr(G S) = d``, the number of grid values, ``rank S = C (M + 1)^2``).

The inner product. Tweedie's second moment (Efron 2011) makes ``sigma^2 J S =
Cov[x | y]`` for the minimum-MSE denoiser, so ``J`` is self-adjoint in the
noise's precision ``<a, b> = a^T S^+ b`` on ``R``. For band-limited sphere noise
that is, up to the constant ``c``, the area-weighted inner product with the
Gaussian grid's own area weights (the quadrature weights ``G``; the
``cos(latitude)`` of :func:`druids.sphere.area_weights` approximates them to
< 1 %, which would show an exactly symmetric optimal denoiser as about 1e-3
asymmetric); for grid-white noise it is the Euclidean product (``G = I``).
:class:`NoiseGeometry` holds ``G`` (``weights``), ``T`` (:meth:`project`) and
``c`` (:attr:`variance_per_direction`).

Coordinates. Eigensolvers work in ``G``-orthonormal coordinates of ``R``
(:meth:`NoiseGeometry.to_coefficients`, :meth:`NoiseGeometry.from_coefficients`):
for band-limited noise the real spherical harmonics ``n <= M`` of each channel
(``(M + 1)^2`` per field, a quarter of the 32 x 64 grid's values at T21), for
grid-white noise the grid values times ``G^(1/2)``. In them ``G`` is the
Euclidean product and ``T`` the identity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from druids import sphere


@dataclass(frozen=True, eq=False)
class NoiseGeometry:
    """The noise space ``R``, its covariance ``S = c T G^-1`` and the inner product ``G`` (see the module docstring).

    ``latitude`` (H,) degrees; ``n_lon`` longitudes; ``truncation`` ``M`` of the
    band-limited noise, or None for noise white on the grid; ``weights`` (H,)
    float64, mean 1: the inner product ``<a, b> = sum_i w_i a_i b_i`` over
    channel, latitude and longitude (quadrature weights for a band, ones for white noise).
    """

    latitude: np.ndarray
    n_lon: int
    truncation: int | None
    weights: np.ndarray

    @classmethod
    def of(cls, band: sphere.NoiseBand, latitude, n_lon: int) -> NoiseGeometry:
        """The geometry of noise ``band`` (:data:`druids.sphere.NoiseBand`) on a grid of ``latitude`` x ``n_lon``."""
        latitude = np.asarray(latitude, dtype=np.float64)
        if band is None:
            return cls(latitude, int(n_lon), None, np.ones(latitude.size))
        _, weights = sphere.harmonic_basis(latitude, int(band[1]))
        return cls(latitude, int(n_lon), int(band[1]), weights / weights.mean())

    @classmethod
    def of_denoiser(cls, denoiser, latitude, n_lon: int) -> NoiseGeometry:
        """The geometry of ``denoiser.noise_band`` (anything with that attribute) on the grid."""
        return cls.of(denoiser.noise_band, latitude, n_lon)

    @property
    def band(self) -> sphere.NoiseBand:
        return None if self.truncation is None else (self.latitude, self.truncation)

    @property
    def variance_per_direction(self) -> float:
        """``c``: the noise's variance along any ``G``-unit direction of ``R`` (``H W / (M + 1)^2``; 1 if white)."""
        if self.truncation is None:
            return 1.0
        return self.latitude.size * self.n_lon / (self.truncation + 1) ** 2

    def noise_dims(self, n_channels: int) -> int:
        """``dim R = rank S``: ``n_channels (M + 1)^2``, or every grid value for white noise."""
        per_field = self.latitude.size * self.n_lon if self.truncation is None else (self.truncation + 1) ** 2
        return n_channels * per_field

    def trace_gs(self, n_channels: int) -> float:
        """``tr(G S)`` = the number of grid values (unit noise variance per point, weights of mean 1)."""
        return float(n_channels * self.latitude.size * self.n_lon)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``T x``: ``x`` (..., H, W) projected onto the noise space (``G``-orthogonally); identity for white noise."""
        return x if self.truncation is None else sphere.truncate(x, self.latitude, self.truncation)

    def weight(self, like: torch.Tensor) -> torch.Tensor:
        """The weights as an ``(H, 1)`` tensor of ``like``'s dtype and device (broadcasts over ``(..., H, W)``)."""
        return torch.as_tensor(self.weights, dtype=like.dtype, device=like.device)[:, None]

    def inner(self, a: torch.Tensor, b: torch.Tensor, dims: int = 3) -> torch.Tensor:
        """``<a, b>_G`` summed over the last ``dims`` dims (default channel, latitude, longitude)."""
        return (self.weight(a) * a * b).sum(dim=tuple(range(-dims, 0)))

    def noise(self, shape, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        """Draws of ``n ~ N(0, S)`` shaped ``(..., H, W)``: the denoiser's own diffusion noise."""
        return sphere.noise(shape, generator, self.band, dtype)

    def to_whitened(self, x: torch.Tensor) -> torch.Tensor:
        """``G^(1/2) x``: fields to coordinates in which ``G`` is the Euclidean product."""
        return self.weight(x).sqrt() * x

    def from_whitened(self, u: torch.Tensor) -> torch.Tensor:
        """``G^(-1/2) u``: inverse of :meth:`to_whitened`."""
        return u / self.weight(u).sqrt()

    @functools.cached_property
    def field_basis(self) -> np.ndarray | None:
        """``G``-orthonormal real spherical harmonics of one field, ``(H W, (M + 1)^2)`` float64 (None for white noise).

        Columns: for each zonal wavenumber ``m``, the Legendre functions of
        :func:`druids.sphere.harmonic_basis` times ``1`` (``m = 0``) or
        ``cos(m lon)`` and ``sin(m lon)``, normalised in ``G``.
        """
        if self.truncation is None:
            return None
        legendre, _ = sphere.harmonic_basis(self.latitude, self.truncation)
        n_lat, n_lon = self.latitude.size, self.n_lon
        longitude = 2 * np.pi * np.arange(n_lon) / n_lon
        columns = []
        for m in range(self.truncation + 1):
            zonal = [np.ones(n_lon)] if m == 0 else [np.cos(m * longitude), np.sin(m * longitude)]
            scale = np.sqrt(2.0 / (n_lat * n_lon)) * (1.0 if m == 0 else np.sqrt(2.0))
            for k in range(self.truncation + 1 - m):
                columns += [scale * np.outer(legendre[m][:, k], wave).ravel() for wave in zonal]
        return np.stack(columns, axis=1)

    def to_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """``G``-orthonormal coordinates of ``T x``: ``(..., C, H, W) -> (..., C r)`` (``r`` per field; float64)."""
        x = x.double()
        if self.field_basis is None:
            return self.to_whitened(x).flatten(-3)
        basis = torch.as_tensor(self.field_basis, device=x.device)
        weighted = (self.weight(x) * x).flatten(-2)  # G x, (..., C, H W)
        return (weighted @ basis).flatten(-2)

    def from_coefficients(self, a: torch.Tensor, n_channels: int) -> torch.Tensor:
        """Fields of coordinates ``a`` ``(..., C r) -> (..., C, H, W)`` (float64): the inverse of :meth:`to_coefficients` on ``R``."""
        a = a.double()
        shape = (*a.shape[:-1], n_channels, self.latitude.size, self.n_lon)
        if self.field_basis is None:
            return self.from_whitened(a.reshape(shape))
        basis = torch.as_tensor(self.field_basis, device=a.device)
        return (a.reshape(*a.shape[:-1], n_channels, -1) @ basis.T).reshape(shape)
