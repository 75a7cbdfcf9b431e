"""The network: a small bias-free U-Net on the latitude-longitude grid.

Shapes: input ``z`` ``(B, Cin, H, W)`` and noise conditioning ``c_noise``
``(B,)``, output ``(B, Cout, H, W)``, with ``H`` latitudes and ``W``
longitudes (32 x 64 here). The network knows nothing of noise schedules
beyond its scalar conditioning input; preconditioning lives in
:mod:`druids.models.denoisers`, losses in :mod:`druids.models.losses`.

Its 3x3 convolutions see the sphere through :func:`pad_sphere`: circular in
longitude, and "across the pole" in latitude (the row beyond a pole is the row
next to it, half-way round the globe). Two variants, chosen by
``ModelConfig.bias_free``:

* ``bias_free=True`` (Mohan et al. 2020, ICLR, "Robust and interpretable blind
  image denoising via bias-free convolutional neural networks"; Kadkhodaie et
  al. 2024, ICLR, "Generalization in diffusion models arises from
  geometry-adaptive harmonic representations"): no additive constant anywhere
  (no bias in any convolution or linear layer, the noise-level embedding
  included), a scale-only normalisation (:class:`Norm`, itself homogeneous of
  degree one), the noise level enters through positive multiplicative
  per-channel gains, and a positively homogeneous activation (ReLU or leaky
  ReLU). The network is then positively homogeneous of degree one in its whole
  input ``z``: ``net(a z, c_noise) = a net(z, c_noise)`` for ``a > 0``, exact up
  to rounding except for inputs with an RMS below about 1e-10
  (``SCALE_EPS``). Because of the normalisation the network is homogeneous but
  not piecewise linear (Mohan et al. freeze BatchNorm statistics at test time
  instead; that would need state outside ``forward``).
* ``bias_free=False``: the ordinary network for comparison, with biases,
  GroupNorm and an additive noise embedding.

Probing: ``UNet.forward(z, c_noise, return_features=True)`` also returns a dict
of intermediate activations, keyed like the submodules that produce them
(``"input"``, ``"encoder.<level>.<block>"``, ``"decoder.<level>.<block>"``), so
forward hooks on ``net.encoder[level][block]`` see the same tensors.

Everything is written without in-place operations or state mutation in
``forward``, so ``torch.func`` (``jvp``, ``vjp``, ``jacrev``, ``vmap``) works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from druids.config import ModelConfig

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
        # per channel, then per group: no reshape of h, so a channels-last h stays channels-last
        mean_square = h.pow(2).mean(dim=(2, 3)).reshape(b, self.groups, -1).mean(dim=2)  # (B, G)
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


class ZonalMixing(nn.Module):
    """Global mixing around each latitude circle at the bottleneck: channels mixed per zonal wavenumber.

    ``h + irfft(W_m rfft(norm(h))_m)`` for zonal wavenumbers ``m < wavenumbers``
    with a learned complex ``C x C`` matrix ``W_m`` per wavenumber: a Fourier
    neural operator layer (Li et al. 2021, ICLR) in longitude, where the
    Fourier basis is exact on the sphere. It gives the regional U-Net a global
    zonal receptive field. Linear and without bias (homogeneous of degree one
    like the rest of the bias-free network); ``W`` starts at zero, so the block
    starts as the identity. ``h`` (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, wavenumbers: int, bias_free: bool):
        super().__init__()
        self.norm = Norm(channels, bias_free)
        self.wavenumbers = wavenumbers
        self.weight = nn.Parameter(torch.zeros(wavenumbers, channels, channels, 2))  # (m, out, in, re/im)

    def forward(self, h: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        n_lon = h.shape[-1]
        if self.wavenumbers > n_lon // 2 + 1:
            raise ValueError(f"ZonalMixing keeps {self.wavenumbers} zonal wavenumbers; the bottleneck has only {n_lon // 2 + 1}")
        x = self.norm(h, scale)
        x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x  # FFTs in float32 or float64
        coefficients = torch.fft.rfft(x, dim=-1)[..., : self.wavenumbers]  # (B, C, H, m)
        weight = torch.view_as_complex(self.weight.to(x.dtype).contiguous())  # channels-last leaves a 4-d weight strided
        mixed = torch.einsum("bchm,mdc->bdhm", coefficients, weight)
        return h + torch.fft.irfft(mixed, n=n_lon, dim=-1).to(h.dtype)


class UNet(nn.Module):
    """U-Net on the lat-lon grid: ``(B, Cin, H, W), c_noise (B,) -> (B, Cout, H, W)``.

    Levels ``i = 0..L-1`` have ``base_channels * channel_mults[i]`` channels and
    ``blocks_per_level`` residual blocks in the encoder and in the decoder; the
    grid is halved between levels (2x2 average pooling, nearest-neighbour
    upsampling), so ``H`` and ``W / 2`` must be divisible by ``2**(L-1)``. Each
    decoder level starts from the upsampled coarser features concatenated with
    the encoder output of the same level. ``ModelConfig.zonal_mixing`` > 0 adds
    a :class:`ZonalMixing` block at the bottleneck. The output is exactly equivariant to
    zonal rolls by multiples of ``2**(L-1)`` grid points.
    """

    def __init__(self, in_channels: int, out_channels: int, cfg: ModelConfig):
        super().__init__()
        check_network_config(cfg)
        bias = not cfg.bias_free
        self.bias_free = cfg.bias_free
        self.in_channels, self.out_channels = in_channels, out_channels
        self.memory_format = torch.contiguous_format  # see use_channels_last
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
        self.mixing = ZonalMixing(widths[-1], cfg.zonal_mixing, cfg.bias_free) if cfg.zonal_mixing else None
        self.output_norm = Norm(widths[0], cfg.bias_free)
        self.output = SphereConv(widths[0], out_channels, 3, bias=bias)

    def use_channels_last(self, enable: bool = True) -> UNet:
        """Run in the channels-last memory layout (weights and activations NHWC), or back in NCHW.

        Same arithmetic, another layout: oneDNN's convolutions on the CPU are
        several times faster on channels-last tensors (``bench/training.py``).
        Returns ``self``.
        """
        self.memory_format = torch.channels_last if enable else torch.contiguous_format
        return self.to(memory_format=self.memory_format)

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
        z = z.contiguous(memory_format=self.memory_format)
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
        if self.mixing is not None:
            h = skips[-1] = self.mixing(h, scale)
            features["mixing"] = h
        for i in reversed(range(len(self.decoder))):
            if i < len(self.decoder) - 1:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips[i]], dim=1)
            for j, block in enumerate(self.decoder[i]):
                h = block(h, emb, scale)
                features[f"decoder.{i}.{j}"] = h
        out = self.output(self.act(self.output_norm(h, scale)))
        return (out, features) if return_features else out


def check_network_config(cfg: ModelConfig) -> None:
    """Raise a clear ``ValueError`` for a network :class:`ModelConfig` cannot build."""
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"ModelConfig.activation={cfg.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
    if cfg.bias_free and cfg.activation not in HOMOGENEOUS_ACTIVATIONS:
        raise ValueError(
            f"A bias-free model needs a positively homogeneous activation, not {cfg.activation!r}; "
            f"choose one of {', '.join(HOMOGENEOUS_ACTIVATIONS)} or set bias_free=False"
        )
    if not cfg.channel_mults or cfg.blocks_per_level < 1 or cfg.base_channels < 1:
        raise ValueError("ModelConfig needs at least one level, one block per level and one base channel")
