"""The sphere: area and latitude weights, spherical-harmonic truncation, and the diffusion noise.

Base layer: imports nothing of druids. Everything that weights, projects or
draws noise on the latitude-longitude grid comes from here, so models,
samplers and diagnostics agree on one geometry.

Weights. :func:`area_weights` (cos latitude, mean 1) is the sphere's own
measure and the WeatherBench convention for every score;
:func:`latitude_weights` is the per-latitude weight of the training loss
(``ModelConfig.latitude_weighting``).

Truncation. The Held–Suarez world is a spectral model truncated at total
wavenumber ``M`` (T21), and its grid fields are exact transforms of its
spectral state, so they hold nothing beyond it: temperature and log surface
pressure are sums of spherical harmonics ``Y_n^m`` with ``n <= M``, and
``u cos(lat)``, ``v cos(lat)`` (from vorticity and divergence at T``M``) sums
with ``n <= M + 1``. :func:`truncate_state` projects a state onto that space.
It leaves the world's states unchanged (to float32 rounding; tested) and
removes whatever else a model puts on the grid, such as grid-scale noise that
the world cannot have.

Projection of a field ``f(lat, lon)``: a Fourier transform in longitude, then,
for each zonal wavenumber ``m <= M``, the orthogonal projection of the latitude
profile onto the associated Legendre functions ``P_n^m(mu)``, ``n = m .. M``,
``mu = sin(lat)``, in the inner product of Gaussian quadrature (weights
proportional to area); ``m > M`` is set to zero. The ``P_n^m`` span ``(1 -
mu^2)^(m/2)`` times the polynomials of degree ``<= M - m``, which is the basis
used here (Legendre polynomials for conditioning, then QR). Gaussian
quadrature on ``H`` latitudes integrates the products exactly when ``M <= H - 1``.

Noise. :func:`noise` is the one function that draws diffusion noise, for
training (``models``) and sampling (``sampling``) alike: white on the grid,
or isotropic on the sphere and band-limited (:func:`sphere_noise`).
"""


from __future__ import annotations

import functools

import numpy as np
import torch
import xarray as xr

#: Variables projected as ``cos(lat)`` times the field at truncation ``M + 1`` (horizontal wind components).
WIND_VARIABLES = ("u_component_of_wind", "v_component_of_wind")
#: Variables projected as ``log`` of the field (positive fields whose log is the spectral variable).
LOG_VARIABLES = ("surface_pressure",)

#: Loss weightings per latitude (``ModelConfig.latitude_weighting``).
LATITUDE_WEIGHTINGS = ("area", "sqrt_area", "uniform")


def area_weights(latitude) -> xr.DataArray:
    """Area weights cos(latitude), normalised to mean 1 over ``latitude``.

    ``latitude`` in degrees (array-like or DataArray); returns dims ``(latitude,)``.
    On a Gaussian grid this approximates the Gaussian quadrature weights
    (relative error < 1 % at 32 latitudes), which is the WeatherBench convention.
    """
    if not isinstance(latitude, xr.DataArray):
        latitude = np.asarray(latitude)
        latitude = xr.DataArray(latitude, dims="latitude", coords={"latitude": latitude})
    lat = latitude.rename("latitude")
    weights = np.cos(np.deg2rad(lat.astype("float64")))
    return (weights / weights.mean()).rename("area_weight")


def latitude_weights(latitudes, weighting: str = "area") -> torch.Tensor:
    """Loss weights per latitude, mean 1, float64: ``latitudes`` in degrees, (H,) -> (H,).

    ``"area"``: cos(latitude) (:func:`area_weights`), the sphere's own measure;
    ``"sqrt_area"``: sqrt(cos(latitude)), which counts the polar caps about
    three times more than their area; ``"uniform"``: every grid row alike.
    """
    if weighting not in LATITUDE_WEIGHTINGS:
        raise ValueError(f"latitude weighting {weighting!r}; choose one of {', '.join(LATITUDE_WEIGHTINGS)}")
    area = area_weights(np.asarray(latitudes, dtype=np.float64)).values
    weights = {"area": area, "sqrt_area": np.sqrt(area), "uniform": np.ones_like(area)}[weighting]
    return torch.as_tensor(weights / weights.mean())



