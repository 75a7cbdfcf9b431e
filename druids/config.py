"""Frozen configuration values for every stage, grouped into named profiles.

A configuration is a value: it is printed, hashed (:func:`config_hash`) and
saved with every artifact, so a changed setting never reuses a stale cache.

Profiles
--------
``smoke``   seconds to a few minutes per chapter on 2 CPU cores (tests).
``default`` ``make all`` on a 2-core laptop, scientifically meaningful.
``gpu``     the paper-quality run on one GPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorldConfig:
    """The Held–Suarez world: dinosaur dry core, Held & Suarez (1994) forcing.

    Spectral truncation T21 on a 64 x 32 Gaussian grid with ``n_levels`` equally
    spaced sigma levels. Times are in days / hours / minutes as named.

    Stochastic forcing: every dynamical step, ``sqrt(dt) * noise_amplitude * xi``
    is added to modal vorticity for total wavenumbers in ``noise_wavenumbers``
    (inclusive), the same at every level; ``xi`` is standard normal, ``dt`` and
    the amplitude are in dinosaur's nondimensional units. 0 = deterministic.

    Numerical filter: horizontal hyperdiffusion of order ``filter_order``
    (del^(2*order)) whose e-folding time at the truncation wavenumber is
    ``filter_tau_hours``; chosen for T21 (see ``druids.data.heldsuarez``).
    A mass fixer holds the global-mean surface pressure at ``mean_surface_pressure_pa``.
    """

    truncation: int = 21
    n_levels: int = 8
    dt_minutes: float = 30.0
    output_hours: int = 6
    spinup_days: float = 200.0
    n_days: float = 365.0
    noise_amplitude: float = 3e-3
    noise_wavenumbers: tuple[int, int] = (8, 16)
    filter_tau_hours: float = 12.0
    filter_order: int = 8
    mean_surface_pressure_pa: float = 1.0e5
    chunk_times: int = 40
    seed: int = 0

    @property
    def steps_per_output(self) -> int:
        """Dynamical steps between two saved 6-hourly states."""
        steps = self.output_hours * 60 / self.dt_minutes
        if steps != int(steps):
            raise ValueError(f"output_hours={self.output_hours} is not a multiple of dt_minutes={self.dt_minutes}")
        return int(steps)

    @property
    def n_times(self) -> int:
        """Number of saved times after spin-up, rounded up to whole chunks."""
        per_day = 24 // self.output_hours
        n = int(round(self.n_days * per_day))
        return -(-n // self.chunk_times) * self.chunk_times


@dataclass(frozen=True)
class OracleConfig:
    """Oracle (exact forecast distribution) and perturbed-IC ensembles for chapter 01.

    ``ic_perturbation_kelvin``: std of the white grid-point temperature
    perturbation used for perturbed-initial-condition ensembles (K).
    """

    n_members: int = 16
    n_perturbed_members: int = 8
    lead_days: float = 10.0
    n_init: int = 2
    ic_perturbation_kelvin: float = 0.1
    member_batch: int | None = None  # None: serial on CPU, all at once on GPU


@dataclass(frozen=True)
class ClimateConfig:
    """In-memory climate runs (chapter 01, physics tests): length and averaging window in days."""

    n_days: float = 400.0
    average_after_days: float = 200.0


@dataclass(frozen=True)
class DatasetConfig:
    """Which variables feed the model and how time is split.

    ``history``: number of past states in the condition (1: x_t; 2: x_t and x_{t-6h}).
    Splits are contiguous time blocks in the order train, val, test, separated
    by ``gap_days`` so that samples of different splits are not correlated.

    ``spectral_truncation``: the total wavenumber of the spectral model that
    made the data (21: the Held–Suarez world, ``WorldConfig.truncation``), whose
    states hold nothing beyond it (``druids.sphere``). The diffusion
    noise is then isotropic white noise in that space (``sphere_noise``), the
    training noise on the condition is projected onto it, and so is every
    sampled state, so that the model sees and makes only states the world can
    have. None: data that is not band-limited on a Gaussian grid (ERA5); all
    noise stays white on the grid and samples are not projected.

    ``source``: where the states come from (``druids.data.source``):
    ``"heldsuarez"``, the world of ``Config.world``, or the path or fsspec URL
    of a WeatherBench2-layout zarr store. ``levels``: the pressure levels (hPa)
    to read from such a store (None: all of them; the world uses all of its own).
    """

    variables: tuple[str, ...] = (
        "u_component_of_wind",
        "v_component_of_wind",
        "temperature",
        "surface_pressure",
    )
    history: int = 1
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    gap_days: float = 5.0
    spectral_truncation: int | None = 21
    source: str = "heldsuarez"
    levels: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    """The conditional denoiser (``druids.models``) and its training objective.

    ``objective``: "edm" (Karras et al. 2022 preconditioning, GenCast noise
    levels ``[sigma_min, sigma_max]`` and ``rho``) or "flow" (rectified flow).
    U-Net: level ``i`` has ``base_channels * channel_mults[i]`` channels and
    ``blocks_per_level`` residual blocks in encoder and decoder; the grid is
    halved between levels. ``bias_free``: no additive constants, so the
    denoiser is homogeneous of degree 1 in (noisy target, condition); it needs
    ``activation`` "relu" or "leaky_relu" ("silu", "gelu" for the biased net).
    ``sigma_data``: std of the (normalised residual) targets.
    ``latitude_weighting``: loss weight per latitude (``druids.sphere.latitude_weights``):
    "area" (cos latitude), "sqrt_area" or "uniform". Default "sqrt_area": it
    counts the polar caps about three times more than their area, so that the
    model learns their dynamics too and free runs do not drift from there
    (evidence in ``docs/decisions.md``).

    Defaults are the ``default`` profile's size; the ``smoke`` size is
    ``base_channels=8, channel_mults=(1, 2), blocks_per_level=1``.
    """

    objective: str = "edm"
    bias_free: bool = True
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 2
    activation: str = "relu"
    sigma_data: float = 1.0
    latitude_weighting: str = "sqrt_area"
    sigma_min: float = 0.02
    sigma_max: float = 88.0
    rho: float = 7.0


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation of the denoiser (``druids.training``).

    AdamW with linear warm-up then cosine decay to ``lr * final_lr_fraction``;
    gradient-norm clipping; EMA of the weights (used for sampling). Speed only
    (``bench/training.py``): ``bf16`` autocast where supported (``runtime.bf16_supported``),
    ``compile`` (``torch.compile``; minutes of compilation per process), ``channels_last``.

    Defaults are the ``default`` profile's, except its step counts and
    micro-batches. ``flow_n_steps``: the flow objective's number of steps
    (None: ``n_steps``; see :func:`objective_config`); the default profile
    trains EDM, whose samples chapter 03 rolls out for a year, longer than
    flow (``docs/decisions.md``).
    ``batch_size`` is the global batch (over all processes). ``micro_batch``:
    samples per forward/backward pass; the global batch is cut into
    micro-batches whose gradients are accumulated, and each micro-batch draws its
    noise from its own seed, so a run gives the same weights on any number of
    processes that divides ``batch_size / micro_batch``. None: one micro-batch
    per process. ``val_batches`` batches of ``batch_size`` validation samples.

    ``condition_noise``: training-time noise on the states of the condition, in
    units of each channel's 6-hour residual std (0 = off); the target is the
    residual from the *noisy* state, so the model learns to undo errors in its
    input, which keeps autoregressive rollouts on the data's manifold
    (Sanchez-Gonzalez et al. 2020, ICML, "Learning to simulate complex physics
    with graph networks"; see :func:`druids.training.batches.perturb_condition`). With
    ``DatasetConfig.spectral_truncation`` set, the noise is projected onto the
    world's spherical harmonics, where the model's own errors live once
    sampled states are projected too.
    """

    batch_size: int = 8
    micro_batch: int | None = None
    n_steps: int = 1500
    flow_n_steps: int | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    final_lr_fraction: float = 0.05
    grad_clip: float = 1.0
    condition_noise: float = 1.0
    ema_decay: float = 0.995
    checkpoint_every: int = 250
    val_every: int = 250
    val_batches: int = 4
    bf16: bool = False
    compile: bool = False
    channels_last: bool = False


