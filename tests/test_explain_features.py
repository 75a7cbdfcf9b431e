"""Meteorological features of hand-made states with a known answer, and the U-Net's activations through hooks."""

import numpy as np
import pytest
import torch
import xarray as xr

from druids.config import ModelConfig
from druids.data import diagnostics
from druids.explain import features
from druids.models import build_denoiser

LATITUDES = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(32)[0]))
LONGITUDES = np.arange(64) * 360.0 / 64
REGION = ((30.0, 70.0), (0.0, 90.0))


def field(values) -> xr.DataArray:
    return xr.DataArray(np.broadcast_to(values, (32, 64)).copy(), dims=("latitude", "longitude"), coords={"latitude": LATITUDES, "longitude": LONGITUDES})


def bump(lat0: float, lon0: float, amplitude: float, width: float = 8.0) -> np.ndarray:
    """A Gaussian bump (lat, lon) of ``amplitude`` at (lat0, lon0), ``width`` degrees, periodic in longitude."""
    dlon = (LONGITUDES[None, :] - lon0 + 180.0) % 360.0 - 180.0
    return amplitude * np.exp(-((LATITUDES[:, None] - lat0) ** 2 + dlon**2) / (2 * width**2))


def test_box_mean_weights_by_area_inside_the_region_only():
    inside = diagnostics.region_mask(LATITUDES, LONGITUDES, REGION)
    assert float(diagnostics.box_mean(field(inside.values.astype(float) * 3.0 + 7.0 * ~inside.values), REGION)) == pytest.approx(3.0)
    latitude_field = field(LATITUDES[:, None])
    rows = (LATITUDES >= 30) & (LATITUDES <= 70)
    expected = np.average(LATITUDES[rows], weights=np.cos(np.deg2rad(LATITUDES[rows])))
    assert float(diagnostics.box_mean(latitude_field, REGION)) == pytest.approx(expected)
    wrapped = diagnostics.region_mask(LATITUDES, LONGITUDES, ((30.0, 70.0), (300.0, 30.0)))
    assert bool(wrapped.sel(longitude=0.0).any()) and not bool(wrapped.sel(longitude=180.0).any())


def test_eddy_kinetic_energy_counts_only_the_departures_from_the_zonal_mean():
    lon = np.deg2rad(LONGITUDES)
    u = field(20.0 + 4.0 * np.cos(3 * lon))  # a 20 m/s jet carries no eddy energy
    v = field(2.0 * np.sin(5 * lon))
    assert float(diagnostics.eddy_kinetic_energy(u, v)) == pytest.approx(0.5 * (16.0 / 2 + 4.0 / 2))
    assert float(diagnostics.eddy_kinetic_energy(field(20.0), field(0.0))) == pytest.approx(0.0)


def test_baroclinicity_is_the_poleward_temperature_drop_per_1000_km():
    y_km = np.deg2rad(LATITUDES) * diagnostics.EARTH_RADIUS_KM
    gradient = 5.0  # K per 1000 km, cold at both poles
    temperature = field((290.0 - gradient * np.abs(y_km) / 1000.0)[:, None])
    assert float(diagnostics.baroclinicity(temperature, "north")) == pytest.approx(gradient, rel=1e-6)
    assert float(diagnostics.baroclinicity(temperature, "south")) == pytest.approx(gradient, rel=1e-6)
    warm_pole = field((290.0 + gradient * y_km / 1000.0)[:, None])  # warmer to the north everywhere
    assert float(diagnostics.baroclinicity(warm_pole, "north")) == pytest.approx(-gradient, rel=1e-6)
    with pytest.raises(ValueError, match="hemisphere"):
        diagnostics.baroclinicity(temperature, "east")


def test_pressure_extrema_find_the_lows_and_highs_above_threshold_in_the_region():
    lat0, lon0 = LATITUDES[26], LONGITUDES[7]  # 52.6 N, 39.4 E
    pressure = 1.0e5 + 100.0 * (bump(lat0, lon0, -30.0) + bump(45.0, 200.0, 25.0) + bump(63.0, 80.0, -8.0))
    extrema = diagnostics.pressure_extrema(field(pressure), REGION, threshold_hpa=15.0)
    assert list(extrema.kind) == ["cyclone"]  # the high is outside the region, the weak low below threshold
    low = extrema.iloc[0]
    assert (low.latitude, low.longitude) == (lat0, lon0)
    assert low.amplitude_hpa == pytest.approx(30.0, rel=0.1)  # less the bump's share of the zonal mean
    everywhere = diagnostics.pressure_extrema(field(pressure), ((30.0, 70.0), (90.5, 89.5)), threshold_hpa=15.0)
    assert sorted(everywhere.kind) == ["anticyclone", "cyclone"]
    none = diagnostics.strongest_extremum(extrema, "anticyclone")
    assert none["present"] == 0.0 and none["amplitude_hpa"] == 0.0 and np.isnan(none["latitude"])
    assert diagnostics.strongest_extremum(extrema, "cyclone")["present"] == 1.0


