"""Maps on the sphere: cartopy axes, fields with a cyclic point, coastlines drawn offline.

Maps never download anything: coastlines come from the ``global_land_mask``
package and cartopy's downloaders are replaced, on import, by ones that raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cartopy
import cartopy.crs as ccrs
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from cartopy.io import Downloader
from cartopy.util import add_cyclic_point

from druids.cache import compute_or_load


class _NoDownload(Downloader):
    """A cartopy downloader that finds files already on disk but never fetches one."""

    def acquire_resource(self, target_path, format_dict):
        raise RuntimeError(
            f"druids never downloads map data (cartopy asked for {target_path}); "
            "draw coastlines with druids.plotting.add_coastlines"
        )


cartopy.config["downloaders"] = {
    key: _NoDownload(d.url_template, d.target_path_template, d.pre_downloaded_path_template)
    for key, d in cartopy.config["downloaders"].items()
}


def map_axes(fig, *pos, projection: ccrs.Projection | None = None):
    """A global cartopy map axes (PlateCarree by default) at subplot position ``pos`` (default 111)."""
    ax = fig.add_subplot(*(pos or (1, 1, 1)), projection=projection or ccrs.PlateCarree())
    ax.set_global()
    return ax


def plot_map(
    da: xr.DataArray,
    ax=None,
    *,
    method: str = "pcolormesh",
    coastlines: bool = False,
    colorbar: bool = True,
    **kwargs,
):
    """Map a 2-D (latitude, longitude) field; ``method`` is ``pcolormesh`` or ``contourf``.

    A cyclic point closes the field at the date line; the colorbar label is
    ``long_name [units]`` from the attributes. ``kwargs`` go to the plot method.
    Coastlines are off by default: the Held–Suarez world is an aquaplanet.
    """
    if ax is None:
        ax = map_axes(plt.figure())
    da = da.transpose("latitude", "longitude")
    values, lon = add_cyclic_point(da.values, coord=da["longitude"].values)
    if method == "pcolormesh":
        kwargs.setdefault("shading", "nearest")
        kwargs.setdefault("rasterized", True)  # one image in the PDF: no hairline seams between cells
    mappable = getattr(ax, method)(lon, da["latitude"].values, values, transform=ccrs.PlateCarree(), **kwargs)
    if coastlines:
        add_coastlines(ax)
    if colorbar:
        label = f"{da.attrs.get('long_name', da.name)} [{da.attrs.get('units', '-')}]"
        ax.figure.colorbar(mappable, ax=ax, orientation="horizontal", shrink=0.7, pad=0.04, label=label)
    return ax


def grid_image(ax, field: np.ndarray, latitude, centred: bool = False, cmap: str = "magma", title: str = "", **kwargs):
    """Draw a (latitude, longitude) array (latitude ascending, longitudes covering 0-360 E) as a
    plain image on ``ax``, axes in degrees; ``centred``: symmetric colour limits about zero from
    the field's own largest magnitude (1 where it is all zero). Returns the image. For the many
    small panels of the explainability figures, where a cartopy map per panel costs too much."""
    latitude = np.asarray(latitude)
    if centred:
        limit = float(np.abs(field).max()) or 1.0
        kwargs |= {"vmin": -limit, "vmax": limit}
    image = ax.imshow(field, origin="lower", extent=(0, 360, latitude.min(), latitude.max()), cmap=cmap, aspect="auto", **kwargs)
    ax.set(xlabel="longitude [deg E]", ylabel="latitude [deg N]", xticks=[0, 90, 180, 270, 360], yticks=[-60, -30, 0, 30, 60])
    ax.set_title(title, fontsize=8)
    return image


def add_coastlines(ax, resolution: float = 0.5, **kwargs):
    """Coastlines as the 0.5 contour of the land fraction on a ``resolution``-degree grid (no download)."""
    fraction = land_fraction(resolution)
    kwargs = {"colors": "k", "linewidths": 0.6, **kwargs}
    values, lon = add_cyclic_point(fraction.values, coord=fraction["longitude"].values)
    return ax.contour(lon, fraction["latitude"].values, values, levels=[0.5], transform=ccrs.PlateCarree(), **kwargs)


@dataclass(frozen=True)
class LandFractionConfig:
    """Land fraction on a global ``resolution``-degree grid, each cell the mean of ``samples`` x ``samples`` mask points."""

    resolution: float = 0.5
    samples: int = 5


def land_fraction(resolution: float = 0.5, samples: int = 5) -> xr.DataArray:
    """Land fraction (0..1) from the 1-km ``global_land_mask``; longitude in [-180, 180), latitude ascending.

    Cached on disk (``druids.cache``): reading the 1-km mask takes several seconds.
    """
    cfg = LandFractionConfig(resolution, samples)
    n_lat, n_lon = round(180 / resolution), round(360 / resolution)
    fraction = compute_or_load(
        "land_fraction",
        cfg,
        compute=lambda: _land_fraction(cfg, n_lat, n_lon),
        save=lambda values, path: path.write_bytes(values.tobytes()),
        load=lambda path: np.frombuffer(path.read_bytes(), dtype=np.float32).reshape(n_lat, n_lon),
        suffix="f32",
    )
    return xr.DataArray(
        fraction,
        coords={"latitude": -90 + resolution * (np.arange(n_lat) + 0.5), "longitude": -180 + resolution * (np.arange(n_lon) + 0.5)},
        dims=("latitude", "longitude"),
        name="land_fraction",
    )


def _land_fraction(cfg: LandFractionConfig, n_lat: int, n_lon: int) -> np.ndarray:
    from global_land_mask import globe  # loads the 1-km mask (~1 GB of booleans) on import

    step = cfg.resolution / cfg.samples
    lat = -90 + step * (np.arange(n_lat * cfg.samples) + 0.5)
    lon = -180 + step * (np.arange(n_lon * cfg.samples) + 0.5)
    land = globe.is_land(lat[:, None], lon[None, :])
    return land.reshape(n_lat, cfg.samples, n_lon, cfg.samples).mean(axis=(1, 3)).astype(np.float32)
