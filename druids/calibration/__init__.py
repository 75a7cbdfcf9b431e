"""Calibration: are the ensembles right? Scores, the oracle comparison, the sampler study, recalibration.

Modules, one job each:

* :mod:`~druids.calibration.skill`: the quick skill check of chapter 02 (ensemble-mean
  RMSE against persistence and climatology) and its training validator;
* :mod:`~druids.calibration.scores`: fair CRPS, CRPS, RMSE, spread, spread-skill ratio,
  energy and variogram scores, latitude-weighted, with block-bootstrap intervals;
* :mod:`~druids.calibration.reliability`: rank histograms and their flatness test, PIT,
  CORP reliability diagrams and the Brier score decomposition;
* :mod:`~druids.calibration.spectra`: spread and error per total wavenumber;
* :mod:`~druids.calibration.oracle`: the Held–Suarez world's oracle ensembles in the
  forecast layout, and the model-versus-oracle comparison (energy distance, coverage,
  spread ratio);
* :mod:`~druids.calibration.ensembles`: model ensembles with controlled randomness
  (shared model noise, perturbed initial states, sampling temperature);
* :mod:`~druids.calibration.sampler_study`: the sampler sweep;
* :mod:`~druids.calibration.recalibration`: spread scaling, EMOS and the tuned temperature;
* :mod:`~druids.calibration.finetune`: the denoiser fine-tuned on the almost-fair CRPS of
  its own sampled members (in-model calibration);
* :mod:`~druids.calibration.wb2`: scoring WeatherBench2-layout ensembles;
* :mod:`~druids.calibration.experiments` and :mod:`~druids.calibration.tables`: the
  chapter's ensembles (model and oracle from the same states of a split, error sources)
  and its tidy tables.

Imports config, sphere, data, models, training and sampling; never
``druids.explain`` or ``druids.plotting``.
"""

from druids.calibration import ensembles, experiments, oracle, recalibration, reliability, sampler_study, scores, spectra, tables, wb2
from druids.calibration.oracle import oracle_forecast
from druids.calibration.skill import (
    SkillValidator,
    forecast_skill,
    persistence,
    rmse,
    skill_table,
    spread_skill,
    verifying_truth,
)

__all__ = [
    "SkillValidator",
    "ensembles",
    "experiments",
    "forecast_skill",
    "oracle",
    "oracle_forecast",
    "persistence",
    "recalibration",
    "reliability",
    "sampler_study",
    "scores",
    "rmse",
    "skill_table",
    "spectra",
    "spread_skill",
    "tables",
    "verifying_truth",
    "wb2",
]
