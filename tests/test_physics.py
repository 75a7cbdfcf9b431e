"""Physics of the Held–Suarez world on a run long enough to reach its climate.

One 400-day run of the ``default`` world (stochastic forcing on), made once per
test session (two to three minutes on 2 CPU cores); climate = days 200-400.

Reference values, measured here at T21 L8 with the del^16 / 12 h filter: jets of
28-29 m/s at sigma 0.31 near 37-40 degrees. That is equatorward of Held & Suarez's
(1994) higher-resolution ~45 degrees; 200-day means vary by ~3 m/s between
realisations, hence the tolerances of +-5 m/s and +-6 degrees.
"""

import numpy as np
import pytest

from druids.config import get_config
from druids.data import diagnostics, heldsuarez

JET_LEVEL = 312.5  # sigma 0.3125
JET_SPEED, JET_SPEED_TOL = 28.5, 5.0
JET_LAT, JET_LAT_TOL = 37.0, 6.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def climate():
    cfg = get_config("default")
    return heldsuarez.zonal_climate(cfg.world, cfg.climate, progress=False)


def test_no_nan(climate):
    assert int(climate.any_nan) == 0


@pytest.mark.parametrize("hemisphere", ["north", "south"])
def test_westerly_jets_of_held_suarez_strength_and_place(climate, hemisphere):
    speed, lat = diagnostics.jet_peak(climate.u_component_of_wind.sel(level=JET_LEVEL), hemisphere)
    assert abs(speed - JET_SPEED) < JET_SPEED_TOL, f"{hemisphere} jet {speed:.1f} m/s"
    assert abs(abs(lat) - JET_LAT) < JET_LAT_TOL, f"{hemisphere} jet at {lat:.1f} degrees"


def test_hemispheric_symmetry(climate):
    u = climate.u_component_of_wind
    mirrored = u.isel(latitude=slice(None, None, -1)).values
    assert np.abs(u.values - mirrored).max() < 5.0  # m/s
    t = climate.temperature
    assert np.abs(t.values - t.isel(latitude=slice(None, None, -1)).values).max() < 3.0  # K


def test_equator_to_pole_temperature_contrast(climate):
    """Held–Suarez forcing relaxes towards a 60 K equator-pole contrast at the surface; eddies reduce it."""
    low = climate.temperature.sel(level=937.5)
    contrast = float(low.sel(latitude=0, method="nearest") - low.isel(latitude=[0, -1]).mean())
    assert 25.0 < contrast < 60.0


def test_mass_conserved_after_spin_up(climate):
    days = np.arange(climate.sizes["time"])
    after = climate.surface_pressure.isel(time=days >= climate.attrs["average_after_days"])
    drift = float(after[-50:].mean() - after[:50].mean()) / float(after[:50].mean())
    assert abs(drift) < 1e-5, f"global-mean surface pressure drift {drift:.2e}"
    # the mean of log p_s follows (Jensen: it moves with the variance of p_s, not with the mass)
    log_ps = climate.log_surface_pressure.isel(time=days >= climate.attrs["average_after_days"])
    assert float(log_ps.max() - log_ps.min()) < 1e-4