@dataclass(frozen=True)
class SamplingConfig:
    """Reverse-diffusion sampler settings (``druids.sampling``).

    Defaults: DPM-Solver++(2S) with GenCast's noise schedule and churn
    (Price et al. 2025): 20 noise levels, sigma in [0.03, 80], rho = 7,
    S_churn = 2.5, S_min = 0.75, S_max = inf, S_noise = 1.05.
    Samplers: "edm", "dpmpp_2s", "flow_euler", "flow_heun", "flow_sde"; flow
    samplers take ``n_levels`` uniform steps in interpolant time, and
    ``flow_diffusion`` scales the noise of "flow_sde" (0 = the ODE).
    ``lead_steps``: 6-hour steps of an ensemble forecast; ``member_batch``:
    members that go through the network together.

    ``conserve_mass``: after every forecast step, shift each member's surface
    pressure by a constant so that its area-weighted global mean stays at the
    initial state's (the Held–Suarez world's mass fixer holds it exactly; ACE,
    Watt-Meyer et al. 2023, corrects global dry-air mass the same way). Without
    it the model's own mass budget drifts in long rollouts. No effect on
    variable sets without ``surface_pressure``.
    Speed only (``bench/sampling.py``): ``bf16`` autocast of the network where
    supported, ``channels_last`` (a copy of the model, ``sampling.rollout.for_sampling``).
    """

    sampler: str = "dpmpp_2s"
    n_levels: int = 20
    sigma_max: float = 80.0
    sigma_min: float = 0.03
    rho: float = 7.0
    s_churn: float = 2.5
    s_min: float = 0.75
    s_max: float = float("inf")
    s_noise: float = 1.05
    lead_steps: int = 40
    member_batch: int = 16
    flow_diffusion: float = 1.0
    conserve_mass: bool = True
    bf16: bool = False
    channels_last: bool = False


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


