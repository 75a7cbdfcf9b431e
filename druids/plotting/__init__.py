"""Plotting: one figure style, maps, spectra and the chapters' composite figures; arrays in, figures out.

:mod:`.style` (style, figure manifest, atomic :func:`savefig`), :mod:`.maps`
(cartopy maps with offline coastlines), :mod:`.spectra`, :mod:`.ensembles`
(members, mean and spread beside the truth), :mod:`.climate` (free-running
climate beside the world's) and :mod:`.cost` (sampler cost). Plotting takes
xarray/pandas objects and imports no data, model, training or sampling code.
This face re-exports what callers use.
"""

from druids.plotting.climate import climate_figure, rms_series, zonal_profile, zonal_wind_section
from druids.plotting.cost import sampler_cost_bars
from druids.plotting.ensembles import (
    ensemble_comparison_maps,
    ensemble_maps,
    field_title,
    field_units,
    lead_label,
    oracle_skill_curves,
    spread_skill_curves,
)
from druids.plotting.maps import add_coastlines, grid_image, land_fraction, map_axes, plot_map
from druids.plotting.spectra import ensemble_spectra, plot_spectrum
from druids.plotting.style import DPI, load_manifest, manifest_path, savefig, set_style

__all__ = [
    "DPI",
    "add_coastlines",
    "climate_figure",
    "ensemble_comparison_maps",
    "ensemble_maps",
    "ensemble_spectra",
    "field_title",
    "field_units",
    "grid_image",
    "land_fraction",
    "lead_label",
    "load_manifest",
    "manifest_path",
    "map_axes",
    "oracle_skill_curves",
    "plot_map",
    "plot_spectrum",
    "rms_series",
    "sampler_cost_bars",
    "savefig",
    "set_style",
    "spread_skill_curves",
    "zonal_profile",
    "zonal_wind_section",
]
