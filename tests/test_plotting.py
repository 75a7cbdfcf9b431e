"""Plotting: figure manifest, atomic savefig, maps with offline coastlines."""

import urllib.request

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from druids import paths, plotting  # noqa: E402
from druids.data.era5 import ERA5_ATTRIBUTION, open_era5_sample  # noqa: E402

CHAPTER_01 = ["data_snapshots", "data_zonal_climate", "data_ke_spectrum", "data_predictability", "data_noise_effect", "data_era5_sample"]


@pytest.fixture
def figures(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "FIGURES", tmp_path / "figures")
    return tmp_path / "figures"


def test_manifest():
    manifest = plotting.load_manifest()
    for name in CHAPTER_01:
        assert manifest[name]["chapter"] == "01_data" and manifest[name]["caption"]
    assert ERA5_ATTRIBUTION in manifest["data_era5_sample"]["caption"]


def test_era5_map_with_coastlines_offline(figures, monkeypatch):
    calls = []

    def no_network(*args, **kwargs):
        calls.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    plotting.set_style()
    t2m = open_era5_sample()["2m_temperature"].isel(time=0)
    fig = plt.figure(figsize=(7, 4))
    ax = plotting.map_axes(fig)
    plotting.plot_map(t2m, ax, coastlines=True, cmap="RdYlBu_r")
    png, pdf = plotting.savefig(fig, "data_era5_sample")
    plt.close(fig)

    assert calls == []
    assert png == figures / "data_era5_sample.png" and pdf.suffix == ".pdf"
    assert png.stat().st_size > 20_000 and pdf.stat().st_size > 5_000
    assert sorted(p.name for p in figures.iterdir()) == ["data_era5_sample.pdf", "data_era5_sample.png"]  # no temp files
    image = plt.imread(png)
    assert image.shape[0] > 300 and image[..., :3].std() > 0.1


def test_coastlines_from_land_mask():
    fraction = plotting.land_fraction()
    assert fraction.shape == (360, 720)
    assert 0.25 < float(fraction.weighted(np.cos(np.deg2rad(fraction.latitude))).mean()) < 0.35  # Earth: ~0.29
    assert float(fraction.sel(latitude=48.9, longitude=2.3, method="nearest")) == 1  # Paris
    assert float(fraction.sel(latitude=0, longitude=-140, method="nearest")) == 0  # Pacific


def test_cartopy_cannot_download():
    import cartopy.io.shapereader as shapereader

    with pytest.raises(RuntimeError, match="never downloads"):
        shapereader.natural_earth(resolution="110m", category="physical", name="coastline")


def test_unlisted_figure(figures):
    fig = plt.figure()
    with pytest.raises(ValueError, match=r"not listed in .*figures.toml; add a table \[figures.my_plot\]"):
        plotting.savefig(fig, "my_plot")
    plt.close(fig)
    assert not figures.exists()


def test_spectrum_and_aquaplanet_map(figures):
    k = np.arange(32)
    spectrum = xr.DataArray(1.0 / (1 + k) ** 3, coords={"wavenumber": k}, dims="wavenumber", name="kinetic_energy")
    ax = plotting.plot_spectrum(spectrum)
    assert ax.get_xscale() == "log" and len(ax.lines[0].get_xdata()) == 31
    field = xr.DataArray(
        np.random.default_rng(0).standard_normal((32, 64)),
        coords={"latitude": np.linspace(-87, 87, 32), "longitude": np.arange(64) * 5.625},
        dims=("latitude", "longitude"),
        attrs={"units": "K", "long_name": "temperature"},
    )
    ax = plotting.plot_map(field, method="contourf")
    assert ax.figure.axes[-1].get_xlabel() == "temperature [K]"
    plt.close("all")


# ------------------------------------------------------------------ the chapters' composite figures

GRID = {"latitude": np.linspace(-84.375, 84.375, 16), "longitude": np.arange(32) * 11.25}
LEADS = (np.array([12, 24]) * 3600 * 10**9).astype("timedelta64[ns]")


def ensemble(n_members: int = 3, scale: float = 1.0, seed: int = 0) -> xr.DataArray:
    """Random temperatures of dims (member, lead_time, latitude, longitude), K."""
    values = 280 + scale * np.random.default_rng(seed).standard_normal((n_members, len(LEADS), 16, 32))
    coords = {"member": np.arange(n_members), "lead_time": LEADS, **GRID}
    return xr.DataArray(values, coords=coords, dims=tuple(coords), name="temperature", attrs={"units": "K", "long_name": "air temperature"})


def map_panels(fig):
    return [ax for ax in fig.axes if hasattr(ax, "projection")]


