"""The chapter's study of what the model represents: features of probe states, probes per level and noise
level against their controls, the bottleneck's dictionary and one intervention on it.

States: ``x`` the normalised 6-h residual (the denoiser's target), ``c`` the
condition, as in :class:`~druids.data.dataset.ForecastDataset`. The probes'
features (:data:`FEATURE_METRICS`) come from
:func:`druids.data.diagnostics.state_features` of the condition's state ``x_t``
and the next state; the probes themselves from :mod:`druids.explain.probes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import xarray as xr
from tqdm.auto import tqdm

from druids.config import ExplainConfig
from druids.data.diagnostics import state_features
from druids.data.normalisation import NormStats
from druids.explain import probes
from druids.explain.autoencoder import scale_atom
from druids.explain.features import NETWORK_INPUT, Hooks, noisy_targets, probe_inputs
from druids.explain.sensitivity import box_weights

#: The probed features and their held-out score: R^2 for a quantity, ROC AUC for a presence (0/1).
FEATURE_METRICS = {
    "jet_speed_north": "r2", "jet_latitude_north": "r2", "jet_speed_south": "r2", "jet_latitude_south": "r2",
    "eddy_kinetic_energy": "r2", "baroclinicity_north": "r2", "baroclinicity_south": "r2",
    "cyclone": "auc", "anticyclone": "auc", "pressure_change_hpa": "r2",
}  # fmt: skip
#: The sources of probe inputs: the trained network, a randomly initialised one, and the raw network input.
SOURCES = ("trained", "random", "raw input")


def features_of(data: xr.Dataset, times, step: np.timedelta64, upper: float, middle: float, cfg: ExplainConfig) -> pd.DataFrame:
    """:func:`~druids.data.diagnostics.state_features` of the states at ``times`` and ``times + step`` of ``data``
    (surface pressure, or mean sea-level pressure where a store has no surface pressure)."""
    pressure = "surface_pressure" if "surface_pressure" in data else "mean_sea_level_pressure"
    names = ["u_component_of_wind", "v_component_of_wind", "temperature", pressure]
    now = data[names].sel(time=np.asarray(times)).load()
    later = data[names].sel(time=np.asarray(times) + step).load()
    return state_features(now, later, upper, middle, cfg.feature_region, cfg.cyclone_threshold_hpa, pressure)


def probe_study(
    networks: Mapping[str, object], train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    targets: pd.DataFrame, layers: Sequence[str], cfg: ExplainConfig, seed: int,
) -> dict[tuple[str, float, str], pd.DataFrame]:
    """Held-out probe predictions ``{(source, sigma, layer): (test states x features)}`` for every network
    (``"trained"``, ``"random"``) at every ``cfg.probe_sigmas`` and layer, and for the raw network input
    (``("raw input", sigma, NETWORK_INPUT)``). ``train``/``test``: ``(x, c)``; ``targets``: the training
    states' features (columns :data:`FEATURE_METRICS`)."""
    out = {}
    for name, network in tqdm(networks.items(), desc="probes", leave=False):
        for sigma in cfg.probe_sigmas:
            names = [*layers, NETWORK_INPUT] if name == "trained" else list(layers)
            inputs = [probe_inputs(network, x, c, sigma, names, cfg.probe_pool, seed + k) for k, (x, c) in enumerate((train, test))]
            predicted = probes.probe_predictions(*inputs, targets[list(FEATURE_METRICS)])
            for layer, prediction in predicted.items():
                source = "raw input" if layer == NETWORK_INPUT else name
                out[(source, float(sigma), layer)] = prediction
    return out


def representation_table(predictions: Mapping[tuple, pd.DataFrame], truth: pd.DataFrame, layers: Sequence[str], cfg: ExplainConfig, seed: int) -> pd.DataFrame:
    """Per noise level, layer and feature: the trained network's held-out score, the controls' scores, the
    bootstrap margins and ``represented`` (:func:`druids.explain.probes.against_controls`)."""
    truth = truth.reset_index(drop=True)
    tables = []
    for sigma in cfg.probe_sigmas:
        raw = predictions[("raw input", float(sigma), NETWORK_INPUT)]
        for layer in layers:
            controls = {"random": predictions[("random", float(sigma), layer)], "raw": raw}
            table = probes.against_controls(predictions[("trained", float(sigma), layer)], controls, truth, FEATURE_METRICS, cfg.probe_boot, seed)
            tables.append(table.reset_index().assign(sigma=float(sigma), layer=layer))
    return pd.concat(tables, ignore_index=True)


@torch.no_grad()
def layer_activations(denoiser, x: torch.Tensor, c: torch.Tensor, sigma: float, layer: str, seed: int, batch: int = 16) -> torch.Tensor:
    """The full maps ``(N, Ch, h, w)`` of ``layer`` for the noisy targets ``x + sigma n`` (the probes' noise draws)."""
    y = noisy_targets(x, sigma, denoiser, seed)
    device = next(denoiser.parameters()).device
    maps = []
    for start in range(0, len(x), batch):
        with Hooks(denoiser, [layer]) as hooks:
            denoiser.denoise(y[start : start + batch].to(device), c[start : start + batch].to(device), sigma)
        maps.append(hooks.outputs[layer].float().cpu())
    return torch.cat(maps)


def band_wind_change(output: torch.Tensor, stats: NormStats, channel: int, band: tuple[float, float]) -> np.ndarray:
    """The zonal-mean change (m/s per step) of one wind channel of denoiser outputs ``(B, C, H, W)`` (normalised
    residuals), averaged (cos latitude) over the latitude ``band`` (degrees): (B,)."""
    residual = output[:, channel].double().cpu().numpy() * float(stats.residual_std[channel]) + float(stats.residual_mean[channel])
    latitude = np.asarray(stats.latitude)
    rows = (latitude >= band[0]) & (latitude <= band[1])
    weights = np.cos(np.deg2rad(latitude[rows]))
    return (residual.mean(axis=-1)[:, rows] * weights).sum(axis=1) / weights.sum()


def box_pressure_change(output: torch.Tensor, stats: NormStats, channel: int, region) -> np.ndarray:
    """The change (hPa per step) of the surface-pressure channel of denoiser outputs ``(B, C, H, W)`` (normalised
    residuals), averaged (cos latitude) over ``region`` ((south, north), (west, east)): (B,)."""
    residual = output[:, channel].double().cpu().numpy() * float(stats.residual_std[channel]) + float(stats.residual_mean[channel])
    return (residual * box_weights(stats.latitude, stats.longitude, region)).sum(axis=(1, 2)) / 100.0


def intervention(denoiser, model, layer: str, atom: int, factors, y: torch.Tensor, c: torch.Tensor, sigma: float, measure) -> pd.Series:
    """The mean change over states of ``measure(output)`` (a (B,) quantity of the denoiser's outputs) when atom
    ``atom``'s contribution to ``layer`` is scaled by each of ``factors``, relative to the unedited network."""
    plain = measure(scale_atom(denoiser, model, layer, atom, 1.0, y, c, sigma))
    shifts = [float(np.mean(measure(scale_atom(denoiser, model, layer, atom, f, y, c, sigma)) - plain)) for f in factors]
    return pd.Series(shifts, index=pd.Index(list(factors), name="factor"), name=atom)
