"""Anatomy of generation: what the denoiser decides at each noise level of the reverse process.

Along a sampler's path (``druids.sampling.samplers``) every call ``D(y_sigma, c; sigma)``
is recorded (:func:`generate`). Two readings:

* which scales settle when (:func:`settling`): the power of ``D(y_sigma) - x_0`` per
  total wavenumber ``n`` (zonal wavenumber for noise white on the grid) over
  the power of the final sample ``x_0``; a scale is settled once this stays
  below a threshold;
* where the output comes from (:func:`euler_shares`): by Euler's identity for the
  bias-free denoiser ``D = J_y y + sum_g J_{c_g} c_g`` over groups of condition
  channels (previous state, static fields), and the share of group ``g`` is
  ``<D, term_g> / <D, D>`` in the ``G`` inner product (the shares sum to 1; a
  negative share cancels part of the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from druids.config import SamplingConfig
from druids.explain.basis import power_spectrum
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import Linearisation
from druids.sampling import samplers
from druids.sampling.noise import MemberNoise, member_generator


@dataclass(frozen=True)
class Call:
    """One denoiser call of the reverse process: ``sigma``, the noisy input ``y`` and ``denoised`` (C, H, W)."""

    sigma: float
    y: torch.Tensor
    denoised: torch.Tensor


class RecordingDenoiser:
    """A denoiser that records every ``denoise`` call of batch row 0 (:class:`Call`) and otherwise passes through."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.noise_band = denoiser.noise_band
        self.calls: list[Call] = []

    def denoise(self, y: torch.Tensor, c: torch.Tensor, sigma) -> torch.Tensor:
        out = self.denoiser.denoise(y, c, sigma)
        level = float(sigma[0]) if torch.is_tensor(sigma) and sigma.ndim else float(sigma)
        self.calls.append(Call(level, y[0].detach().cpu(), out[0].detach().cpu()))
        return out


def generate(denoiser, c: torch.Tensor, cfg: SamplingConfig, seed: int, key: int = 0) -> tuple[torch.Tensor, list[Call]]:
    """One sample ``(C, H, W)`` from condition ``c`` (Cc, H, W) with ``cfg``'s sampler, and its recorded calls.

    The noise comes from member 0's generator of ``(seed, "model", key)``
    (:func:`druids.sampling.noise.member_generator`), as in an ensemble forecast.
    """
    shape = (denoiser.n_target, *c.shape[-2:])
    noise = MemberNoise([member_generator(seed, "model", key, 0)], shape, c.dtype, c.device, denoiser.noise_band)
    recorder = RecordingDenoiser(denoiser)
    with torch.no_grad():
        sample, _ = samplers.sample(recorder, c[None], noise, cfg)
    return sample[0].cpu(), recorder.calls


def settling(calls: list[Call], final: torch.Tensor, geometry: NoiseGeometry) -> pd.DataFrame:
    """Relative error of each call's estimate per wavenumber: rows ``sigma`` (descending), columns wavenumber ``n``.

    ``power(D(y_sigma) - x_0) / power(x_0)`` per wavenumber; 0 when that scale
    of the final sample is already decided at ``sigma``.
    """
    estimates = np.stack([call.denoised.double().numpy() for call in calls])
    error = power_spectrum(estimates - final.double().numpy()[None], geometry)
    reference = power_spectrum(final.double().numpy(), geometry)
    table = pd.DataFrame(error / np.maximum(reference, 1e-300), index=pd.Index([c.sigma for c in calls], name="sigma"))
    table.columns.name = "wavenumber"
    return table.groupby(level="sigma", sort=False).last().sort_index(ascending=False)


def settled_sigma(table: pd.DataFrame, threshold: float = 0.1) -> pd.Series:
    """Per wavenumber, the largest ``sigma`` from which on the relative error stays below ``threshold`` (NaN: never)."""
    below = (table < threshold).iloc[::-1].cummin().iloc[::-1]  # below at this sigma and every smaller one
    return pd.Series({n: table.index[below[n].to_numpy()].max() if below[n].any() else np.nan for n in table.columns}, name="settled_sigma")


def euler_shares(denoiser, calls: list[Call], c: torch.Tensor, groups: dict[str, slice], geometry: NoiseGeometry) -> pd.DataFrame:
    """Shares of the output from the noisy input and each condition group, by Euler's identity, per distinct ``sigma``.

    Rows ``sigma`` (descending); columns ``"noisy input"``, the groups, and
    ``"residual"`` (1 minus their sum: 0 for a bias-free denoiser, up to rounding).
    """
    rows = {}
    for call in calls:
        if call.sigma in rows:
            continue
        lin = Linearisation(denoiser, call.y, c, call.sigma)
        output = lin.output()
        norm = float(geometry.inner(output, output))
        shares = {name: float(geometry.inner(output, term)) / norm for name, term in lin.euler_terms(groups).items()}
        rows[call.sigma] = shares | {"residual": 1.0 - sum(shares.values())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("sigma").sort_index(ascending=False)
