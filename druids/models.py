"""Conditional denoiser on the latitude-longitude grid and its two objectives.

Shapes: ``y`` noisy target ``(B, C, H, W)``, ``c`` condition ``(B, Cc, H, W)``,
``sigma`` ``(B,)``, with ``H`` latitudes and ``W`` longitudes (32 x 64 here).

The network (:class:`UNet`) is a small 2-D U-Net whose 3x3 convolutions see the
sphere through :func:`pad_sphere`: circular in longitude, and "across the pole"
in latitude (the row beyond a pole is the row next to it, half-way round the
globe). Two variants, chosen by ``ModelConfig.bias_free``:

* ``bias_free=True`` (Mohan et al. 2020, ICLR, "Robust and interpretable blind
  image denoising via bias-free convolutional neural networks"; Kadkhodaie et
  al. 2024, ICLR, "Generalization in diffusion models arises from
  geometry-adaptive harmonic representations"): no additive constant anywhere
  (no bias in any convolution or linear layer, the noise-level embedding
  included), a scale-only normalisation (:class:`Norm`, itself homogeneous of
  degree one), the noise level enters through positive multiplicative
  per-channel gains, and a positively homogeneous activation (ReLU or leaky
  ReLU). The network is then positively homogeneous of degree one in its whole
  input ``z = [c_in * y, c]``, so for fixed ``sigma``::

      denoise(a*y, a*c, sigma) = a * denoise(y, c, sigma)     for a > 0
      denoise(y, c, sigma) = J_y y + J_c c                     (Euler)

  for both wrappers below (their skip and input scalings depend on ``sigma``
  only). This is exact up to rounding except for inputs with an RMS below
  about 1e-10 (``SCALE_EPS``). Because of the normalisation the network is
  homogeneous but not piecewise linear (Mohan et al. freeze BatchNorm
  statistics at test time instead; that would need state outside ``forward``).
* ``bias_free=False``: the ordinary network for comparison, with biases,
  GroupNorm and an additive noise embedding.

Wrappers sharing one interface, ``denoise(y, c, sigma) -> x_hat`` in the
convention ``y = x0 + sigma * eps``, so that samplers and explainability treat
them alike:

* :class:`EDMDenoiser`: Karras et al. 2022 (NeurIPS, "Elucidating the design
  space of diffusion-based generative models") preconditioning, trained with
  the noise-level distribution of GenCast (Price et al. 2025, Nature).
* :class:`FlowMatchingDenoiser`: rectified flow / linear stochastic interpolant
  (Lipman et al. 2023; Liu et al. 2023, ICLR; as in Finn et al. 2024's
  generative sea-ice model) predicting the velocity ``eps - x0``.

Probing: ``UNet.forward(z, c_noise, return_features=True)`` also returns a dict
of intermediate activations, keyed like the submodules that produce them
(``"input"``, ``"encoder.<level>.<block>"``, ``"decoder.<level>.<block>"``), so
forward hooks on ``net.encoder[level][block]`` see the same tensors.

Everything is written without in-place operations or state mutation in
``forward``, so ``torch.func`` (``jvp``, ``vjp``, ``jacrev``, ``vmap``) works.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from druids.config import ModelConfig
from druids.data import spectral
from druids.data.dataset import area_weights as dataset_area_weights

ACTIVATIONS = {
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,
    "silu": F.silu,
    "gelu": F.gelu,
}
HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu")
# Floor of a group's mean square relative to the input's (exactly homogeneous,
# see Norm); guards 0/0 when a group is all zero.
NORM_EPS = 1e-12
# Absolute floor of the input's mean square: the one additive constant of the
# bias-free network, it changes outputs only for inputs with RMS below ~1e-10.
SCALE_EPS = 1e-20


def pad_sphere(x: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Pad a lat-lon field for a convolution on the sphere.

    ``(B, C, H, W) -> (B, C, H + 2*width, W + 2*width)``. Longitude is padded
    circularly. Latitude is padded "across the pole": the ``width`` rows beyond
    a pole are the ``width`` rows nearest to it, in mirrored order, shifted by
    half the longitudes (180 degrees). This is exact for grids whose rows are
    symmetric about the poles without a row on the pole (Gaussian grids and
    the 64 x 32 WeatherBench2 "equiangular conservative" grid). Vector
    components (u, v) change sign across a pole; the padding does not flip them
    (it does not know which channels are vectors) and the learned filters see
    that only in the one padded row. Needs an even ``W``.
    """
    half = x.shape[-1] // 2
    north = torch.roll(torch.flip(x[..., :width, :], dims=(-2,)), half, dims=-1)
    south = torch.roll(torch.flip(x[..., -width:, :], dims=(-2,)), half, dims=-1)
    x = torch.cat([north, x, south], dim=-2)
    return torch.cat([x[..., -width:], x, x[..., :width]], dim=-1)


