"""Configuration of the chapters' studies: the quick skill check, the sampling study, calibration,
explainability, and the reference levels of figures and headline numbers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SkillConfig:
    """The quick forecast-skill check of chapter 02: a few test-split initial
    times, a small ensemble and a cheap sampler (``n_levels`` noise levels)."""

    n_init: int = 8
    n_members: int = 8
    n_levels: int = 10
    leads_hours: tuple[int, ...] = (6, 24)


@dataclass(frozen=True)
class SamplingStudyConfig:
    """Sizes of the sampling chapter (03); samplers and leads follow ``SamplingConfig``.

    Ensembles: ``n_init`` initial times evenly spaced over the test split, each
    with ``n_members`` model members (``SamplingConfig``'s sampler) and as many
    oracle members, ``SamplingConfig.lead_steps`` steps ahead; maps at
    ``map_leads_hours``. Climate: free-running rollouts of ``climate_members``
    member(s) for ``climate_days`` from the first test time, with
    ``climate_sampler`` on ``climate_n_levels`` noise levels and churn
    ``climate_churn`` (``SamplingConfig.s_churn``), and again with churn
    ``climate_compare_churn`` (None: not run) to compare how long members stay
    stable. Churn re-noises the state within each step (GenCast's sampler);
    without it each step solves the probability-flow ODE from fresh noise.
    Cost table: every sampler timed over ``timing_steps`` steps of
    ``timing_members`` members after a warm-up step. Measured costs are in
    ``bench/RESULTS.md`` and the README.
    """

    n_init: int = 1
    n_members: int = 8
    map_leads_hours: tuple[int, ...] = (24, 72, 120, 240)
    climate_days: float = 365.0
    climate_members: int = 2
    climate_sampler: str = "dpmpp_2s"
    climate_n_levels: int = 10
    climate_churn: float = 0.0
    climate_compare_churn: float | None = 2.5
    timing_members: int = 4
    timing_steps: int = 1


@dataclass(frozen=True)
class CalibrationConfig:
    """Sizes of the calibration chapter (05); the sampler is ``SamplingConfig``'s unless swept.

    Model ensembles (``n_members``, as each oracle ensemble beside them) run ``lead_steps`` 6-h
    steps from ``n_init`` test, ``val_init`` validation (recalibrations and sampling temperature
    are fitted there) and ``train_init`` training initial times, evenly spaced. Error sources:
    ``source_init`` test times, ``source_steps`` steps. Temperatures (``noise_scales``) are scored
    on the validation split over ``tune_steps`` steps. Sampler sweep from ``sweep_init`` test times
    over ``sweep_steps`` steps: ``sweep_levels`` x ``sweep_churns``, then ``sweep_noises`` (S_noise)
    and ``sweep_initial_scales`` (starting noise) one at a time; flow model: ODE and SDE
    (``flow_diffusions``) on ``flow_levels`` steps. ``n_boot``: bootstrap resamples of initial
    times. Reliability events: a field above its training mean plus ``event_std`` std.
    In-model calibration (``druids.calibration.finetune``): ``finetune_steps`` AdamW steps at
    ``finetune_lr`` on the almost-fair CRPS (``finetune_alpha``) of ``finetune_members``
    sampled members from each of ``finetune_states`` training states per step.
    """

    n_members: int = 8
    n_init: int = 4
    val_init: int = 4
    train_init: int = 2
    lead_steps: int = 16
    source_init: int = 1
    source_steps: int = 8
    noise_scales: tuple[float, ...] = (0.7, 1.0, 1.3)
    tune_steps: int = 4
    sweep_init: int = 1
    sweep_steps: int = 4
    sweep_levels: tuple[int, ...] = (5, 10)
    sweep_churns: tuple[float, ...] = (0.0, 2.5)
    sweep_noises: tuple[float, ...] = (1.0,)
    sweep_initial_scales: tuple[float, ...] = (0.5,)
    flow_levels: tuple[int, ...] = (10,)
    flow_diffusions: tuple[float, ...] = (1.0,)
    n_boot: int = 200
    event_std: float = 1.0
    finetune_steps: int = 50
    finetune_states: int = 2
    finetune_members: int = 2
    finetune_lr: float = 1e-4
    finetune_alpha: float = 0.95


@dataclass(frozen=True)
class ExplainConfig:
    """Sizes of the explainability chapter (04, first half: ``druids.explain``'s Jacobian tools).

    ``sigmas``: noise levels (normalised residual units) of the adaptive basis,
    the oracle link and the locality rows; at each, the ``n_eigen`` leading
    eigenpairs of the Jacobian (Lanczos to relative accuracy ``eigen_tol``) for
    a training, a held-out (test) and a generated state. ``stein_sigmas``:
    levels of the Stein/Tweedie check on ``n_stein`` validation samples.
    Oracle link: ``n_oracle`` oracle members from the held-out state (one 6-h
    step), compared on ``n_oracle_eofs`` leading directions; traces by
    Hutchinson with ``n_probes`` probes. ``locality_latitudes``: latitudes
    (degrees; nearest grid rows) of the Jacobian rows. ``density_probes``,
    ``density_steps``: probes and Lanczos steps per probe of the spectral
    density (stochastic Lanczos quadrature).

    Second half (what the model represents). Features: ``feature_region``
    ((south, north), (west, east)) degrees, where cyclones and anticyclones
    deeper than ``cyclone_threshold_hpa`` (anomaly from the zonal mean) are
    looked for and the coming 6-h surface-pressure change is averaged. Probes:
    ridge from each resolution level's activations, averaged onto a
    ``probe_pool`` grid, at noise levels ``probe_sigmas``, fitted on
    ``probe_train`` training states and scored on ``probe_test`` held-out
    (test) states, ``probe_boot`` paired bootstrap resamples. Sparse
    autoencoder on the bottleneck at the largest probe sigma: ``sae_atoms``
    atoms, ``sae_k`` active, ``sae_steps`` Adam steps; the intervention scales
    one atom by each of ``intervention_scales``. Sensitivities: the box mean of
    mid-level temperature over ``sensitivity_region`` at
    ``sensitivity_leads_hours``, from ``sensitivity_init`` test times; the
    world's adjoint averaged over ``sensitivity_members`` realisations of its
    forcing; Integrated Gradients on ``ig_points`` points; finite differences
    along the gradient, ``fd_size`` (RMS, in state std units). Memorisation:
    pairs of models on disjoint training sets of each size in ``memo_sizes``,
    ``memo_steps`` steps of ``memo_batch`` at learning rate ``memo_lr``, a
    U-Net of ``memo_base_channels`` base channels (levels (1, 2), one block)
    on the headline channels, sampled for ``memo_samples`` held-out conditions
    on ``memo_levels`` noise levels.
    """

    sigmas: tuple[float, ...] = (0.2, 1.0, 5.0)
    n_eigen: int = 16
    eigen_tol: float = 1e-4
    stein_sigmas: tuple[float, ...] = (0.05, 0.2, 1.0, 5.0, 25.0)
    n_stein: int = 16
    n_oracle: int = 64
    n_oracle_eofs: int = 8
    n_probes: int = 16
    locality_latitudes: tuple[float, ...] = (-60.0, -30.0, 0.0, 30.0, 60.0)
    density_probes: int = 8
    density_steps: int = 20
    feature_region: tuple[tuple[float, float], tuple[float, float]] = ((30.0, 70.0), (0.0, 90.0))
    cyclone_threshold_hpa: float = 20.0
    probe_sigmas: tuple[float, ...] = (0.2, 2.0, 20.0)
    probe_train: int = 192
    probe_test: int = 96
    probe_pool: tuple[int, int] = (8, 8)
    probe_boot: int = 200
    sae_atoms: int = 256
    sae_k: int = 8
    sae_steps: int = 1500
    intervention_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    sensitivity_region: tuple[tuple[float, float], tuple[float, float]] = ((35.0, 55.0), (0.0, 45.0))
    sensitivity_leads_hours: tuple[int, ...] = (6, 12, 24, 48)
    sensitivity_init: int = 2
    sensitivity_members: int = 2
    ig_points: int = 16
    fd_size: float = 0.01
    memo_sizes: tuple[int, ...] = (4, 40, 400)
    memo_steps: int = 600
    memo_batch: int = 8
    memo_lr: float = 2e-3
    memo_base_channels: int = 8
    memo_samples: int = 32
    memo_levels: int = 10


@dataclass(frozen=True)
class ReferenceLevels:
    """The pressure levels (hPa) of the figures and headline numbers, named once.

    ``upper``: jet-level winds; ``middle``: mid-level temperature (and
    geopotential); ``lower``: low-level temperature. The Held–Suarez world's
    levels are sigma x 1000 hPa (312.5, 562.5, 812.5); a WeatherBench2 store
    would use e.g. 250, 500 and 850 hPa.
    """

    upper: float = 312.5
    middle: float = 562.5
    lower: float = 812.5

    @property
    def headline_fields(self) -> list[tuple[str, float]]:
        """(variable, level) of the headline scores: mid-level temperature and jet-level zonal wind."""
        return [("temperature", self.middle), ("u_component_of_wind", self.upper)]

    @property
    def skill_fields(self) -> list[tuple[str, float]]:
        """The headline fields and the jet-level meridional wind: the quick skill check's fields."""
        return [*self.headline_fields, ("v_component_of_wind", self.upper)]
