"""The smoke chapters 01-03 end to end on the Held–Suarez world written in ERA5's conventions (tests/wb2.py),
as ``druids run 01_data 02_training 03_sampling --profile smoke --data STORE`` runs them (about 3 minutes on
2 CPU cores: three kernels, two 20-step trainings, the quick ensembles and the sampler timings).

Chapter 05 (calibration) is checked through its functions on the same store and trained model (seconds),
not run whole: its smoke run on the store costs about a minute more (59 s measured on 2 busy CPU cores).
"""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pytest
import torch

import wb2
from druids import calibration, cli, training
from druids.calibration import experiments, scores, tables
from druids.config import objective_config, with_data
from druids.data import source, splits
from druids.data.diagnostics import field_stack
from druids.data.normalisation import static_condition

CHAPTERS = ("01_data", "02_training", "03_sampling")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def era5_run(smoke_store, smoke_config, tmp_path_factory):
    """Chapters 01-03 executed on the ERA5-schema store; figures, values and notebooks in a directory of their own."""
    store = wb2.world_era5_store(smoke_config.world)
    out = tmp_path_factory.mktemp("era5-run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRUIDS_FIGURES", str(out / "figures"))  # the chapters' kernels inherit these
        patch.setenv("DRUIDS_VALUES", str(out / "values"))
        notebooks = {stem: cli.execute_chapter(stem, "smoke", 0, output_dir=out / "notebooks", data=store) for stem in CHAPTERS}
    return store, out, notebooks


def printed(notebook_path) -> str:
    """All stream output of an executed notebook."""
    cells = nbformat.read(notebook_path, as_version=4).cells
    return "".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.get("outputs", []))


def values(out, chapter) -> dict[str, str]:
    text = (out / "values" / f"{chapter}.tex").read_text()
    return dict(re.findall(r"\\newcommand\{\\(\w+)\}\{([^}]*)\}", text))


def test_chapters_run_on_the_era5_schema_store(era5_run):
    store, out, notebooks = era5_run
    for stem in CHAPTERS:
        assert notebooks[stem].exists() and (out / "values" / f"{stem}.tex").exists()
    config_cell = nbformat.read(notebooks["01_data"], as_version=4).cells
    assert any(json.dumps(store) in c.source for c in config_cell)  # the store was injected as data_source
    data = values(out, "01_data")
    assert -90 < float(data["dataJetNorthLat"]) < 90 and "dataSpreadRatioT" not in data  # no oracle on a store
    training = values(out, "02_training")
    assert float(training["trainEdmTwentyFourRmseT"]) < float(training["trainClimatologyTwentyFourRmseT"])
    sampling = values(out, "03_sampling")
    assert float(sampling["samplingSpreadModelT"]) > 0 and "samplingRmseOracleT" not in sampling
    assert "samplingOracleRatioSixT" not in sampling and "samplingOneStepRatioT" not in sampling
    assert "samplingClimateDays" not in sampling  # the free run against the world's climate is skipped


def test_held_suarez_only_parts_are_skipped_visibly(era5_run):
    store, out, notebooks = era5_run
    for stem, skipped in (("01_data", 2), ("03_sampling", 4)):  # 03: oracle ensembles and maps, skill against the oracle, free runs
        assert printed(notebooks[stem]).count(f"Skipped on {store}") == skipped
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"data_snapshots", "training_loss_curves", "sampling_spread_skill", "sampling_cost"} <= figures
    assert not figures & {"data_predictability", "data_noise_effect", "sampling_oracle_maps", "sampling_oracle_skill", "sampling_climate"}


def test_calibration_functions_on_the_era5_schema_store(era5_run, smoke_config):
    """Chapter 05's steps on the store with chapter 02's EDM model: the condition carries the store's static fields,
    model ensembles without an oracle are scored, events are set from the statistics' climatology, and the
    quick skill check steps by the data."""
    store = era5_run[0]
    cfg = with_data(smoke_config, store)
    data, stats = source.open_dataset(cfg, progress=False)
    run = training.load_trained(objective_config(cfg, "edm"), progress=False, device="cpu")
    assert stats.static_channel_names[-2:] == ["land_sea_mask", "geopotential_at_surface"]
    static = torch.from_numpy(static_condition(stats))
    assert static.shape[0] == 6 and torch.isfinite(static).all()
    fields = cfg.levels.skill_fields
    times = experiments.split_init_times(data, cfg, "test", 2, 2)
    ens = experiments.model_and_oracle(run.denoiser.eval(), stats, data, cfg, times, 2, with_oracle=False)
    model, oracle, truth = ens.fields(fields)
    assert oracle is None and model.sizes["member"] == cfg.calibration.n_members
    card = scores.scorecard(model, truth, n_boot=5).sel(bound="estimate")
    assert bool(np.isfinite(card.crps_fair).all()) and bool((card.ssr > 0).all())
    assert "energy_distance" not in tables.summary(model, truth, None, n_boot=5)
    train = field_stack(splits.split(data, cfg.dataset, "train"), fields).astype("float64")
    threshold = experiments.event_thresholds(data, stats, cfg, fields)  # this store's training split is short: every time
    np.testing.assert_allclose(threshold, train.mean("time") + cfg.calibration.event_std * train.std("time"), rtol=1e-5, atol=1e-5)
    forecast, table = calibration.forecast_skill(run.denoiser.eval(), stats, data, cfg, progress=False)
    assert forecast.lead_time.values[-1] == np.timedelta64(max(cfg.skill.leads_hours), "h")
    assert bool(np.isfinite(table.to_numpy()).all()) and (table["model"] < table["climatology"]).all()
