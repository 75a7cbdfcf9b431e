"""Linear probes: which features of the state can a linear read-out recover from a layer's activations?

A probe is ridge regression (scikit-learn's ``RidgeCV``: features standardised,
the penalty chosen per feature by efficient leave-one-out cross-validation on
the probe's training states) from pooled activations
(:func:`druids.explain.features.probe_inputs`) to one feature of the state
(:func:`druids.data.diagnostics.state_features`), scored on *held-out* states:
the coefficient of determination R^2 for a continuous feature, the area under
the ROC curve (AUC) of the ridge score for a 0/1 feature (presence of a
cyclone). Alain & Bengio (2017, "Understanding intermediate layers using
linear classifier probes") introduced probes; Hewitt & Liang (2019) showed why
they need controls: a wide random projection of the input is itself a good
probe input.

So a feature counts as *represented* at a layer and noise level only where the
trained network beats both controls on the held-out states: the same probe on
the same layer of a randomly initialised network of the same architecture,
and on the raw network input. "Beats" means that the lower ``level`` quantile
of a paired bootstrap over held-out states (:func:`paired_bootstrap`) of the
score difference is above zero, for both controls (:func:`against_controls`);
and it must beat chance the same way (a constant prediction: R^2 = 0, AUC = 0.5),
or a probe that fails everywhere, only less badly than the controls (negative
R^2 all round), would count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: Ridge penalties searched by leave-one-out (features standardised, so relative to the number of features).
ALPHAS = np.logspace(-2, 6, 17)
METRICS = ("r2", "auc")


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, alphas=ALPHAS) -> np.ndarray:
    """Ridge probes fitted on ``train_x`` (n, F) -> ``train_y`` (n, K), one penalty per target chosen by
    leave-one-out; their predictions on ``test_x`` (m, F): (m, K)."""
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas, alpha_per_target=True))
    probe.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y, dtype=np.float64))
    return probe.predict(np.asarray(test_x, dtype=np.float64)).reshape(len(test_x), -1)


def score(metric: str, truth: np.ndarray, prediction: np.ndarray) -> float:
    """``"r2"``: coefficient of determination; ``"auc"``: ROC AUC of ``prediction`` for 0/1 ``truth`` (NaN with one class)."""
    if metric == "r2":
        return float(r2_score(truth, prediction))
    if metric == "auc":
        return float(roc_auc_score(truth, prediction)) if len(np.unique(truth)) == 2 else float("nan")
    raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")


def probe_predictions(
    train: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray], targets_train: pd.DataFrame, alphas=ALPHAS
) -> dict[str, pd.DataFrame]:
    """Held-out predictions ``{layer: (test states x features)}`` of probes from each layer's activations
    (``train``/``test``: ``{layer: (n, F)}``) to every column of ``targets_train`` (n rows)."""
    out = {}
    for layer, x in train.items():
        prediction = fit_predict(x, targets_train.values, test[layer], alphas)
        out[layer] = pd.DataFrame(prediction, columns=targets_train.columns)
    return out


def score_table(predictions: Mapping[tuple, pd.DataFrame], truth: pd.DataFrame, metrics: Mapping[str, str]) -> pd.DataFrame:
    """Held-out scores: one row per key of ``predictions`` (a tuple, e.g. ``(source, sigma, layer)``) and feature.

    ``metrics``: ``{feature: "r2" | "auc"}``. Columns: the key's parts as
    ``key0, key1, ...``, ``feature``, ``metric``, ``score``.
    """
    rows = []
    for key, prediction in predictions.items():
        for feature, metric in metrics.items():
            value = score(metric, truth[feature].values, prediction[feature].values)
            rows.append({**{f"key{i}": part for i, part in enumerate(key)}, "feature": feature, "metric": metric, "score": value})
    return pd.DataFrame(rows)


def paired_bootstrap(metric: str, truth: np.ndarray, first: np.ndarray, second: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap distribution (n_boot,) of ``score(first) - score(second)`` over held-out states resampled
    with replacement, the same resample for both (paired); resamples with one class only are dropped (AUC).
    All resamples at once (:func:`resampled_scores`): the same numbers as :func:`score` per resample."""
    rows = np.random.default_rng(seed).integers(0, len(truth), (n_boot, len(truth)))
    truth = np.asarray(truth)[rows]
    difference = resampled_scores(metric, truth, np.asarray(first)[rows]) - resampled_scores(metric, truth, np.asarray(second)[rows])
    return difference[~np.isnan(difference)] if metric == "auc" else difference


def resampled_scores(metric: str, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """:func:`score` of each row of ``truth`` and ``prediction`` (resamples x states), vectorised.

    ``"r2"``: ``1 - SS_res / SS_tot`` (1 for a perfect fit of constant truth, 0 for an imperfect one, as
    scikit-learn's ``r2_score``); ``"auc"``: the Mann-Whitney statistic from mid-ranks (ties count one half,
    as ``roc_auc_score``), NaN where a row has one class.
    """
    if metric == "r2":
        residual = ((truth - prediction) ** 2).sum(axis=1)
        total = ((truth - truth.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total > 0, 1 - residual / total, np.where(residual == 0, 1.0, 0.0))
    if metric == "auc":
        positive = truth == 1
        n_positive = positive.sum(axis=1)
        n_negative = truth.shape[1] - n_positive
        ranks = scipy.stats.rankdata(prediction, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = ((ranks * positive).sum(axis=1) - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
        return np.where((n_positive > 0) & (n_negative > 0), auc, np.nan)
    raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")


def against_controls(
    trained: pd.DataFrame, controls: Mapping[str, pd.DataFrame], truth: pd.DataFrame, metrics: Mapping[str, str],
    n_boot: int, seed: int, level: float = 0.05,
) -> pd.DataFrame:
    """Is each feature represented? The trained network's held-out predictions against each control's.

    ``trained`` and each of ``controls`` (name -> predictions): held-out
    predictions (test states x features) of the same probe. One row per
    feature: ``score`` (trained), ``score_<control>``, ``margin_<control>``
    (the lower ``level`` bootstrap quantile of trained minus control),
    ``margin_chance`` (the same against a constant prediction, the held-out
    mean: R^2 0, AUC 0.5) and ``represented`` (every margin > 0).
    """
    chance = pd.DataFrame({feature: np.full(len(truth), truth[feature].mean()) for feature in metrics})
    rows = []
    for feature, metric in metrics.items():
        y = truth[feature].values
        row = {"feature": feature, "metric": metric, "score": score(metric, y, trained[feature].values)}
        for name, control in {**controls, "chance": chance}.items():
            difference = paired_bootstrap(metric, y, trained[feature].values, control[feature].values, n_boot, seed)
            row[f"score_{name}"] = score(metric, y, control[feature].values)
            row[f"margin_{name}"] = float(np.quantile(difference, level)) if difference.size else float("nan")
        row["represented"] = all(row[f"margin_{name}"] > 0 for name in [*controls, "chance"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("feature")
