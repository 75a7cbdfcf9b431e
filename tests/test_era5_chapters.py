"""The smoke chapters 01-03 end to end on the Held–Suarez world written in ERA5's conventions (tests/wb2.py),
as ``druids run 01_data 02_training 03_sampling --profile smoke --data STORE`` runs them (about 3 minutes on
2 CPU cores: three kernels, two 20-step trainings, the quick ensembles and the sampler timings)."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

import wb2
from druids import cli

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
    assert "samplingClimateDays" not in sampling  # the free run against the world's climate is skipped


def test_held_suarez_only_parts_are_skipped_visibly(era5_run):
    store, out, notebooks = era5_run
    for stem, skipped in (("01_data", 2), ("03_sampling", 3)):
        assert printed(notebooks[stem]).count(f"Skipped on {store}") == skipped
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"data_snapshots", "training_loss_curves", "sampling_spread_skill", "sampling_cost"} <= figures
    assert not figures & {"data_predictability", "data_noise_effect", "sampling_oracle_maps", "sampling_climate"}
