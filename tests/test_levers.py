"""The lever studies' free-run measure on the smoke world with known models: a model that keeps the state
lasts the whole run, one that amplifies it leaves the world's range at once; results are cached."""

import dataclasses

import pandas as pd
import pytest

from druids.calibration import levers
from druids.data.source import open_dataset
from druids.training import TrainedModel
from known_models import Analytic

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def with_model(monkeypatch, cfg, fn):
    """``levers`` measuring ``Analytic(fn)`` as the trained model of ``cfg``; returns how often it was asked for."""
    _, stats = open_dataset(cfg, progress=False)
    asked = []

    def trained(config, progress):
        asked.append(config)
        return TrainedModel(Analytic(fn), stats, pd.DataFrame(), None), 0.0

    monkeypatch.setattr(levers, "_trained", trained)
    return asked


def test_a_persistent_model_lasts_and_an_exploding_one_does_not(smoke_store, smoke_config, monkeypatch, tmp_path):
    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path))
    n_channels = len(open_dataset(smoke_config, progress=False)[1].channel_names)
    asked = with_model(monkeypatch, smoke_config, lambda y, c, sigma: 0.0 * y)  # residual 0 (then minus its bias)
    steady = levers.trained_free_run(smoke_config, "val", 1.0, 2, progress=False)
    assert steady["stable_days"] == [1.0, 1.0] and steady["all_stable"] == 2
    assert levers.trained_free_run(smoke_config, "val", 1.0, 2, progress=False) == steady and len(asked) == 1  # cached

    exploding = dataclasses.replace(smoke_config, seed=smoke_config.seed + 1)  # another configuration, not the cache
    with_model(monkeypatch, exploding, lambda y, c, sigma: 0.0 * y + 50.0 * c[:, :n_channels])
    gone = levers.trained_free_run(exploding, "val", 1.0, 2, progress=False)
    assert gone["all_stable"] == 0 and max(gone["stable_days"]) < 1.0
