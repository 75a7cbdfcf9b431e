"""A sparse autoencoder on a layer's activations: a dictionary of directions the network composes its states of.

Top-k sparse autoencoder (Makhzani & Frey 2014, "k-sparse autoencoders"; Gao
et al. 2024, "Scaling and evaluating sparse autoencoders"): each activation
vector ``h`` (the channels at one grid point of a layer, ``(Ch,)``) is coded as
``a = TopK(ReLU(W_e (h / s - b) + b_e))`` (all but the ``k`` largest entries set to
zero) and decoded as ``h_hat = s (a D + b)``, with unit-norm dictionary atoms
(rows of ``D``), a learned centre ``b`` and a fixed scale ``s`` (the RMS of
the training activations). Trained by Adam on the squared error; the encoder
starts as the transpose of the decoder, as in Gao et al.

Sparse dictionaries of this kind found interpretable features (cyclones,
atmospheric rivers, seasons) in a deterministic weather model's activations;
here they serve to find directions of the denoiser's bottleneck that track a
meteorological feature (:func:`match_atoms`) and to test that the denoiser
*uses* them (:func:`scale_atom`): scaling one atom's contribution and decoding
must move the output as the atom's correlations predict.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from druids.explain.features import replace_output


class TopKAutoencoder(nn.Module):
    """``n_atoms`` unit-norm atoms of ``n_inputs`` channels, ``k`` active per vector; ``scale``: the input's RMS."""

    def __init__(self, n_inputs: int, n_atoms: int, k: int, scale: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        if not 0 < k <= n_atoms:
            raise ValueError(f"k = {k} must be between 1 and n_atoms = {n_atoms}")
        self.k = k
        atoms = torch.randn(n_atoms, n_inputs, generator=generator)
        self.atoms = nn.Parameter(atoms / atoms.norm(dim=1, keepdim=True))
        self.encoder = nn.Parameter(self.atoms.detach().clone())
        self.encoder_bias = nn.Parameter(torch.zeros(n_atoms))
        self.centre = nn.Parameter(torch.zeros(n_inputs))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        """Sparse codes ``(n, n_atoms)`` (k non-negative entries per row) of vectors ``h`` ``(n, n_inputs)``."""
        pre = torch.relu((h / self.scale - self.centre) @ self.encoder.T + self.encoder_bias)
        top = torch.topk(pre, self.k, dim=1)
        return torch.zeros_like(pre).scatter(1, top.indices, top.values)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Vectors ``(n, n_inputs)`` of codes ``(n, n_atoms)``."""
        return self.scale * (codes @ self.atoms + self.centre)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(h))

    @torch.no_grad()
    def normalise_atoms(self) -> None:
        self.atoms.div_(self.atoms.norm(dim=1, keepdim=True).clamp_min(1e-12))


def map_vectors(activation: torch.Tensor) -> torch.Tensor:
    """A layer's maps ``(B, Ch, h, w)`` as one vector per grid point ``(B h w, Ch)``."""
    return activation.permute(0, 2, 3, 1).reshape(-1, activation.shape[1])


def train_autoencoder(
    vectors: torch.Tensor, n_atoms: int, k: int, steps: int, batch: int = 512, lr: float = 1e-3, seed: int = 0
) -> tuple[TopKAutoencoder, pd.DataFrame]:
    """A :class:`TopKAutoencoder` fitted to ``vectors`` ``(n, Ch)`` and its training log (``step``,
    ``fraction_unexplained``: squared error over the variance about the mean, per logged step)."""
    x = vectors.detach().float().cpu()
    generator = torch.Generator().manual_seed(seed)
    model = TopKAutoencoder(x.shape[1], n_atoms, k, float(x.pow(2).mean().sqrt()), generator)
    with torch.no_grad():
        model.centre.copy_(x.mean(dim=0) / model.scale)
    variance = float(((x - x.mean(dim=0)) / model.scale).pow(2).sum(dim=1).mean())
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    log = []
    for step in range(steps):
        rows = torch.randint(0, len(x), (min(batch, len(x)),), generator=generator)
        error = ((model(x[rows]) - x[rows]) / model.scale).pow(2).sum(dim=1).mean()
        optimiser.zero_grad()
        error.backward()
        optimiser.step()
        model.normalise_atoms()
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            log.append({"step": step, "fraction_unexplained": float(error.detach()) / variance})
    return model.eval().requires_grad_(False), pd.DataFrame(log)


@torch.no_grad()
def atom_maps(model: TopKAutoencoder, activation: torch.Tensor) -> torch.Tensor:
    """Each atom's activation at each grid point of a layer's maps ``(B, Ch, h, w)``: ``(B, n_atoms, h, w)``."""
    b, _, height, width = activation.shape
    codes = model.encode(map_vectors(activation.float().cpu()))
    return codes.reshape(b, height, width, -1).permute(0, 3, 1, 2)


def match_atoms(state_activation: np.ndarray, features: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation of each atom's mean activation over a state's map (``(states, atoms)``) with each
    feature (``features``: states x features) across states: ``(atoms x features)``; NaN for an atom never active."""
    a = state_activation - state_activation.mean(axis=0)
    f = features.values - features.values.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a.T @ f) / np.outer(np.linalg.norm(a, axis=0), np.linalg.norm(f, axis=0))
    return pd.DataFrame(r, columns=features.columns).rename_axis("atom")


def best_atoms(correlations: pd.DataFrame) -> pd.DataFrame:
    """Per feature, the atom with the largest |correlation| and that correlation (columns ``atom``, ``correlation``)."""
    atom = correlations.abs().fillna(-1.0).idxmax()
    return pd.DataFrame({"atom": atom, "correlation": [correlations.loc[a, f] for f, a in atom.items()]})


def scale_atom(denoiser, model: TopKAutoencoder, layer: str, atom: int, factor: float, y, c, sigma) -> torch.Tensor:
    """The denoiser's output with atom ``atom``'s contribution to layer ``layer`` multiplied by ``factor``.

    At every grid point ``h -> h + (factor - 1) a_i(h) s d_i`` (``a_i`` the
    atom's code, ``s d_i`` its direction), the rest of ``h`` (the
    autoencoder's reconstruction error included) left as it is; ``factor = 1``
    is the unedited network.
    """
    def edit(h: torch.Tensor) -> torch.Tensor:
        codes = model.encode(map_vectors(h.float()).cpu())[:, atom].to(h.device, h.dtype)
        direction = (model.scale * model.atoms[atom]).to(h.device, h.dtype)
        delta = ((factor - 1.0) * codes[:, None] * direction).reshape(h.shape[0], h.shape[2], h.shape[3], -1)
        return h + delta.permute(0, 3, 1, 2)

    with torch.no_grad(), replace_output(denoiser, layer, edit):
        return denoiser.denoise(y, c, sigma)
