"""Named profiles: ``smoke``, ``default``, ``gpu`` and ``era5``, and what derives a configuration from one.

``smoke``   seconds to a few minutes per chapter on 2 CPU cores (tests).
``default`` ``make all`` on a 2-core laptop, scientifically meaningful.
``gpu``     the paper-quality run on one GPU.
``era5``    the default profile's sizes on WeatherBench2's ERA5 at 64 x 32 (:data:`ERA5_STORE`).

:func:`with_data` puts any profile on other data (``druids run --data STORE``);
:func:`objective_config` gives the EDM or the flow model's configuration.
"""

from __future__ import annotations

import dataclasses

from druids.config.chapters import (
    CalibrationConfig,
    ExplainConfig,
    ReferenceLevels,
    SamplingStudyConfig,
    SkillConfig,
)
from druids.config.schema import Config
from druids.config.stages import (
    ClimateConfig,
    DatasetConfig,
    ModelConfig,
    OracleConfig,
    SamplingConfig,
    TrainingConfig,
    WorldConfig,
)


def _smoke() -> Config:
    return Config(
        profile="smoke",
        world=WorldConfig(spinup_days=10.0, n_days=10.0, chunk_times=8, noise_amplitude=3e-3),
        oracle=OracleConfig(n_members=4, n_perturbed_members=3, lead_days=2.0, n_init=1),
        climate=ClimateConfig(n_days=20.0, average_after_days=10.0),
        dataset=DatasetConfig(gap_days=0.5),
        model=ModelConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1),
        training=TrainingConfig(batch_size=4, n_steps=20, warmup_steps=4, checkpoint_every=10, val_every=10, val_batches=2),
        sampling=SamplingConfig(n_levels=6, lead_steps=4, member_batch=3),
        skill=SkillConfig(n_init=2, n_members=2, n_levels=4),
        sampling_study=SamplingStudyConfig(n_members=3, map_leads_hours=(12, 24), climate_days=2.0, climate_n_levels=3, timing_members=2),
        calibration=CalibrationConfig(n_members=3, n_init=2, val_init=2, train_init=2, lead_steps=4, source_init=1, source_steps=2, noise_scales=(0.7, 1.0),
                                      tune_steps=2, sweep_init=1, sweep_steps=2, sweep_levels=(3,), flow_levels=(3,), n_boot=20,
                                      finetune_steps=3),
        explain=ExplainConfig(sigmas=(0.5, 5.0), n_eigen=4, eigen_tol=1e-2, stein_sigmas=(0.3, 3.0), n_stein=4, n_oracle=4, n_oracle_eofs=2,
                              n_probes=4, locality_latitudes=(-45.0, 0.0, 45.0), density_probes=2, density_steps=10,
                              probe_sigmas=(0.5, 5.0), probe_train=16, probe_test=5, probe_pool=(4, 4), probe_boot=20, sae_atoms=32, sae_k=4,
                              sae_steps=100, intervention_scales=(0.0, 1.0, 2.0), sensitivity_leads_hours=(6, 12), sensitivity_init=1,
                              sensitivity_members=1, ig_points=4, memo_sizes=(2, 8), memo_steps=10, memo_batch=4, memo_samples=4, memo_levels=3),
    )


def _default() -> Config:
    # GenCast's sampler on 10 instead of 20 noise levels (19 instead of 39 NFE per
    # step) so that 16-member, 10-day ensembles from 2 initial times take minutes
    # on 2 CPU cores; the gpu profile keeps GenCast's 20 levels. Speed options where
    # they passed the numerics guard (docs/decisions.md, "speed-defaults-3"):
    # sampling compiled in bf16 autocast with the channels-last layout; training
    # stays eager fp32 (compiled training, fp32 or bf16, ended ~3 % worse).
    return Config(
        profile="default",
        training=TrainingConfig(n_steps=3000, flow_n_steps=1000, micro_batch=4),
        sampling=SamplingConfig(n_levels=10, bf16=True, channels_last=True, compile=True),
        sampling_study=SamplingStudyConfig(n_init=2, n_members=16),
    )


def _gpu() -> Config:
    return Config(
        profile="gpu",
        world=WorldConfig(n_days=5 * 365.0),
        oracle=OracleConfig(n_members=50, n_perturbed_members=20, lead_days=15.0, n_init=8),
        climate=ClimateConfig(n_days=1000.0, average_after_days=200.0),
        model=ModelConfig(base_channels=64, channel_mults=(1, 2, 2, 4)),
        training=TrainingConfig(
            batch_size=64,
            n_steps=50000,
            lr=4e-4,
            ema_decay=0.999,
            bf16=True,
            compile=True,
            checkpoint_every=2000,
            val_every=2000,
            val_batches=8,
        ),
        sampling=SamplingConfig(lead_steps=60, member_batch=50),
        skill=SkillConfig(n_init=32, n_members=16, n_levels=20),
        sampling_study=SamplingStudyConfig(n_init=8, n_members=50, climate_days=3 * 365.0, climate_members=4, climate_n_levels=10),
        calibration=CalibrationConfig(n_members=32, n_init=16, val_init=16, train_init=8, lead_steps=40, source_init=8, source_steps=20, tune_steps=8,
                                      noise_scales=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0), sweep_init=8, sweep_steps=8, sweep_levels=(5, 10, 20, 40),
                                      sweep_churns=(0.0, 1.0, 2.5), sweep_noises=(1.0, 1.05), sweep_initial_scales=(0.5, 0.8), flow_levels=(5, 10, 20),
                                      flow_diffusions=(0.5, 1.0, 2.0), n_boot=1000, finetune_steps=500, finetune_states=8,
                                      finetune_members=4),
        explain=ExplainConfig(sigmas=(0.05, 0.2, 1.0, 5.0, 25.0), n_eigen=64, eigen_tol=1e-6, stein_sigmas=(0.02, 0.05, 0.2, 1.0, 5.0, 25.0, 80.0),
                              n_stein=64, n_oracle=256, n_oracle_eofs=16, n_probes=64, density_probes=32, density_steps=40, locality_latitudes=(-75.0, -60.0, -45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0, 60.0, 75.0),
                              probe_sigmas=(0.05, 0.2, 1.0, 5.0, 25.0), probe_train=1024, probe_test=512, probe_boot=1000, sae_atoms=1024, sae_k=16,
                              sae_steps=10000, sensitivity_leads_hours=(6, 12, 24, 48, 72, 120), sensitivity_init=8, sensitivity_members=8, ig_points=64,
                              memo_sizes=(4, 16, 64, 256, 1024, 2048), memo_steps=10000, memo_batch=32, memo_base_channels=32, memo_samples=128, memo_levels=20),
    )