def test_package_keeps_its_public_names_and_imports_no_later_stage():
    import subprocess
    import sys

    for name in ("set_style", "savefig", "map_axes", "plot_map", "add_coastlines", "land_fraction", "plot_spectrum", "load_manifest", "manifest_path"):
        assert callable(getattr(plotting, name)), name
    code = "import sys, druids.plotting; print(sorted(m for m in sys.modules if m.startswith('druids.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "druids.plotting.maps" in loaded
    for stage in ("druids.data", "druids.models", "druids.training", "druids.sampling", "druids.calibration"):
        assert f"'{stage}" not in loaded, f"plotting imports {stage}"


def test_ensemble_maps_rows_of_truth_members_mean_and_spread():
    ens = ensemble()
    fig = plotting.ensemble_maps(ens, ens.isel(member=0), "RdBu_r", title="temperature test")
    panels = map_panels(fig)
    assert len(panels) == 2 * 5 and fig._suptitle.get_text() == "temperature test"
    assert [ax.get_title() for ax in panels[:5]] == ["truth, +12 h", "member 0, +12 h", "member 1, +12 h", "ensemble mean, +12 h", "ensemble spread, +12 h"]
    assert panels[5].get_title() == "truth, +24 h"
    truth = ens.isel(member=0, lead_time=0)
    assert panels[1].collections[0].get_clim() == pytest.approx((float(truth.min()), float(truth.max())))  # the truth's range
    spread_values = panels[4].collections[0].get_array()
    assert spread_values.max() == pytest.approx(float(ens.isel(lead_time=0).std("member", ddof=1).max()))
    centred = plotting.ensemble_maps(ens - 280, ens.isel(member=0) - 280, "PuOr_r", centred=True)
    low, high = map_panels(centred)[0].collections[0].get_clim()
    assert low == pytest.approx(-high) and high > 0
    plt.close("all")


def test_ensemble_comparison_maps_share_the_reference_spread_scale():
    model, oracle = ensemble(scale=1.0).isel(lead_time=1), ensemble(scale=2.0, seed=1).isel(lead_time=1)
    fig = plotting.ensemble_comparison_maps({"model": model, "oracle": oracle}, oracle.isel(member=0), "RdBu_r", spread_reference="oracle")
    panels = map_panels(fig)
    assert [ax.get_title() for ax in panels] == [
        f"{label} {title}, +24 h" for label in ("model", "oracle") for title in ("member 0", "ensemble mean", "spread")
    ]
    vmax = 1.2 * float(oracle.std("member", ddof=1).max())
    assert panels[2].collections[0].get_clim() == pytest.approx((0, vmax)) and panels[5].collections[0].get_clim() == pytest.approx((0, vmax))
    plt.close("all")


def test_spread_skill_curves_one_panel_per_field():
    coords = {"field": ["temperature@562.5", "u_component_of_wind@312.5"], "lead_time": LEADS}
    curve = xr.Dataset({k: (("field", "lead_time"), np.ones((2, 2))) for k in ("spread", "rmse")}, coords=coords)
    fig = plotting.spread_skill_curves({"model": curve, "oracle": curve * 2})
    assert [ax.get_title() for ax in fig.axes] == ["temperature at 562.5 hPa [K]", "u_component_of_wind at 312.5 hPa [m s-1]"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["area-weighted RMS [K]", "area-weighted RMS [m s-1]"]
    assert all(len(ax.lines) == 4 for ax in fig.axes)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [0.5, 1.0])  # days
    plt.close("all")


