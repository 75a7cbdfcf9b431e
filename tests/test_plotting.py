"""Plotting: figure manifest, atomic savefig, maps with offline coastlines."""

import urllib.request

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
