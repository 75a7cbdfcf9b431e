"""Explainability of the denoiser through its Jacobian: exact where an exact answer exists, matrix-free for full states.

For a bias-free denoiser ``D(y, c; sigma) = J_y y + J_c c`` holds exactly, so
the Jacobian is the adaptive linear filter the network applies (Mohan et al.
2020) and its eigenvectors are its adaptive basis (Kadkhodaie et al. 2024).

Modules, one job each:

* :mod:`~druids.explain.geometry`: the noise covariance ``S`` of the diffusion
  noise (white, or band-limited on the sphere), its space ``R`` and the inner
  product in which the optimal denoiser's Jacobian is symmetric;
* :mod:`~druids.explain.operators`: JVPs and VJPs at a point (``torch.func``),
  Euler's identity, the whitened operator for eigensolvers;
* :mod:`~druids.explain.spectra`: top eigenpairs and singular triplets
  (Lanczos), asymmetry, dense one-field Jacobians;
* :mod:`~druids.explain.trace`: Hutchinson traces, effective dimensions,
  Stein's identity (SURE) and Tweedie's second moment;
* :mod:`~druids.explain.gaussian`: the exact case, Gaussian random fields on
  the sphere and their Wiener filter;
* :mod:`~druids.explain.basis`, :mod:`~druids.explain.oracle_link`,
  :mod:`~druids.explain.locality`, :mod:`~druids.explain.anatomy`: the
  chapter's four readings of the Jacobian (adaptive basis, the posterior
  against the oracle's forecast distribution, locality, generation).

What the model represents (the chapter's second half):

* :mod:`~druids.explain.features`: the U-Net's activations by forward hooks,
  pooled for probes, and interventions on them;
* :mod:`~druids.explain.probes`: ridge probes scored on held-out states against
  a random network and the raw input; :mod:`~druids.explain.autoencoder`: a
  top-k sparse autoencoder, its atoms matched to features and scaled inside
  the network; :mod:`~druids.explain.representation`: the chapter's study of both;
* :mod:`~druids.explain.sensitivity`: the model's sensitivity of a forecast to
  its initial state (autograd, Integrated Gradients) and the comparison maps;
  :mod:`~druids.explain.adjoint`: the world's own, by the simulator's adjoint;
* :mod:`~druids.explain.memorisation`: two models on disjoint training sets,
  from memorisation to generalisation, against a Gaussian baseline.

``explain`` may import the stages before it (data, models, training,
sampling), never ``calibration`` or ``plotting``.
"""

from druids.explain import (
    anatomy,
    autoencoder,
    basis,
    features,
    gaussian,
    geometry,
    locality,
    memorisation,
    operators,
    oracle_link,
    probes,
    representation,
    sensitivity,
    spectra,
    trace,
)
from druids.explain.geometry import NoiseGeometry
from druids.explain.operators import FieldBlock, Linearisation, in_float64

__all__ = [
    "FieldBlock",
    "Linearisation",
    "NoiseGeometry",
    "anatomy",
    "autoencoder",
    "basis",
    "features",
    "gaussian",
    "geometry",
    "in_float64",
    "locality",
    "memorisation",
    "operators",
    "oracle_link",
    "probes",
    "representation",
    "sensitivity",
    "spectra",
    "trace",
]