def state(u_jet_north: float, pressure: np.ndarray) -> xr.Dataset:
    """One state at two levels with a parabolic north jet of speed ``u_jet_north`` at 40 N and a 30 m/s south jet."""
    zonal = np.where(LATITUDES > 0, u_jet_north - 0.02 * (LATITUDES - 40.0) ** 2, 30.0 - 0.02 * (LATITUDES + 40.0) ** 2)
    level = lambda values: np.broadcast_to(values, (2, 32, 64)).copy()  # noqa: E731
    dims = ("level", "latitude", "longitude")
    y_km = np.deg2rad(LATITUDES) * diagnostics.EARTH_RADIUS_KM
    return xr.Dataset(
        {"u_component_of_wind": (dims, level(zonal[:, None])), "v_component_of_wind": (dims, level(np.zeros((32, 64)))),
         "temperature": (dims, level((280.0 - 4.0 * np.abs(y_km)[:, None] / 1000.0))), "surface_pressure": (("latitude", "longitude"), pressure)},
        coords={"level": [300.0, 500.0], "latitude": LATITUDES, "longitude": LONGITUDES},
    )  # fmt: skip


def test_state_features_reads_jets_cyclones_and_the_coming_change():
    pressure = 1.0e5 + 100.0 * bump(LATITUDES[26], LONGITUDES[7], -30.0)
    states = xr.concat([state(25.0, pressure), state(35.0, np.full((32, 64), 1.0e5))], dim="time").assign_coords(time=[0, 1])
    later = states.copy(deep=True)
    later["surface_pressure"] = states.surface_pressure + 150.0
    table = diagnostics.state_features(states, later, upper=300.0, middle=500.0, region=REGION, threshold_hpa=15.0)
    np.testing.assert_allclose(table.jet_speed_north, [25.0, 35.0], atol=1e-6)
    np.testing.assert_allclose(table.jet_latitude_north, 40.0, atol=1e-6)
    np.testing.assert_allclose(table.jet_speed_south, 30.0, atol=1e-6)
    np.testing.assert_allclose(table.baroclinicity_north, 4.0, rtol=1e-6)
    np.testing.assert_allclose(table.eddy_kinetic_energy, 0.0, atol=1e-9)
    assert list(table.cyclone) == [1.0, 0.0] and list(table.anticyclone) == [0.0, 0.0]
    assert (table.cyclone_latitude.iloc[0], table.cyclone_longitude.iloc[0]) == (LATITUDES[26], LONGITUDES[7])
    np.testing.assert_allclose(table.pressure_change_hpa, 1.5, rtol=1e-6)


# ------------------------------------------------------------------------------------------------- hooks


@pytest.fixture(scope="module")
def small_denoiser():
    torch.manual_seed(0)
    cfg = ModelConfig(base_channels=4, channel_mults=(1, 2, 2), blocks_per_level=2, zonal_mixing=2)
    return build_denoiser(cfg, 2, 3).eval().requires_grad_(False)


def test_hooks_record_what_the_network_returns_as_features(small_denoiser):
    net = small_denoiser.net
    y, c = torch.randn(2, 2, 8, 16), torch.randn(2, 3, 8, 16)
    names = [features.NETWORK_INPUT, *features.layer_names(net)]
    with features.Hooks(small_denoiser, names) as hooks:
        small_denoiser.denoise(y, c, 0.7)
    assert not net._forward_hooks and not net._forward_pre_hooks  # removed on exit
    sigma = torch.full((2,), 0.7)
    c_in = 1.0 / torch.sqrt(sigma**2 + 1.0)[:, None, None, None]
    z = torch.cat([c_in * y, c], dim=1)
    torch.testing.assert_close(hooks.outputs[features.NETWORK_INPUT], z)
    _, expected = net(z, torch.log(sigma) / 4, return_features=True)
    assert set(expected) == set(features.layer_names(net))
    for name, tensor in expected.items():
        torch.testing.assert_close(hooks.outputs[name], tensor)
    with pytest.raises(ValueError, match="No layer"):
        features.Hooks(small_denoiser, ["encoder.7.0"])


def test_level_layers_name_each_resolution_once(small_denoiser):
    net = small_denoiser.net
    assert features.bottleneck(net) == "mixing"
    assert features.level_layers(net) == ["encoder.0.1", "encoder.1.1", "mixing", "decoder.2.1", "decoder.1.1", "decoder.0.1"]
    plain = build_denoiser(ModelConfig(base_channels=4, channel_mults=(1, 2), blocks_per_level=1), 2, 3).net
    assert features.level_layers(plain) == ["encoder.0.0", "encoder.1.0", "decoder.1.0", "decoder.0.0"]


def test_replace_output_intervenes_and_pooled_probe_inputs_have_the_pool_shape(small_denoiser):
    y, c = torch.randn(3, 2, 8, 16), torch.randn(3, 3, 8, 16)
    plain = small_denoiser.denoise(y, c, 1.0)
    with features.replace_output(small_denoiser, "mixing", lambda h: h):
        torch.testing.assert_close(small_denoiser.denoise(y, c, 1.0), plain)
    with features.replace_output(small_denoiser, "mixing", lambda h: 3.0 * h):
        assert not torch.allclose(small_denoiser.denoise(y, c, 1.0), plain)
    torch.testing.assert_close(small_denoiser.denoise(y, c, 1.0), plain)  # the hook is gone
    inputs = features.probe_inputs(small_denoiser, y, c, 1.0, [features.NETWORK_INPUT, "mixing"], (2, 4), seed=0, batch=2)
    assert inputs[features.NETWORK_INPUT].shape == (3, 5 * 8) and inputs["mixing"].shape == (3, 8 * 8)
    again = features.probe_inputs(small_denoiser, y, c, 1.0, ["mixing"], (2, 4), seed=0, batch=3)
    np.testing.assert_allclose(again["mixing"], inputs["mixing"], rtol=1e-5, atol=1e-6)