LATITUDE_WEIGHTINGS = ("area", "sqrt_area", "uniform")


def latitude_weights(latitudes, weighting: str = "area") -> torch.Tensor:
    """Loss weights per latitude, mean 1, float64: ``latitudes`` in degrees, (H,) -> (H,).

    ``"area"``: cos(latitude) (:func:`druids.data.dataset.area_weights`), the
    sphere's own measure; ``"sqrt_area"``: sqrt(cos(latitude)), which counts
    the polar caps about three times more than their area; ``"uniform"``: every
    grid row alike. See ``ModelConfig.latitude_weighting``.
    """
    if weighting not in LATITUDE_WEIGHTINGS:
        raise ValueError(f"latitude weighting {weighting!r}; choose one of {', '.join(LATITUDE_WEIGHTINGS)}")
    area = dataset_area_weights(np.asarray(latitudes, dtype=np.float64)).values
    weights = {"area": area, "sqrt_area": np.sqrt(area), "uniform": np.ones_like(area)}[weighting]
    return torch.as_tensor(weights / weights.mean())


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, lat_weights: torch.Tensor, channel_weights: torch.Tensor
) -> torch.Tensor:
    """Area- and channel-weighted mean squared error per sample.

    ``pred, target`` (B, C, H, W), ``lat_weights`` (H,) (mean 1, see
    :func:`latitude_weights`), ``channel_weights`` (C,) -> (B,).
    """
    if lat_weights.shape[0] != pred.shape[-2] or channel_weights.shape[0] != pred.shape[1]:
        raise ValueError(
            f"Loss weights do not fit the data: {lat_weights.shape[0]} latitude weights and "
            f"{channel_weights.shape[0]} channel weights for fields of shape {tuple(pred.shape)} "
            "(B, C, H, W); build the denoiser with the grid's latitudes and one weight per target channel."
        )
    weights = channel_weights[:, None, None] * lat_weights[:, None]
    return (weights * (pred - target) ** 2).mean(dim=(1, 2, 3))


