"""The U-Net's activations at every resolution level, by forward hooks, for linear probes and dictionaries.

Layers are named like the submodules of :class:`druids.models.network.UNet` that
produce them (``"input"``, ``"encoder.<level>.<block>"``, ``"mixing"``,
``"decoder.<level>.<block>"``), the keys of ``UNet.forward(..., return_features=True)``;
:data:`NETWORK_INPUT` names what enters the network (``[c_in y, c]`` for the EDM
denoiser), the raw-input control of the probes. :class:`Hooks` records them
during any ``denoise`` call and :func:`replace_output` edits one on the way
through (a causal intervention). For probes, each activation map ``(B, Ch, h, w)``
is averaged onto a coarse ``pool`` grid and flattened (:func:`pooled`): the
probe sees where in the world a channel is active, at the pool's resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

#: The name of the network's own input in :class:`Hooks` (the raw-input control of the probes).
NETWORK_INPUT = "network input"


def unet(denoiser) -> torch.nn.Module:
    """The :class:`~druids.models.network.UNet` inside a denoiser (or the network itself)."""
    return getattr(denoiser, "net", denoiser)


def layer_names(net) -> list[str]:
    """Every layer a hook can record, in the order of the forward pass."""
    names = ["input"]
    names += [f"encoder.{i}.{j}" for i, level in enumerate(net.encoder) for j in range(len(level))]
    names += ["mixing"] if net.mixing is not None else []
    names += [f"decoder.{i}.{j}" for i in reversed(range(len(net.decoder))) for j in range(len(net.decoder[i]))]
    return names


def bottleneck(net) -> str:
    """The coarsest layer: the zonal mixing block where there is one, else the encoder's last block."""
    return "mixing" if net.mixing is not None else f"encoder.{len(net.encoder) - 1}.{len(net.encoder[-1]) - 1}"


def level_layers(net) -> list[str]:
    """One layer per resolution level and side: the last block of each encoder level, the bottleneck, and the
    last block of each decoder level (coarse to fine); the bottleneck appears once."""
    encoder = [f"encoder.{i}.{len(level) - 1}" for i, level in enumerate(net.encoder)][:-1]
    decoder = [f"decoder.{i}.{len(net.decoder[i]) - 1}" for i in reversed(range(len(net.decoder)))]
    return [*encoder, bottleneck(net), *decoder]


class Hooks:
    """Forward hooks that keep the outputs of the layers ``names`` of a denoiser's U-Net (:attr:`outputs`).

    A context manager: hooks are removed on exit. ``detach``: keep tensors
    without their graph (probes); False keeps them differentiable.
    """

    def __init__(self, denoiser, names: Sequence[str], detach: bool = True):
        self.net = unet(denoiser)
        self.names = list(names)
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        modules = dict(self.net.named_modules())
        unknown = [n for n in self.names if n != NETWORK_INPUT and n not in modules]
        if unknown:
            raise ValueError(f"No layer {unknown} in the U-Net; layers are {[NETWORK_INPUT, *layer_names(self.net)]}")

    def _keep(self, name: str, tensor: torch.Tensor) -> None:
        self.outputs[name] = tensor.detach() if self.detach else tensor

    def __enter__(self) -> Hooks:
        modules = dict(self.net.named_modules())
        for name in self.names:
            if name == NETWORK_INPUT:
                hook = self.net.register_forward_pre_hook(lambda _m, args, name=name: self._keep(name, args[0]))
            else:
                hook = modules[name].register_forward_hook(lambda _m, _a, out, name=name: self._keep(name, out))
            self._handles.append(hook)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def replace_output(denoiser, name: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, layer ``name``'s output ``h`` is replaced by ``edit(h)`` before the network goes on."""
    module = dict(unet(denoiser).named_modules())[name]
    handle = module.register_forward_hook(lambda _m, _a, out: edit(out))
    try:
        yield
    finally:
        handle.remove()


def pooled(activation: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
    """``(B, Ch, h, w) -> (B, Ch * ph * pw)``: the map averaged onto a ``pool = (ph, pw)`` grid, flattened."""
    return F.adaptive_avg_pool2d(activation.float(), pool).flatten(1)


def noisy_targets(x: torch.Tensor, sigma: float, denoiser, seed: int) -> torch.Tensor:
    """``x + sigma n`` with the denoiser's own noise ``n`` drawn from ``seed`` (the same draws at every ``sigma``)."""
    generator = torch.Generator().manual_seed(seed)
    return x + sigma * denoiser.noise_like(x.cpu(), generator).to(x.device)


@torch.no_grad()
def probe_inputs(
    denoiser, x: torch.Tensor, c: torch.Tensor, sigma: float, names: Sequence[str], pool: tuple[int, int], seed: int, batch: int = 16
) -> dict[str, np.ndarray]:
    """Pooled activations ``{layer: (N, F)}`` (float32) of the noisy targets ``x + sigma n`` (N, C, H, W) with
    conditions ``c`` (N, Cc, H, W), in batches; ``names`` may include :data:`NETWORK_INPUT`."""
    y = noisy_targets(x, sigma, denoiser, seed)
    device = next(unet(denoiser).parameters()).device
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(x), batch):
        rows = slice(start, start + batch)
        with Hooks(denoiser, names) as hooks:
            denoiser.denoise(y[rows].to(device), c[rows].to(device), sigma)
        for name in names:
            parts[name].append(pooled(hooks.outputs[name], pool).cpu().numpy())
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}
