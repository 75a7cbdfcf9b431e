"""Diagnostics of gridded states on hand-made fields with a known answer: jets and kinetic-energy spectra."""

import numpy as np
import pytest
import xarray as xr

from druids.data import diagnostics

LATITUDES = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(32)[0]))  # the 64 x 32 Gaussian grid
LONGITUDES = np.arange(64) * 360.0 / 64


def parabolic_jets(north: tuple[float, float], south: tuple[float, float], curvature: float = 0.02) -> xr.DataArray:
    """Zonal-mean u (m/s) that is, in each hemisphere, a parabola peaking at (speed, latitude)."""
    (north_speed, north_lat), (south_speed, south_lat) = north, south
    u = np.where(
        LATITUDES > 0,
        north_speed - curvature * (LATITUDES - north_lat) ** 2,
        south_speed - curvature * (LATITUDES - south_lat) ** 2,
    )
    return xr.DataArray(u, coords={"latitude": LATITUDES}, dims="latitude", attrs={"units": "m s-1"})


def test_jet_peaks_find_a_jet_between_grid_points():
    """The parabolic refinement recovers a peak that lies between the ~5.6-degree grid points exactly."""
    jets = diagnostics.jet_peaks(parabolic_jets(north=(30.0, 41.3), south=(25.0, -37.9)))
    assert list(jets) == ["north", "south"]
    np.testing.assert_allclose(jets["north"], (30.0, 41.3), atol=1e-9)
    np.testing.assert_allclose(jets["south"], (25.0, -37.9), atol=1e-9)
    with pytest.raises(ValueError, match="hemisphere"):
        diagnostics.jet_peak(parabolic_jets((30.0, 41.3), (25.0, -37.9)), "east")


def test_compare_jets_gives_each_hemisphere_and_the_relative_speed_difference():
    world = parabolic_jets(north=(30.0, 40.0), south=(20.0, -40.0))
    model = parabolic_jets(north=(36.0, 30.0), south=(18.0, -45.0))  # 20 % too fast, 10 % too slow
    jets = diagnostics.compare_jets(model, world)
    assert list(jets.index) == ["north", "south"] and jets.index.name == "hemisphere"
    np.testing.assert_allclose(jets["model_speed"], [36.0, 18.0], atol=1e-9)
    np.testing.assert_allclose(jets["model_latitude"], [30.0, -45.0], atol=1e-9)
    np.testing.assert_allclose(jets["world_speed"], [30.0, 20.0], atol=1e-9)
    np.testing.assert_allclose(jets["world_latitude"], [40.0, -40.0], atol=1e-9)
    np.testing.assert_allclose(jets["relative_speed_difference"], [0.2, 0.1], atol=1e-9)
    assert jets["relative_speed_difference"].mean() == pytest.approx(0.15)
    assert (diagnostics.compare_jets(world, world)["relative_speed_difference"] == 0).all()


def waves(amplitudes: dict[int, float], phase: float = 0.0) -> np.ndarray:
    """Sum over k of a_k cos(k lon + phase) on the grid, the same at every latitude: (latitude, longitude)."""
    lon = np.deg2rad(LONGITUDES)
    row = sum(a * np.cos(k * lon + phase) for k, a in amplitudes.items())
    return np.broadcast_to(row, (len(LATITUDES), len(LONGITUDES)))


def wind_store() -> xr.Dataset:
    """Winds on two levels: at 300 hPa u has waves 3 and 9 and v wave 12; at 700 hPa everything is halved."""
    u, v = waves({3: 4.0, 9: 2.0}), waves({12: 1.0}, phase=0.7)
    coords = {"level": [300.0, 700.0], "latitude": LATITUDES, "longitude": LONGITUDES}
    dims = ("level", "latitude", "longitude")
    return xr.Dataset(
        {"u_component_of_wind": (dims, np.stack([u, u / 2])), "v_component_of_wind": (dims, np.stack([v, v / 2]))}, coords=coords
    )


def test_kinetic_energy_spectrum_of_known_waves():
    """A wave of amplitude a at zonal wavenumber k holds a^2 / 4 at k (E = (|u_k|^2 + |v_k|^2) / 2, one-sided)."""
    store = wind_store()
    spectrum = diagnostics.level_kinetic_energy_spectrum(store, 300.0)
    expected = np.zeros(33)
    expected[[3, 9, 12]] = [4.0**2 / 4, 2.0**2 / 4, 1.0**2 / 4]
    np.testing.assert_allclose(spectrum.values, expected, atol=1e-12)
    assert spectrum.attrs["units"] == "m2 s-2" and spectrum.dims == ("zonal_wavenumber",)
    zonal_mean_energy = float(((store.u_component_of_wind**2 + store.v_component_of_wind**2) / 2).sel(level=300.0).mean())
    assert float(spectrum.sum()) == pytest.approx(zonal_mean_energy)  # Parseval
    lower = diagnostics.level_kinetic_energy_spectrum(store, 700.0)
    np.testing.assert_allclose(lower.values, expected / 4, atol=1e-12)


def test_energy_from_wavenumber_and_truncation():
    spectrum = diagnostics.level_kinetic_energy_spectrum(wind_store(), 300.0)
    assert float(diagnostics.energy_from_wavenumber(spectrum, 8)) == pytest.approx((2.0**2 + 1.0**2) / 4)
    assert float(diagnostics.energy_from_wavenumber(spectrum, 10)) == pytest.approx(1.0**2 / 4)
    assert float(diagnostics.energy_from_wavenumber(spectrum, 0)) == pytest.approx((16 + 4 + 1) / 4)
    truncated = diagnostics.level_kinetic_energy_spectrum(wind_store(), 300.0, max_wavenumber=10)
    assert truncated.zonal_wavenumber.values.tolist() == list(range(11))
    assert float(diagnostics.energy_from_wavenumber(truncated, 8)) == pytest.approx(2.0**2 / 4)  # wave 12 cut off


def test_energy_from_wavenumber_keeps_other_dims():
    store = wind_store().expand_dims(member=[0, 1])
    store = store * xr.DataArray([1.0, 3.0], coords={"member": [0, 1]}, dims="member")
    energy = diagnostics.energy_from_wavenumber(diagnostics.level_kinetic_energy_spectrum(store, 300.0), 8)
    assert energy.dims == ("member",)
    np.testing.assert_allclose(energy.values, [5 / 4, 9 * 5 / 4])