class SphereConv(nn.Conv2d):
    """``k x k`` convolution (k odd) with :func:`pad_sphere` padding; keeps (H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.kernel_size[0] // 2
        return super().forward(pad_sphere(x, width) if width else x)


class Norm(nn.Module):
    """Group normalisation; scale-only in the bias-free variant.

    Biased: ``nn.GroupNorm`` (mean subtraction, learned gain and shift).
    Bias-free: per sample and group, ``h * g * s / sqrt(mean(h^2) + NORM_EPS * s^2)``
    with a learned per-channel gain ``g``, no mean subtraction and no shift.
    ``s`` (B,) is the RMS of the network's input: a plain RMS normalisation
    would be scale-invariant (homogeneous of degree 0) and break the degree-1
    homogeneity of the residual blocks; multiplying by ``s`` keeps every
    activation of degree 1 while the network still sees unit-scale features.
    The ``eps`` term is scaled by ``s^2`` too, so homogeneity stays exact.
    Groups: ``gcd(C, 8)`` of them, for both variants.
    """

    def __init__(self, channels: int, bias_free: bool):
        super().__init__()
        self.groups = math.gcd(channels, 8)
        self.bias_free = bias_free
        if bias_free:
            self.weight = nn.Parameter(torch.ones(channels))
        else:
            self.group_norm = nn.GroupNorm(self.groups, channels)

    def forward(self, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``h`` (B, C, H, W), ``scale`` (B,) -> (B, C, H, W)."""
        if not self.bias_free:
            return self.group_norm(h)
        b, ch = h.shape[:2]
        mean_square = h.reshape(b, self.groups, -1).pow(2).mean(dim=2)  # (B, G)
        factor = scale[:, None] / torch.sqrt(mean_square + NORM_EPS * scale[:, None] ** 2)
        factor = factor.repeat_interleave(ch // self.groups, dim=1) * self.weight  # (B, C)
        return h * factor[:, :, None, None]


class NoiseEmbedding(nn.Module):
    """Fourier features of the scalar noise conditioning, then a 2-layer MLP: (B,) -> (B, dim).

    Biases are dropped in the bias-free variant too (although the embedding
    depends on the noise level only and could not break homogeneity).
    """

    def __init__(self, dim: int, bias: bool):
        super().__init__()
        self.n_freq = dim // 2
        self.linear1 = nn.Linear(2 * self.n_freq, dim, bias=bias)
        self.linear2 = nn.Linear(dim, dim, bias=bias)

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        freqs = math.pi * torch.logspace(0, 2, self.n_freq, dtype=c_noise.dtype, device=c_noise.device)
        angles = c_noise[:, None] * freqs
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
        return self.linear2(F.silu(self.linear1(features)))


class ResBlock(nn.Module):
    """Pre-activation residual block with noise conditioning: (B, Cin, H, W) -> (B, Cout, H, W).

    Noise conditioning after the first convolution: ``h * exp(W e)`` (a positive
    per-channel gain) in the bias-free variant, ``h + W e + b`` otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, activation: str, bias_free: bool):
        super().__init__()
        bias = not bias_free
        self.bias_free = bias_free
        self.act = ACTIVATIONS[activation]
        self.norm1 = Norm(in_channels, bias_free)
        self.conv1 = SphereConv(in_channels, out_channels, 3, bias=bias)
        self.noise = nn.Linear(emb_dim, out_channels, bias=bias)
        self.norm2 = Norm(out_channels, bias_free)
        self.conv2 = SphereConv(out_channels, out_channels, 3, bias=bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=bias) if in_channels != out_channels else None
        if bias_free:
            nn.init.zeros_(self.noise.weight)  # gains start at 1

    def forward(self, x: torch.Tensor, emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, scale)))
        e = self.noise(emb)[:, :, None, None]
        h = h * torch.exp(e) if self.bias_free else h + e
        h = self.conv2(self.act(self.norm2(h, scale)))
        skip = x if self.skip is None else self.skip(x)
        return (skip + h) / math.sqrt(2.0)


class UNet(nn.Module):
    """U-Net on the lat-lon grid: ``(B, Cin, H, W), c_noise (B,) -> (B, Cout, H, W)``.

    Levels ``i = 0..L-1`` have ``base_channels * channel_mults[i]`` channels and
    ``blocks_per_level`` residual blocks in the encoder and in the decoder; the
    grid is halved between levels (2x2 average pooling, nearest-neighbour
    upsampling), so ``H`` and ``W / 2`` must be divisible by ``2**(L-1)``. Each
    decoder level starts from the upsampled coarser features concatenated with
    the encoder output of the same level. The output is exactly equivariant to
    zonal rolls by multiples of ``2**(L-1)`` grid points.
    """

    def __init__(self, in_channels: int, out_channels: int, cfg: ModelConfig):
        super().__init__()
        check_model_config(cfg)
        bias = not cfg.bias_free
        self.bias_free = cfg.bias_free
        self.in_channels, self.out_channels = in_channels, out_channels
        self.act = ACTIVATIONS[cfg.activation]
        self.downsampling = 2 ** (len(cfg.channel_mults) - 1)
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        emb_dim = 4 * cfg.base_channels

        self.embedding = NoiseEmbedding(emb_dim, bias)
        self.input = SphereConv(in_channels, widths[0], 3, bias=bias)
        self.encoder = nn.ModuleList()
        previous = widths[0]
        for width in widths:
            blocks = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(previous, width, emb_dim, cfg.activation, cfg.bias_free))
                previous = width
            self.encoder.append(nn.ModuleList(blocks))
        self.decoder = nn.ModuleList()
        for i, width in enumerate(widths):  # decoder[i] works at level i; run from coarse to fine
            blocks = []
            below = widths[min(i + 1, len(widths) - 1)]  # channels arriving from the coarser level
            for j in range(cfg.blocks_per_level):
                in_ch = below + width if j == 0 else width
                blocks.append(ResBlock(in_ch, width, emb_dim, cfg.activation, cfg.bias_free))
            self.decoder.append(nn.ModuleList(blocks))
        self.output_norm = Norm(widths[0], cfg.bias_free)
        self.output = SphereConv(widths[0], out_channels, 3, bias=bias)

    def forward(self, z: torch.Tensor, c_noise: torch.Tensor, return_features: bool = False):
        """``z`` (B, Cin, H, W), ``c_noise`` (B,) -> (B, Cout, H, W) [, dict of features]."""
        b, ch, height, width = z.shape
        if ch != self.in_channels:
            raise ValueError(f"UNet expects {self.in_channels} input channels, got {ch}")
        if height % self.downsampling or width % (2 * self.downsampling):
            raise ValueError(
                f"Grid {height} x {width} (lat x lon) does not fit a U-Net with {self.downsampling}x "
                f"downsampling: latitudes must be a multiple of {self.downsampling} and longitudes of "
                f"{2 * self.downsampling}; use fewer channel_mults."
            )
        scale = torch.sqrt(z.pow(2).mean(dim=(1, 2, 3)) + SCALE_EPS)
        emb = self.embedding(c_noise)
        features = {}
        h = self.input(z)
        features["input"] = h
        skips = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            for j, block in enumerate(level):
                h = block(h, emb, scale)
                features[f"encoder.{i}.{j}"] = h
            skips.append(h)
        for i in reversed(range(len(self.decoder))):
            if i < len(self.decoder) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips[i]], dim=1)
            for j, block in enumerate(self.decoder[i]):
                h = block(h, emb, scale)
                features[f"decoder.{i}.{j}"] = h
        out = self.output(self.act(self.output_norm(h, scale)))
        return (out, features) if return_features else out


def check_model_config(cfg: ModelConfig) -> None:
    """Raise a clear ``ValueError`` for an unusable :class:`ModelConfig`."""
    if cfg.objective not in ("edm", "flow"):
        raise ValueError(f"ModelConfig.objective={cfg.objective!r}; choose 'edm' or 'flow'")
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"ModelConfig.activation={cfg.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if cfg.bias_free and cfg.activation not in HOMOGENEOUS_ACTIVATIONS:
        raise ValueError(
            f"A bias-free model needs a positively homogeneous activation, not {cfg.activation!r}; "
            f"choose one of {', '.join(HOMOGENEOUS_ACTIVATIONS)} or set bias_free=False"
        )
    if cfg.latitude_weighting not in LATITUDE_WEIGHTINGS:
        raise ValueError(
            f"ModelConfig.latitude_weighting={cfg.latitude_weighting!r}; choose one of {', '.join(LATITUDE_WEIGHTINGS)}"
        )
    if not cfg.channel_mults or cfg.blocks_per_level < 1 or cfg.base_channels < 1:
        raise ValueError("ModelConfig needs at least one level, one block per level and one base channel")


class Denoiser(nn.Module):
    """Common part of the two wrappers: the network, the loss weights and the noise.

    ``lat_weights`` (H,) latitude weights of mean 1 (:func:`latitude_weights`) in the
    data's row order,
    ``channel_weights`` (C,) per target channel (default ones). Both are saved
    in the state dict, so a checkpoint for another grid fails to load.
    ``noise_sphere``: ``(latitudes in degrees, truncation)`` to diffuse with noise
    white on the sphere up to that total wavenumber (:meth:`noise_like`), or
    None for noise white on the grid. Samplers use the same noise.
    """

    def __init__(
        self,
        net: UNet,
        lat_weights: torch.Tensor,
        channel_weights: torch.Tensor | None = None,
        noise_sphere: tuple[np.ndarray, int] | None = None,
    ):
        super().__init__()
        self.net = net
        self.noise_sphere = noise_sphere
        self.n_target = net.out_channels
        if channel_weights is None:
            channel_weights = torch.ones(self.n_target)
        self.register_buffer("lat_weights", torch.as_tensor(lat_weights, dtype=torch.float32).clone())
        self.register_buffer("channel_weights", torch.as_tensor(channel_weights, dtype=torch.float32).clone())

    def _per_sample(self, value, like: torch.Tensor) -> torch.Tensor:
        """A noise level or time as a (B,) tensor of ``like``'s dtype; a scalar is broadcast."""
        return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(like.shape[0])

    def noise_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise shaped like ``x`` (B, C, H, W), drawn from ``generator`` on its device.

        White on the grid, or, with ``noise_sphere``, white on the sphere and
        band-limited (:func:`druids.data.spectral.sphere_noise`), so that noisy
        targets stay in the space of the world's states.
        """
        if self.noise_sphere is None:
            draw_device = generator.device if generator is not None else x.device
            return torch.randn(x.shape, generator=generator, device=draw_device, dtype=x.dtype).to(x.device)
        latitude, truncation = self.noise_sphere
        return spectral.sphere_noise(x.shape, generator, latitude, truncation, x.dtype, x.device)

    def weighted_mse(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Area- and channel-weighted MSE per sample: (B, C, H, W) x 2 -> (B,)."""
        return weighted_mse(pred, target, self.lat_weights.to(pred.dtype), self.channel_weights.to(pred.dtype))


class EDMDenoiser(Denoiser):
    """EDM-preconditioned denoiser (Karras et al. 2022, Table 1), GenCast settings.

    ``D(y, c; sigma) = c_skip y + c_out F([c_in y, c]; c_noise)`` with
    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = log(sigma) / 4`` and
    ``sd = sigma_data`` (1 for residual targets normalised to unit variance, as
    in GenCast). The condition ``c`` is not scaled.

    Training noise levels follow GenCast (Price et al. 2025): the distribution
    induced by the rho-schedule, ``sigma = (smax^(1/rho) + u (smin^(1/rho) -
    smax^(1/rho)))^rho`` with ``u ~ U(0, 1)``, ``[smin, smax] = [0.02, 88]``,
    ``rho = 7``; loss weight ``lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2``.
    """

    def __init__(
        self,
        net: UNet,
        lat_weights: torch.Tensor,
        channel_weights: torch.Tensor | None = None,
        sigma_data: float = 1.0,
        sigma_min: float = 0.02,
        sigma_max: float = 88.0,
        rho: float = 7.0,
        noise_sphere: tuple[np.ndarray, int] | None = None,
    ):
        super().__init__(net, lat_weights, channel_weights, noise_sphere)
        self.sigma_data, self.sigma_min, self.sigma_max, self.rho = sigma_data, sigma_min, sigma_max, rho

    def denoise(self, y: torch.Tensor, c: torch.Tensor, sigma) -> torch.Tensor:
        """``y`` (B, C, H, W), ``c`` (B, Cc, H, W), ``sigma > 0`` (B,) or scalar -> x0 estimate (B, C, H, W)."""
        sigma = self._per_sample(sigma, y)
        sd = self.sigma_data
        s = sigma[:, None, None, None]
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        out = self.net(torch.cat([c_in * y, c], dim=1), torch.log(sigma) / 4)
        return c_skip * y + c_out * out

    def sample_sigma(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` training noise levels from the rho-schedule-induced distribution: (n,)."""
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (hi + u * (lo - hi)) ** self.rho

    def loss(self, x0: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Batch-mean of ``lambda(sigma) * weighted_mse(D(x0 + sigma eps, c; sigma), x0)``; scalar."""
        sigma = self.sample_sigma(x0.shape[0], generator, x0.device).to(x0.dtype)
        eps = self.noise_like(x0, generator)
        y = x0 + sigma[:, None, None, None] * eps
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return (weight * self.weighted_mse(self.denoise(y, c, sigma), x0)).mean()


class FlowMatchingDenoiser(Denoiser):
    """Rectified flow / linear interpolant (Lipman et al. 2023; Liu et al. 2023).

    ``x_t = (1 - t) x0 + t eps`` with ``t`` in [0, 1]; the network predicts the
    velocity ``v = eps - x0`` from ``[x_t, c]`` and ``c_noise = t``. Training
    times are uniform on [0, 1] (Liu et al. 2023); the loss is the area- and
    channel-weighted MSE of the velocity.

    As a denoiser in the EDM convention ``y = x0 + sigma eps``: ``x_t = (1 - t) y``
    with ``sigma = t / (1 - t)``, i.e. ``t = sigma / (1 + sigma)``, and
    ``x0_hat = x_t - t v_hat``.
    """

    def velocity(self, x_t: torch.Tensor, c: torch.Tensor, t) -> torch.Tensor:
        """``x_t`` (B, C, H, W), ``c`` (B, Cc, H, W), ``t`` (B,) or scalar -> v (B, C, H, W)."""
        t = self._per_sample(t, x_t)
        return self.net(torch.cat([x_t, c], dim=1), t)

    def denoise(self, y: torch.Tensor, c: torch.Tensor, sigma) -> torch.Tensor:
        """``y`` (B, C, H, W), ``c`` (B, Cc, H, W), ``sigma`` (B,) or scalar -> x0 estimate (B, C, H, W)."""
        sigma = self._per_sample(sigma, y)
        t = sigma / (1 + sigma)
        x_t = y / (1 + sigma)[:, None, None, None]  # (1 - t) y without cancellation
        return x_t - t[:, None, None, None] * self.velocity(x_t, c, t)

    def loss(self, x0: torch.Tensor, c: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Batch-mean of ``weighted_mse(velocity(x_t, c, t), eps - x0)``; scalar."""
        t = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        eps = self.noise_like(x0, generator)
        tt = t[:, None, None, None]
        x_t = (1 - tt) * x0 + tt * eps
        return self.weighted_mse(self.velocity(x_t, c, t), eps - x0).mean()


def build_denoiser(
    model_cfg: ModelConfig, n_target: int, n_condition: int, latitudes, channel_weights=None, noise_truncation=None
) -> EDMDenoiser | FlowMatchingDenoiser:
    """The denoiser of ``model_cfg.objective`` ("edm" or "flow") for a grid with ``latitudes`` (degrees, (H,)).

    ``channel_weights`` (n_target,): per-channel loss weights, default ones.
    ``noise_truncation``: diffuse with noise white on the sphere up to this
    total wavenumber (``DatasetConfig.spectral_truncation``; needs a Gaussian
    grid), or None for noise white on the grid.
    """
    check_model_config(model_cfg)
    net = UNet(n_target + n_condition, n_target, model_cfg)
    weights = latitude_weights(latitudes, model_cfg.latitude_weighting)
    sphere = None if noise_truncation is None else (np.asarray(latitudes, dtype=np.float64), int(noise_truncation))
    if model_cfg.objective == "flow":
        return FlowMatchingDenoiser(net, weights, channel_weights, sphere)
    return EDMDenoiser(
        net,
        weights,
        channel_weights,
        sigma_data=model_cfg.sigma_data,
        sigma_min=model_cfg.sigma_min,
        sigma_max=model_cfg.sigma_max,
        rho=model_cfg.rho,
        noise_sphere=sphere,
    )


@torch.no_grad()
def homogeneity_error(denoiser: Denoiser, y: torch.Tensor, c: torch.Tensor, sigma: torch.Tensor, scales) -> np.ndarray:
    """Relative error ||D(a y, a c) - a D(y, c)|| / ||a D(y, c)|| for each scale ``a`` (0 for a bias-free net)."""
    base = denoiser.denoise(y, c, sigma)
    errors = [
        float(torch.linalg.vector_norm(denoiser.denoise(a * y, a * c, sigma) - a * base) / torch.linalg.vector_norm(a * base))
        for a in scales
    ]
    return np.asarray(errors)


@torch.no_grad()
def denoise_at_levels(denoiser: Denoiser, x0: torch.Tensor, c: torch.Tensor, sigmas, generator: torch.Generator):
    """Noisy inputs y = x0 + sigma * eps and their denoised estimates, for one sample.

    ``x0`` (C, H, W), ``c`` (Cc, H, W); returns two tensors (len(sigmas), C, H, W).
    """
    sigma = torch.as_tensor(np.asarray(sigmas), dtype=x0.dtype)
    eps = denoiser.noise_like(x0[None].expand(len(sigma), *x0.shape), generator)
    noisy = x0[None] + sigma[:, None, None, None] * eps
    return noisy, denoiser.denoise(noisy, c[None].expand(len(sigma), *c.shape), sigma)