def test_ensemble_spectra_one_log_panel_per_lead():
    k = np.arange(22)
    energy = xr.DataArray(
        np.broadcast_to(1.0 / (1 + k) ** 3, (1, 3, 2, 22)).copy(),
        coords={"init_time": [np.datetime64("2000-01-01", "ns")], "member": [0, 1, 2], "lead_time": LEADS, "zonal_wavenumber": k},
        dims=("init_time", "member", "lead_time", "zonal_wavenumber"),
    )
    fig = plotting.ensemble_spectra({"model": energy, "oracle": 2 * energy}, energy.isel(member=0), title="312.5 hPa")
    assert [ax.get_title() for ax in fig.axes] == ["312.5 hPa, +12 h", "312.5 hPa, +24 h"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert len(ax.lines) == 3 and len(ax.collections) == 2  # two member means and the truth; two member ranges
        assert len(ax.lines[0].get_xdata()) == 21  # wavenumber 0 left out
    plt.close("all")


def test_climate_figure_panels():
    levels, lat = np.array([312.5, 562.5, 812.5]), GRID["latitude"]
    u = xr.DataArray(20 * np.cos(np.deg2rad(lat))[None, :] * np.ones((3, 1)), coords={"level": levels, "latitude": lat}, dims=("level", "latitude"))
    zonal = xr.Dataset({"u_component_of_wind": u.assign_attrs(units="m s-1"), "temperature": (260 + u).assign_attrs(units="K")})
    days = (np.arange(5) * 6 * 3600 * 10**9).astype("timedelta64[ns]")
    rms = xr.DataArray(np.ones((2, 5)), coords={"member": [0, 1], "lead_time": days}, dims=("member", "lead_time"))
    times = np.datetime64("2000-01-01T00", "ns") + days
    world_rms = xr.DataArray(np.ones(5), coords={"time": times}, dims="time")
    fig = plotting.climate_figure(
        zonal, zonal, [("u_component_of_wind", 312.5), ("temperature", 812.5)], {"churn 0": rms, "churn 2.5": rms}, world_rms, ("u_component_of_wind", 312.5)
    )
    section, profile_u, profile_t, series = fig.axes[:4]
    assert section.get_title() == "zonal-mean u: model (filled), world (contours)" and section.yaxis_inverted()
    assert profile_u.get_title() == "zonal-mean u_component_of_wind at 312.5 hPa" and profile_u.get_ylabel() == "zonal mean [m s-1]"
    assert profile_t.get_title() == "zonal-mean temperature at 812.5 hPa" and len(profile_t.lines) == 2
    assert len(series.lines) == 2 * 2 + 1 and series.get_title() == "stability: RMS u_component_of_wind at 312.5 hPa"
    assert [t.get_text() for t in series.get_legend().get_texts()] == ["churn 0", "churn 2.5", "world (data store)"]
    plt.close("all")


def test_sampler_cost_bars_colour_by_model():
    cost = pd.DataFrame(
        {"model": ["edm", "edm", "flow"], "nfe_per_step": [11, 11, 6], "ms_per_member_step": [90.0, 95.0, 70.0]},
        index=pd.Index(["edm", "dpmpp_2s", "flow_euler"], name="sampler"),
    )
    fig = plotting.sampler_cost_bars(cost, "cpu", title="6 noise levels")
    nfe, ms = fig.axes
    assert [bar.get_height() for bar in nfe.patches] == [11, 11, 6] and [bar.get_height() for bar in ms.patches] == [90.0, 95.0, 70.0]
    colours = [bar.get_facecolor() for bar in nfe.patches]
    assert colours[0] == colours[1] != colours[2]
    assert ms.get_ylabel() == "wall time per member-step [ms] (cpu)" and fig._suptitle.get_text() == "6 noise levels"
    plt.close("all")


def test_grid_image_centres_on_its_own_largest_magnitude_and_labels_degrees():
    latitude = np.linspace(-87.2, 87.2, 32)
    field = np.zeros((32, 64))
    field[5, 7], field[20, 40] = 3.0, -1.0
    fig, ax = plt.subplots()
    image = plotting.grid_image(ax, field, latitude, centred=True, cmap="RdBu_r", title="t")
    assert image.get_clim() == (-3.0, 3.0)
    assert image.get_extent() == [0, 360, -87.2, 87.2]
    assert "deg" in ax.get_xlabel() and "deg" in ax.get_ylabel()
    assert plotting.grid_image(ax, np.zeros((32, 64)), latitude, centred=True).get_clim() == (-1.0, 1.0)
    plt.close(fig)


def test_oracle_skill_curves_draw_both_ratios_by_lead_and_the_one_step_ratio_by_latitude():
    leads = (np.arange(1, 4) * np.timedelta64(6, "h")).astype("timedelta64[ns]")
    fields = ["temperature@562.5", "u_component_of_wind@312.5"]
    skill = xr.Dataset({"ratio": (("field", "lead_time"), [[3.0, 2.0, 1.5], [2.0, 1.8, 1.2]]),
                        "spread_ratio": (("field", "lead_time"), [[2.0, 1.5, 1.2], [1.1, 1.0, 0.9]])},
                       coords={"field": fields, "lead_time": leads})  # fmt: skip
    latitude = np.linspace(-80, 80, 5)
    one_step = xr.Dataset({"ratio": (("field", "latitude"), np.full((2, 5), 4.0))}, coords={"field": fields, "latitude": latitude}, attrs={"lead_hours": 6.0})
    fig = plotting.oracle_skill_curves(skill, one_step)
    by_lead, by_latitude = fig.axes
    assert len(by_lead.lines) == 2 * 2 + 1 and len(by_latitude.lines) == 2 + 1  # + the oracle's line at 1
    np.testing.assert_allclose(by_lead.lines[0].get_xdata(), [6, 12, 18])
    np.testing.assert_allclose(by_lead.lines[1].get_ydata(), [2.0, 1.5, 1.2])
    assert "6 h" in by_latitude.get_title() and "[h]" in by_lead.get_xlabel()
    plt.close(fig)
