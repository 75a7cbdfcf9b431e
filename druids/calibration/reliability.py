"""Calibration diagrams: rank histograms and their flatness test, PIT, and CORP reliability for threshold events.

Layout as :mod:`druids.calibration.scores`: ``ensemble`` with a ``member``
dim, ``truth`` without; cases are weighted by area (:func:`druids.sphere.area_weights`).

* Rank histogram (Hamill 2001): relative frequency of the truth's rank among
  the ``M`` members, ``rank = 1 .. M + 1``, ties shared equally
  (``scores.probability.rank_histogram``). Flat for an ensemble exchangeable
  with the truth; U-shaped when under-dispersed, dome-shaped when
  over-dispersed, sloped when biased.
* :func:`flatness_test`: Pearson's chi^2 against flat and its decomposition
  into a linear (slope: bias) and a quadratic (convexity: dispersion)
  component with one degree of freedom each (Jolliffe & Primo 2008).
* PIT histograms (Gneiting, Balabdaoui & Raftery 2007) of the ensemble's
  empirical distribution (``scores.probability.Pit``) and of a Gaussian
  predictive distribution (EMOS).
* Reliability of threshold events by CORP (Dimitriadis, Gneiting & Jordan
  2021): the calibrated probability is the isotonic (pool-adjacent-violators)
  regression of the outcome on the forecast probability
  (``scores.processing.isotonic_fit``), and the Brier score splits exactly
  into miscalibration - discrimination + uncertainty.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import scores
import xarray as xr

from druids.calibration.scores import numpy_seed
from druids.sphere import area_weights

SPATIAL = ("latitude", "longitude")


def case_weights(truth: xr.DataArray) -> xr.DataArray:
    """Area weights broadcast to every case of ``truth`` (mean 1)."""
    return area_weights(truth.latitude).broadcast_like(truth)


def rank_histogram(ensemble: xr.DataArray, truth: xr.DataArray, keep: tuple[str, ...] = ()) -> xr.DataArray:
    """Area-weighted relative frequency of the truth's rank, dims ``(*keep, rank)``, ``rank = 1 .. M + 1``."""
    return scores.probability.rank_histogram(
        ensemble, truth, ens_member_dim="member", preserve_dims=list(keep) or None, weights=case_weights(truth)
    )


def effective_cases(truth: xr.DataArray, over: tuple[str, ...] | None = None) -> float:
    """Kish's effective number ``(sum w)^2 / sum w^2`` of area-weighted cases in ``truth`` (over ``over``, default all).

    It counts cases as independent; spatially or temporally correlated cases
    are fewer in effect, so pass a smaller number to :func:`flatness_test` for them.
    """
    w = case_weights(truth)
    w = w if over is None else w.isel({d: 0 for d in w.dims if d not in over})
    return float(w.sum() ** 2 / (w**2).sum())


