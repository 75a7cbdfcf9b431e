"""From memorisation to generalisation: two denoisers trained on disjoint sets of weather states.

Kadkhodaie et al. (2024, ICLR, "Generalization in diffusion models arises from
geometry-adaptive harmonic representations") train the same network on two
non-overlapping training sets of ``N`` images each and sample both from the
same noise: for small ``N`` each model reproduces its own training images
(memorisation: a sample is close to its nearest training image and far from
the other model's sample); beyond a transition in ``N`` the two models give
nearly the same sample, which neither has seen (generalisation: they learned
the same density).

Here the states are (condition, 6-h residual) pairs of a subset of channels
(:func:`select_channels`), the models are small conditional EDM denoisers
(:func:`train_denoiser`), and both sample the residual of the same held-out
conditions from the same noise with the deterministic sampler
(:func:`sample_from_noise`). Similarity is the mean-removed cosine
(:func:`cosine_matrix`). The *Gaussian baseline* (:func:`gaussian_samples`):
the optimal denoiser of a Gaussian with each training set's mean and
covariance is its Wiener filter (:mod:`druids.explain.gaussian`), and its
deterministic reverse process maps the noise ``sigma_max n`` to ``mu + C^(1/2) xi``
(``xi`` the whitened noise); for the conditional model, the Gaussian of the
joint (residual, condition) statistics conditioned on the held-out condition.
Agreement that this baseline reaches from the same two training sets is
explained by second-order statistics alone, and is not claimed as generalisation.
The models are independent: :func:`ladder` trains and samples them in local
processes (:func:`druids.runtime.process_map`), each from its own seed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from druids import runtime
from druids.config import ModelConfig, SamplingConfig
from druids.data.dataset import collate
from druids.explain.geometry import NoiseGeometry
from druids.models import build_denoiser, build_loss
from druids.sampling import samplers
from druids.sampling.noise import MemberNoise, member_generator


def disjoint_subsets(n_total: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint random sets of ``size`` indices of ``range(n_total)`` (sorted)."""
    if 2 * size > n_total:
        raise ValueError(f"Two disjoint sets of {size} need {2 * size} states; the training split has {n_total}")
    order = np.random.default_rng(seed).permutation(n_total)
    return np.sort(order[:size]), np.sort(order[size : 2 * size])


