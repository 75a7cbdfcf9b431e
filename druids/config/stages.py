"""Configuration of the pipeline's stages: the world, its oracles and climate runs, the dataset, the model,
its training and its sampling. Frozen dataclasses: a configuration is a value (hashed, saved with artifacts)."""

from __future__ import annotations

from dataclasses import dataclass


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

    Stores only (the world ignores these): ``time_range`` (first, last) ISO
    times to read (None: all); ``step_hours``: the model's time step, a finer
    store (hourly ERA5) is sub-sampled to it at 00, 06, ... UTC;
    ``split_years``: inclusive (first, last) years of the train, validation and
    test splits (None: ``split_fractions`` and ``gap_days`` as for the world);
    ``static_variables``: time-invariant fields (land-sea mask, orography) that
    join the condition when the store has them (missing ones are left out with
    a warning); ``grid``: ``(n_lon, n_lat)`` of the equiangular grid the model
    works on, a store on another grid is regridded conservatively to it (None:
    the store's grid).
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
    time_range: tuple[str, str] | None = None
    step_hours: int = 6
    split_years: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
    static_variables: tuple[str, ...] = ()
    grid: tuple[int, int] | None = None


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
    ``zonal_mixing``: zonal wavenumbers mixed globally at the U-Net's bottleneck
    (``druids.models.network.ZonalMixing``; 0: none).
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
    zonal_mixing: int = 0


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
    supported, ``channels_last`` and ``compile`` (``torch.compile``, about a minute
    of compilation per forecast call on the CPU) on a copy of the model
    (``sampling.rollout.for_sampling``).
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
    compile: bool = False
