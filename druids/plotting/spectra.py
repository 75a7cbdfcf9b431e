"""Spectra on log-log axes: one spectrum, and ensembles' member spectra beside the truth's per lead time."""

from __future__ import annotations

import matplotlib.pyplot as plt
import xarray as xr

from druids.plotting.ensembles import lead_label


def plot_spectrum(da: xr.DataArray, ax=None, **kwargs):
    """Log-log line of a 1-D spectrum against its coordinate (e.g. zonal wavenumber); zero wavenumber skipped."""
    if ax is None:
        ax = plt.figure().add_subplot()
    (dim,) = da.dims
    da = da.where(da[dim] > 0, drop=True)
    ax.loglog(da[dim].values, da.values, **kwargs)
    ax.set_xlabel(da[dim].attrs.get("long_name", dim))
    ax.set_ylabel(f"{da.attrs.get('long_name', da.name)} [{da.attrs.get('units', '-')}]")
    return ax


def ensemble_spectra(spectra: dict[str, xr.DataArray], truth: xr.DataArray, title: str = ""):
    """One panel per lead time: each ensemble's mean member spectrum (shading: the members' range) and the truth's.

    ``spectra``: label -> kinetic-energy spectra (m2 s-2) of dims (init_time,
    member, lead_time, zonal_wavenumber), one colour per label; ``truth``: dims
    (init_time, lead_time, zonal_wavenumber), drawn as its mean over initial
    times. Wavenumber 0 is left out. Panel titles: ``title, +<lead> h``.
    """
    leads = truth.lead_time.values
    truth = truth.mean("init_time").rename("kinetic energy")
    fig, axes = plt.subplots(1, len(leads), figsize=(3.6 * len(leads), 3.6), sharey=True, squeeze=False)
    for ax, lead in zip(axes[0], leads):
        for index, (label, spectrum) in enumerate(spectra.items()):
            members = spectrum.sel(lead_time=lead, zonal_wavenumber=slice(1, None)).stack(sample=("init_time", "member"))
            plot_spectrum(members.mean("sample").rename("kinetic energy"), ax=ax, color=f"C{index}", label=f"{label} members")
            ax.fill_between(members.zonal_wavenumber, members.min("sample"), members.max("sample"), color=f"C{index}", alpha=0.2)
        plot_spectrum(truth.sel(lead_time=lead), ax=ax, color="k", label="truth")
        ax.set_ylabel("kinetic energy [m2 s-2]")
        ax.set_xlabel("zonal wavenumber")
        ax.set_title(f"{title}, {lead_label(lead)}")
    axes[0, 0].legend(fontsize=8)
    return fig