@functools.lru_cache(maxsize=8)
def _bases(latitude: tuple[float, ...], truncation: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases of the ``P_n^m``, ``n = m .. M``, on ``latitude`` (degrees), and the quadrature weights.

    Returns ``basis`` ``(M + 1, H, M + 1)``: for zonal wavenumber ``m``, columns
    ``0 .. M - m`` are orthonormal in the inner product ``sum_j w_j f_j g_j``
    (the rest are zero); and ``w`` ``(H,)``, the Gaussian weights (sum 2).
    """
    mu = np.sin(np.deg2rad(np.asarray(latitude, dtype=np.float64)))
    nodes, weights = np.polynomial.legendre.leggauss(mu.size)
    if not np.allclose(np.sort(mu), nodes, atol=1e-6):
        raise ValueError(
            f"Spectral truncation needs a Gaussian grid; these {mu.size} latitudes are not its nodes "
            "(e.g. an equiangular grid such as ERA5's). Set DatasetConfig.spectral_truncation=None for such data."
        )
    if not 0 <= truncation <= mu.size - 1:
        raise ValueError(f"Truncation {truncation} needs 0 <= truncation <= {mu.size - 1} on {mu.size} latitudes")
    w = np.interp(mu, nodes, weights)
    basis = np.zeros((truncation + 1, mu.size, truncation + 1))
    for m in range(truncation + 1):
        functions = np.polynomial.legendre.legvander(mu, truncation - m) * ((1 - mu**2) ** (m / 2))[:, None]
        q, _ = np.linalg.qr(np.sqrt(w)[:, None] * functions)  # orthonormal in the quadrature inner product
        basis[m, :, : truncation - m + 1] = q / np.sqrt(w)[:, None]
    return basis, w


@functools.lru_cache(maxsize=8)
def _projections(latitude: tuple[float, ...], truncation: int) -> np.ndarray:
    """Projection matrices ``(truncation + 1, H, H)``, one per zonal wavenumber: ``B_m B_m^T diag(w)``."""
    basis, w = _bases(latitude, truncation)
    return np.einsum("mik,mjk->mij", basis, basis) * w[None, None, :]


def truncate(field, latitude, truncation: int):
    """``field`` ``(..., latitude, longitude)`` on a Gaussian grid, truncated to total wavenumber ``truncation``.

    A numpy array (computed in float64, returned in its dtype) or a torch
    tensor (computed on its device in its precision, complex64 for float32).
    ``longitude`` evenly spaced over the full circle, at least ``2 *
    truncation + 1`` points; ``latitude`` in degrees, (H,).
    """
    n_lon = field.shape[-1]
    if n_lon < 2 * truncation + 1:
        raise ValueError(f"{n_lon} longitudes cannot hold zonal wavenumbers up to {truncation}")
    projections = _projections(tuple(float(x) for x in np.asarray(latitude)), truncation)
    if torch.is_tensor(field):
        coefficients = torch.fft.rfft(field, dim=-1)
        matrices = torch.as_tensor(projections, dtype=coefficients.dtype, device=field.device)
        kept = torch.einsum("mij,...jm->...im", matrices, coefficients[..., : truncation + 1])
        return torch.fft.irfft(kept, n=n_lon, dim=-1)
    field = np.asarray(field)
    coefficients = np.fft.rfft(field.astype(np.float64), axis=-1)
    kept = np.einsum("mij,...jm->...im", projections, coefficients[..., : truncation + 1])
    return np.fft.irfft(kept, n=n_lon, axis=-1).astype(field.dtype)


def truncate_state(state: xr.Dataset, truncation: int) -> xr.Dataset:
    """Every variable of ``state`` (dims ``..., latitude, longitude``) projected onto a T``truncation`` model's space.

    Winds (:data:`WIND_VARIABLES`) as ``cos(lat) u`` at ``truncation + 1``, then
    divided by ``cos(lat)``; :data:`LOG_VARIABLES` through their logarithm; all
    other variables as scalars. Coordinates and attributes are kept.
    """
    latitude = state["latitude"].values
    cos_lat = np.cos(np.deg2rad(latitude))[:, None]
    out = {}
    for name, da in state.data_vars.items():
        values = da.transpose(..., "latitude", "longitude").values
        if name in WIND_VARIABLES:
            new = truncate(values * cos_lat, latitude, truncation + 1) / cos_lat
        elif name in LOG_VARIABLES:
            new = np.exp(truncate(np.log(values), latitude, truncation))
        else:
            new = truncate(values, latitude, truncation)
        projected = da.transpose(..., "latitude", "longitude").copy(data=new.astype(da.dtype))
        out[name] = projected.transpose(*da.dims)
    return state.assign(out)


def sphere_noise(
    shape, generator: torch.Generator, latitude, truncation: int, dtype=torch.float32, device=None
) -> torch.Tensor:
    """Gaussian noise ``(..., latitude, longitude)`` white on the sphere up to total wavenumber ``truncation``.

    Independent standard normal coefficients for every spherical harmonic
    ``n <= truncation`` (real for ``m = 0``), synthesised on the Gaussian grid
    and scaled to unit variance at every grid point: by the addition theorem
    the variance is the same at all latitudes, the noise is isotropic, and it
    lies in the space of :func:`truncate` (band-limited white noise: power
    ``2n + 1`` at total wavenumber ``n``). GenCast (Price et al. 2025) also
    diffuses with isotropic noise on the sphere, up to its grid's truncation,
    with equal power per total wavenumber instead. Draws come from
    ``generator`` on its device (``device``: where the result goes; default
    the generator's).
    """
    *lead, _, n_lon = shape
    basis, _ = _bases(tuple(float(x) for x in np.asarray(latitude)), truncation)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn((*lead, truncation + 1, truncation + 1, 2), generator=generator, device=draw_device, dtype=torch.float64)
    coefficients = torch.complex(z[..., 0], z[..., 1]) / np.sqrt(2.0)
    coefficients[..., 0, :] = z[..., 0, :, 0].to(coefficients.dtype)  # m = 0: real, unit variance
    fourier = torch.einsum("mhk,...mk->...hm", torch.as_tensor(basis, device=draw_device).to(coefficients.dtype), coefficients)
    field = torch.fft.irfft(fourier, n=n_lon, dim=-1)
    variance = (truncation + 1) ** 2 / (2.0 * n_lon**2)  # per grid point, from the addition theorem
    return (field / np.sqrt(variance)).to(device=device or draw_device, dtype=dtype)


#: A band-limited noise space: ``(latitudes in degrees (H,), truncation)``; None: white on the grid.
NoiseBand = tuple[np.ndarray, int] | None


def noise(
    shape, generator: torch.Generator | None = None, band: NoiseBand = None, dtype=torch.float32, device=None
) -> torch.Tensor:
    """Standard normal diffusion noise ``(..., latitude, longitude)``, drawn from ``generator`` on its device.

    ``band`` None: white on the grid (i.i.d. per grid point); ``(latitude,
    truncation)``: white on the sphere up to that total wavenumber
    (:func:`sphere_noise`). The draw happens on the generator's device (the
    CPU without one) and the result goes to ``device`` (default: where it was
    drawn), so a CPU generator gives the same noise whatever the device.
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    if band is None:
        draws = torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
        return draws.to(device or draw_device)
    latitude, truncation = band
    return sphere_noise(shape, generator, latitude, truncation, dtype, device)


def harmonic_basis(latitude, truncation: int) -> tuple[np.ndarray, np.ndarray]:
    """The associated Legendre functions of :func:`truncate`, by total wavenumber, and the quadrature weights.

    Returns ``basis`` ``(truncation + 1, H, truncation + 1)`` and ``weights``
    ``(H,)`` (Gaussian quadrature weights at ``latitude``, degrees, summing to
    2). Column ``k`` of ``basis[m]`` is the normalised associated Legendre
    function of zonal wavenumber ``m`` and total wavenumber ``n = m + k`` (up
    to sign; columns with ``m + k > truncation`` are zero): Gram–Schmidt of
    ``(1 - mu^2)^(m/2)`` times polynomials of rising degree gives the
    ``P_n^m`` in order, and quadrature makes them orthonormal in
    ``sum_j w_j f_j g_j``.
    """
    basis, weights = _bases(tuple(float(x) for x in np.asarray(latitude)), truncation)
    return basis.copy(), weights.copy()


def power_by_total_wavenumber(field, latitude, truncation: int) -> np.ndarray:
    """Area-weighted mean square of ``field`` ``(..., latitude, longitude)`` per total wavenumber: ``(..., truncation + 1)``.

    Spherical-harmonic analysis on the Gaussian grid (:func:`harmonic_basis`):
    a Fourier transform in longitude, then quadrature against the ``P_n^m``.
    For a field in the space of :func:`truncate` the entries sum to its mean
    square under the quadrature weights (Parseval); what lies beyond
    ``truncation`` is not counted. numpy or torch input, float64 result.
    """
    values = field.detach().cpu().double().numpy() if torch.is_tensor(field) else np.asarray(field, dtype=np.float64)
    basis, weights = harmonic_basis(latitude, truncation)
    n_lon = values.shape[-1]
    fourier = np.fft.rfft(values, axis=-1)[..., : truncation + 1]  # (..., H, m)
    coefficients = np.einsum("mhk,h,...hm->...mk", basis, weights, fourier)
    power = np.abs(coefficients) ** 2 * np.where(np.arange(truncation + 1) == 0, 1.0, 2.0)[:, None]
    total = np.zeros((*values.shape[:-2], truncation + 1))
    for m in range(truncation + 1):
        total[..., m:] += power[..., m, : truncation + 1 - m]
    return total / (2.0 * n_lon**2)