def _contrasts(n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm linear and quadratic contrasts over ``n_bins`` ranks, orthogonal to each other and to a constant."""
    k = np.arange(n_bins) - (n_bins - 1) / 2
    linear = k / np.linalg.norm(k)
    quadratic = k**2 - np.mean(k**2)
    return linear, quadratic / max(np.linalg.norm(quadratic), np.finfo(float).tiny)


def flatness_test(frequencies: xr.DataArray, n_cases: float) -> xr.Dataset:
    """Chi^2 test that a rank histogram is flat, and its slope and convexity components (Jolliffe & Primo 2008).

    ``frequencies``: relative frequencies along ``rank`` (sum 1; other dims are
    tested separately); ``n_cases``: the number of independent cases behind
    them. With ``K = M + 1`` bins and ``d_k = K f_k - 1`` (the relative
    departure from flat): ``chi2 = (n / K) sum d_k^2`` (``K - 1`` degrees of
    freedom), ``slope = a . d`` and ``convexity = b . d`` with unit-norm linear
    ``a`` and quadratic ``b`` contrasts (:func:`_contrasts`); their chi^2
    components ``(n / K) slope^2`` and ``(n / K) convexity^2`` have one
    degree of freedom each. ``slope > 0``: the truth falls too often in the high
    ranks (members too low); ``convexity > 0``: too often in the extreme ranks
    (U shape, under-dispersed), ``< 0``: dome (over-dispersed). Returns
    ``chi2``, ``p_value``, ``slope``, ``slope_p``, ``convexity``, ``convexity_p``.
    """
    n_bins = frequencies.sizes["rank"]
    linear, quadratic = (xr.DataArray(c, dims="rank", coords={"rank": frequencies["rank"]}) for c in _contrasts(n_bins))
    departure = n_bins * frequencies - 1
    chi2 = n_cases / n_bins * (departure**2).sum("rank")
    slope, convexity = (departure * linear).sum("rank"), (departure * quadratic).sum("rank")

    def p_value(statistic, dof):
        return xr.apply_ufunc(scipy.stats.chi2.sf, statistic, dof)

    return xr.Dataset(
        {
            "chi2": chi2,
            "p_value": p_value(chi2, n_bins - 1),
            "slope": slope,
            "slope_p": p_value(n_cases / n_bins * slope**2, 1),
            "convexity": convexity,
            "convexity_p": p_value(n_cases / n_bins * convexity**2, 1),
        }
    ).assign_attrs(n_cases=n_cases, n_bins=n_bins)


def pit_histogram(ensemble: xr.DataArray, truth: xr.DataArray, bins: int = 10, keep: tuple[str, ...] = ()) -> xr.DataArray:
    """Area-weighted PIT histogram of the ensemble's empirical CDF (``scores.probability.Pit``), dims ``(*keep, bin_centre)``.

    Bar heights are probabilities (sum 1). The empirical CDF of ``M`` members
    puts the PIT at ``r / M`` (``r`` the number of members below the truth), so
    an exchangeable ensemble gives bar ``b`` the probability
    ``#{r : r / M in bin b} / (M + 1)``: flat when ``bins = M + 1`` (then it
    is the rank histogram), not in general (:func:`expected_pit_histogram`).
    """
    pit = scores.probability.Pit(
        ensemble, truth, ensemble_member_dim="member", preserve_dims=list(keep) or None, weights=case_weights(truth)
    )
    return pit.hist_values(bins)


def expected_pit_histogram(n_members: int, bins: int) -> np.ndarray:
    """The :func:`pit_histogram` of an ensemble exchangeable with the truth: ranks ``r / M`` uniform on ``0 .. M``,
    bins ``[0, 1/bins], (1/bins, 2/bins], ...``."""
    position = np.arange(n_members + 1) / n_members
    index = np.clip(np.ceil(position * bins - 1e-12).astype(int) - 1, 0, bins - 1)
    return np.bincount(index, minlength=bins) / (n_members + 1)


def gaussian_pit_histogram(mean: xr.DataArray, sigma: xr.DataArray, truth: xr.DataArray, bins: int = 10) -> np.ndarray:
    """Area-weighted histogram (probabilities, ``bins`` equal bins) of the PIT ``Phi((y - mean) / sigma)`` of a
    Gaussian predictive distribution (e.g. EMOS): flat when it is calibrated."""
    pit = scipy.stats.norm.cdf(((truth - mean) / sigma).values).ravel()
    weights = case_weights(truth).values.ravel()
    counts, _ = np.histogram(pit, bins=bins, range=(0.0, 1.0), weights=weights)
    return counts / counts.sum()


def event_probability(ensemble: xr.DataArray, threshold) -> xr.DataArray:
    """Forecast probability of the event ``x >= threshold``: the fraction of members at or above it."""
    return (ensemble >= threshold).mean("member")


def reliability(probability: xr.DataArray, outcome: xr.DataArray, bootstraps: int | None = None, seed: int = 0) -> dict:
    """CORP reliability diagram and Brier score decomposition (Dimitriadis et al. 2021), area-weighted.

    ``probability``: forecast probabilities of an event, ``outcome``: 1 where
    it happened, 0 elsewhere (same dims, with latitude). The calibrated
    probability ``p_hat`` is the weighted isotonic regression of the outcome on
    the probability (``scores.processing.isotonic_fit``). With ``BS(q) =
    weighted mean (q - outcome)^2`` and ``o_bar`` the weighted event frequency:
    ``brier = BS(p)``, ``miscalibration = BS(p) - BS(p_hat) >= 0``,
    ``discrimination = BS(o_bar) - BS(p_hat) >= 0``, ``uncertainty =
    BS(o_bar)``, and ``brier = miscalibration - discrimination + uncertainty``.
    Returns those numbers, the diagram's points ``forecast`` (the distinct
    forecast probabilities, ascending) and ``calibrated``, the share of the
    total weight at each point ``weight``, and with ``bootstraps`` resamples
    the 90 % confidence band ``lower``/``upper`` at the points. With ``M``
    members the probabilities are ``k / M``; even an ensemble exchangeable
    with the truth is not exactly reliable at them for small ``M`` (a sample
    fraction, not the probability), which the oracle's diagram shows.
    """
    weights = case_weights(probability).values.ravel()
    p, o = probability.values.ravel().astype(float), outcome.values.ravel().astype(float)
    with numpy_seed(seed):
        fit = scores.processing.isotonic_fit(p, o, weight=weights, functional="mean", bootstraps=bootstraps)
    calibrated = fit["regression_func"](p)
    frequency = np.average(o, weights=weights)

    def brier(q):
        return float(np.average((q - o) ** 2, weights=weights))

    result = {
        "brier": brier(p),
        "miscalibration": brier(p) - brier(calibrated),
        "discrimination": brier(np.full_like(p, frequency)) - brier(calibrated),
        "uncertainty": brier(np.full_like(p, frequency)),
        "base_rate": frequency,
    }
    forecast, first = np.unique(fit["fcst_sorted"], return_index=True)
    result.update(forecast=forecast, calibrated=fit["regression_values"][first])
    result["weight"] = np.array([weights[p == value].sum() for value in forecast]) / weights.sum()
    if bootstraps:
        result.update(lower=fit["confidence_band_lower_values"][first], upper=fit["confidence_band_upper_values"][first])
    return result