@dataclass(frozen=True)
class Config:
    """Everything a chapter needs; one per profile."""

    profile: str
    seed: int = 0
    world: WorldConfig = field(default_factory=WorldConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    climate: ClimateConfig = field(default_factory=ClimateConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    skill: SkillConfig = field(default_factory=SkillConfig)
    sampling_study: SamplingStudyConfig = field(default_factory=SamplingStudyConfig)
    levels: ReferenceLevels = field(default_factory=ReferenceLevels)


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
    )


def _default() -> Config:
    # GenCast's sampler on 10 instead of 20 noise levels (19 instead of 39 NFE per
    # step) so that 16-member, 10-day ensembles from 2 initial times take minutes
    # on 2 CPU cores; the gpu profile keeps GenCast's 20 levels.
    return Config(
        profile="default",
        training=TrainingConfig(n_steps=3000, flow_n_steps=1000, micro_batch=4),
        sampling=SamplingConfig(n_levels=10),
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
    )


PROFILES = {"smoke": _smoke, "default": _default, "gpu": _gpu}


def get_config(profile: str = "default", seed: int | None = None) -> Config:
    """The configuration of a named profile (``smoke``, ``default``, ``gpu``)."""
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


def to_dict(cfg: Any) -> dict:
    """A JSON-serialisable dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable hex digest of a config dataclass; keys caches and file names."""
    text = json.dumps({"type": type(cfg).__name__, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_dict` output."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise ValueError(f"{cls.__name__} has no field {key!r}")
        ftype = hints[key].type
        target = globals().get(ftype) if isinstance(ftype, str) else ftype
        if dataclasses.is_dataclass(target):
            value = from_dict(target, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