def select_channels(condition: torch.Tensor, target: torch.Tensor, channels: Sequence[int], n_state: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions ``(N, n_state + S, H, W)`` (states first, ``n_state`` channels, then ``S`` static ones) and
    targets ``(N, C, H, W)`` reduced to ``channels`` of the current state and of the target, the static channels
    kept: ``(N, len + S, H, W)`` and ``(N, len, H, W)``."""
    index = list(channels)
    return torch.cat([condition[:, index], condition[:, n_state:]], dim=1), target[:, index]


def channel_pairs(dataset, rows: Sequence[int], channels: Sequence[int], n_state: int, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`select_channels` of the samples ``rows`` of a :class:`~druids.data.dataset.ForecastDataset`,
    read ``batch`` at a time (the full condition of every sample never sits in memory at once)."""
    parts = [select_channels(*collate(dataset, rows[k : k + batch], "cpu"), channels, n_state) for k in range(0, len(rows), batch)]
    return torch.cat([c for c, _ in parts]), torch.cat([x for _, x in parts])


def train_denoiser(
    model_cfg: ModelConfig, condition: torch.Tensor, target: torch.Tensor, band, latitude, steps: int, batch: int, lr: float, seed: int
):
    """An EDM denoiser of ``model_cfg`` trained for ``steps`` Adam steps on the pairs ``(condition, target)``.

    Mini-batches of ``batch`` pairs drawn with replacement, GenCast's noise
    levels and EDM's weighting (:func:`druids.models.build_loss`), learning
    rate decaying as a cosine from ``lr`` to 0; no EMA, no condition noise.
    Initialisation, batches and noise come from ``seed``. Returns the model in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        denoiser = build_denoiser(model_cfg, target.shape[1], condition.shape[1], band)
    loss = build_loss(model_cfg, latitude, target.shape[1])
    condition, target = condition.float(), target.float()
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(steps, 1))
    generator = torch.Generator().manual_seed(seed + 1)
    denoiser.train()
    for _ in range(steps):
        rows = torch.randint(0, len(target), (batch,), generator=generator)
        value = loss(denoiser, target[rows], condition[rows], generator)
        optimiser.zero_grad(set_to_none=True)
        value.backward()
        optimiser.step()
        schedule.step()
    return denoiser.eval().requires_grad_(False)


def sample_noise(n: int, shape: Sequence[int], band, seed: int) -> torch.Tensor:
    """The first noise draw of members ``0 .. n-1`` of ``(seed, "model", 0)``: what the samplers start from, ``(n, *shape)``."""
    return MemberNoise([member_generator(seed, "model", 0, k) for k in range(n)], shape, band=band)()


@torch.no_grad()
def sample_from_noise(denoiser, condition: torch.Tensor, sampling: SamplingConfig, seed: int) -> torch.Tensor:
    """One sample per condition ``(n, Cc, H, W)`` with ``sampling``'s solver without churn (deterministic):
    member ``k`` starts from :func:`sample_noise` draw ``k``, so two models given the same ``seed`` share their noise."""
    shape = (denoiser.n_target, *condition.shape[-2:])
    noise = MemberNoise([member_generator(seed, "model", 0, k) for k in range(len(condition))], shape, band=denoiser.noise_band)
    deterministic = dataclasses.replace(sampling, s_churn=0.0)
    return samplers.sample(denoiser, condition, noise, deterministic)[0]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor, weights: np.ndarray) -> np.ndarray:
    """Mean-removed cosine similarity of every field of ``a`` (n, C, H, W) with every field of ``b`` (m, C, H, W): (n, m).

    Each channel of each field loses its own area-weighted mean (``weights``
    (H,)); the cosine is taken in the same weighted inner product over channel,
    latitude and longitude.
    """
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))[:, None]

    def centred(x: torch.Tensor) -> torch.Tensor:
        x = x.double().cpu()
        x = x - (w * x).sum(dim=(-2, -1), keepdim=True) / (w.sum() * x.shape[-1])
        x = (x * w.sqrt()).flatten(1)
        return x / x.norm(dim=1, keepdim=True)

    return (centred(a) @ centred(b).T).numpy()


def gaussian_samples(
    training: torch.Tensor, noise: torch.Tensor, geometry: NoiseGeometry,
    training_conditions: torch.Tensor | None = None, conditions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Samples ``(n, C, H, W)`` of the Gaussian fitted to ``training`` (N, C, H, W) in the noise space (mean and
    covariance, ddof 1), from the whitened diffusion noise ``xi`` of ``noise`` (n, C, H, W).

    Unconditional: ``mu + C^(1/2) xi``, what the deterministic reverse process
    of the Gaussian's optimal denoiser (its Wiener filter) gives from
    ``sigma_max noise`` as ``sigma_max`` grows (in ``G``-orthonormal coordinates,
    where ``noise`` has covariance ``c I``, each eigen-coordinate ``a`` of
    variance ``lambda`` obeys ``da / dsigma = sigma a / (lambda + c sigma^2)`` and
    ends at ``sqrt(lambda / c)`` times its start over ``sigma_max``). With
    ``training_conditions`` (N, Cc, H, W) and ``conditions`` (n, Cc, H, W): the
    Gaussian of the joint (target, condition) statistics conditioned on each
    condition, ``mu_{x|c} + C_{x|c}^(1/2) xi`` (least-norm solution where the
    condition lies outside the training span): second-order statistics alone,
    conditional as the model is. With ``N`` below the condition's dimension
    the conditioning pins the sample down (``C_{x|c} = 0``): a least-norm
    linear regression forecast.
    """
    channels, n = training.shape[1], len(training)
    a = geometry.to_coefficients(training)
    centred = (a - a.mean(dim=0)) / np.sqrt(max(n - 1, 1))  # rows w: x = mu + centred^T w, w ~ N(0, I)
    mean = a.mean(dim=0).expand(len(noise), -1)
    if conditions is not None:
        b = geometry.to_coefficients(training_conditions)
        design = ((b - b.mean(dim=0)) / np.sqrt(max(n - 1, 1))).T  # (Dc, N)
        weights = torch.linalg.lstsq(design, (geometry.to_coefficients(conditions) - b.mean(dim=0)).T, driver="gelsd").solution
        mean = mean + (centred.T @ weights).T
        pinned = torch.linalg.pinv(design, rtol=1e-10) @ design  # projector onto the row space of the design
        centred = (torch.eye(n, dtype=a.dtype) - pinned) @ centred
    _, singular, rows = torch.linalg.svd(centred, full_matrices=False)
    xi = geometry.to_coefficients(noise) / np.sqrt(geometry.variance_per_direction)
    return geometry.from_coefficients(mean + ((xi @ rows.T) * singular) @ rows, channels)


def similarity_rows(
    size: int, samples: tuple[torch.Tensor, torch.Tensor], training: tuple[torch.Tensor, torch.Tensor],
    gaussian: tuple[torch.Tensor, torch.Tensor], noise: torch.Tensor, weights,
) -> pd.DataFrame:
    """One row per held-out condition for training-set size ``size``: ``cross`` (the two models' samples),
    ``nearest_a``, ``nearest_b`` (each sample with its closest state of its own training set), ``noise``
    (model a's sample with the noise it started from: agreement inherited from the shared noise, as an
    under-trained model's would be, shows here), ``gaussian_cross`` (the two Gaussian baselines' samples) and
    ``gaussian_nearest_a``."""
    (first, second), (train_a, train_b), (gauss_a, gauss_b) = samples, training, gaussian
    return pd.DataFrame({
        "size": size,
        "sample": np.arange(len(first)),
        "cross": np.diag(cosine_matrix(first, second, weights)),
        "nearest_a": cosine_matrix(first, train_a, weights).max(axis=1),
        "nearest_b": cosine_matrix(second, train_b, weights).max(axis=1),
        "noise": np.diag(cosine_matrix(first, noise, weights)),
        "gaussian_cross": np.diag(cosine_matrix(gauss_a, gauss_b, weights)),
        "gaussian_nearest_a": cosine_matrix(gauss_a, train_a, weights).max(axis=1),
    })  # fmt: skip


def trained_sample(
    held_out: torch.Tensor, sampling: SamplingConfig, seed: int, model_cfg: ModelConfig, band, latitude, steps: int, batch: int,
    lr: float, training: tuple[torch.Tensor, torch.Tensor, int],
) -> torch.Tensor:
    """:func:`sample_from_noise` of ``held_out`` from ``seed`` by the model :func:`train_denoiser` gives for
    ``training`` = ``(condition, target, model seed)``: ``(n, C, H, W)``. One model of :func:`ladder`,
    module-level so that it runs in a spawned process."""
    condition, target, model_seed = training
    model = train_denoiser(model_cfg, condition, target, band, latitude, steps, batch, lr, model_seed)
    return sample_from_noise(model, held_out, sampling, seed)


def ladder(
    condition: torch.Tensor, target: torch.Tensor, held_out: torch.Tensor, sizes: Sequence[int], model_cfg: ModelConfig,
    sampling: SamplingConfig, geometry: NoiseGeometry, latitude, steps: int, batch: int, lr: float, seed: int,
    progress: bool = True, processes: int | None = None,
) -> tuple[pd.DataFrame, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """For each training-set size: two models on disjoint random sets of the training pairs ``(condition,
    target)``, each sampled from the same noise for the ``held_out`` conditions; :func:`similarity_rows`
    for all sizes, and the samples ``{size: (model a, model b)}``.

    Size number ``k`` draws its sets from ``seed + k`` and model ``j`` of it
    trains from ``seed + 100 k + j``. The ``2 len(sizes)`` models (equal work:
    ``steps`` batches each) are trained and sampled by
    :func:`druids.runtime.process_map` over ``processes`` local processes
    (None: one per CPU core, at most one per model, CUDA or not: they run on
    the CPU; 1: one after another in this process), the Gaussian baselines
    and similarities here. ``progress``: a bar over the trained models.
    """
    sets = [disjoint_subsets(len(target), size, seed + k) for k, size in enumerate(sizes)]
    trainings = [(condition[s], target[s], seed + 100 * k + j) for k, pair in enumerate(sets) for j, s in enumerate(pair)]
    task = functools.partial(trained_sample, held_out, sampling, seed, model_cfg, geometry.band, latitude, steps, batch, lr)
    processes = runtime.local_processes(len(trainings), "cpu") if processes is None else processes
    sampled = runtime.process_map(task, trainings, processes, desc="memorisation models", progress=progress)
    noise = sample_noise(len(held_out), target.shape[1:], geometry.band, seed)
    tables, samples = [], {}
    for k, (size, pair) in enumerate(zip(sizes, sets)):
        samples[size] = (sampled[2 * k], sampled[2 * k + 1])
        gaussian = tuple(gaussian_samples(target[s], noise, geometry, condition[s], held_out) for s in pair)
        tables.append(similarity_rows(size, samples[size], tuple(target[s] for s in pair), gaussian, noise, geometry.weights))
    return pd.concat(tables, ignore_index=True), samples