#: WeatherBench2's public ERA5 at 64 x 32 (5.625 degrees, conservative), 6-hourly, 1959 to 2023-01-10 (gcsfs, network).
ERA5_STORE = "gs://weatherbench2/datasets/era5/1959-2023_01_10-6h-64x32_equiangular_conservative.zarr"
#: GenCast's variable set (Price et al. 2025) without precipitation, vertical velocity and sea-surface temperature:
#: five variables on pressure levels, four at the surface.
ERA5_VARIABLES = (
    "geopotential",
    "temperature",
    "u_component_of_wind",
    "v_component_of_wind",
    "specific_humidity",
    "2m_temperature",
    "10m_u_component_of_wind",
    "10m_v_component_of_wind",
    "mean_sea_level_pressure",
)
ERA5_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)  # WeatherBench2's 13 levels (hPa), GenCast's
ERA5_STATIC = ("land_sea_mask", "geopotential_at_surface")


def store_dataset(dataset: DatasetConfig, source: str) -> DatasetConfig:
    """``dataset`` for a WeatherBench2-layout store: the ERA5 variables (:data:`ERA5_VARIABLES`) on every level
    the store has, its static fields (:data:`ERA5_STATIC`), 6-hourly, regridded to 64 x 32 equiangular if
    needed, no spectral truncation; history and time-split settings kept."""
    return dataclasses.replace(
        dataset, source=source, variables=ERA5_VARIABLES, levels=None, static_variables=ERA5_STATIC,
        spectral_truncation=None, step_hours=6, grid=(64, 32),
    )  # fmt: skip


def _era5() -> Config:
    # The default profile's model, training and sampling sizes on WeatherBench2's ERA5: 69 channels at 64 x 32;
    # WeatherBench2's years (train 1979-2017, validation 2018-2019, test 2020-2022).
    dataset = dataclasses.replace(
        store_dataset(DatasetConfig(), ERA5_STORE), levels=ERA5_LEVELS, time_range=("1979-01-01", "2022-12-31T18"),
        split_years=((1979, 2017), (2018, 2019), (2020, 2022)),
    )  # fmt: skip
    return dataclasses.replace(_default(), profile="era5", dataset=dataset, levels=ReferenceLevels(upper=250, middle=500, lower=850))


PROFILES = {"smoke": _smoke, "default": _default, "gpu": _gpu, "era5": _era5}


def with_data(cfg: Config, data: str | None) -> Config:
    """``cfg`` with its data from ``data``: None keeps the profile's own; ``"heldsuarez"`` or a store path/URL.

    A profile made for the world (``smoke``, ``default``, ``gpu``) given a store gets
    :func:`store_dataset` and the reference levels 250/500/850 hPa; all its sizes stay.
    A profile made for a store (``era5``) given another store keeps everything but the source.
    """
    if data is None or data == cfg.dataset.source:
        return cfg
    if data == "heldsuarez":
        raise ValueError(f"Profile {cfg.profile!r} is made for a WeatherBench2 store; use smoke, default or gpu for the Held–Suarez world.")
    if cfg.dataset.source != "heldsuarez":
        return dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, source=data))
    levels = ReferenceLevels(upper=250, middle=500, lower=850)
    return dataclasses.replace(cfg, dataset=store_dataset(cfg.dataset, data), levels=levels)


def get_config(profile: str = "default", seed: int | None = None) -> Config:
    """The configuration of a named profile (``smoke``, ``default``, ``gpu``, ``era5``)."""
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile {profile!r}; valid profiles are: {', '.join(PROFILES)}")
    cfg = PROFILES[profile]()
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed, world=dataclasses.replace(cfg.world, seed=seed))
    return cfg


def objective_config(cfg: Config, objective: str) -> Config:
    """``cfg`` for the ``objective`` ("edm" or "flow") model: ``model.objective`` set and, for
    flow, ``training.n_steps`` replaced by ``training.flow_n_steps`` where that is given."""
    if objective not in ("edm", "flow"):
        raise ValueError(f"objective must be 'edm' or 'flow', not {objective!r}")
    training = cfg.training
    if objective == "flow" and training.flow_n_steps is not None:
        training = dataclasses.replace(training, n_steps=training.flow_n_steps)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, objective=objective), training=training)
