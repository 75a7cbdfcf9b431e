"""Sampling: solvers on tensors (:mod:`.samplers`), member noise streams (:mod:`.noise`),
rollouts (:mod:`.rollout`), ensemble forecasts to xarray/zarr (:mod:`.ensembles`) and
free-running climate runs (:mod:`.climate`). This face re-exports what callers use.
"""

from druids.sampling.climate import (
    climate_churns,
    climate_runs,
    climate_sampling,
    climate_steps,
    departed,
    rollout_climate,
    stable_days,
    stable_days_table,
)
from druids.sampling.ensembles import forecast, sampler_cost
from druids.sampling.noise import NOISE_STREAMS, MemberNoise, init_key, member_generator
from druids.sampling.rollout import MASS_VARIABLE, hold_global_mean, initial_states
from druids.sampling.samplers import (
    DIFFUSION_SAMPLERS,
    FLOW_SAMPLERS,
    SAMPLERS,
    Churn,
    check_sampler,
    flow_times,
    noise_levels,
    sample,
    sample_dpmpp_2s,
    sample_edm,
    sample_flow_euler,
    sample_flow_heun,
    sample_flow_sde,
    velocity_from_denoise,
)

__all__ = [
    "DIFFUSION_SAMPLERS",
    "FLOW_SAMPLERS",
    "MASS_VARIABLE",
    "NOISE_STREAMS",
    "SAMPLERS",
    "Churn",
    "MemberNoise",
    "check_sampler",
    "climate_churns",
    "climate_runs",
    "climate_sampling",
    "climate_steps",
    "departed",
    "flow_times",
    "forecast",
    "hold_global_mean",
    "init_key",
    "initial_states",
    "member_generator",
    "noise_levels",
    "rollout_climate",
    "sample",
    "sample_dpmpp_2s",
    "sample_edm",
    "sample_flow_euler",
    "sample_flow_heun",
    "sample_flow_sde",
    "sampler_cost",
    "stable_days",
    "stable_days_table",
    "velocity_from_denoise",
]
