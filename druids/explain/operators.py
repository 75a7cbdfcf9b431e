"""Jacobian-vector and vector-Jacobian products of a denoiser at one point, matrix-free.

For a denoiser ``D(y, c; sigma)`` (anything with ``denoise(y, c, sigma)`` on
batches ``(B, C, H, W)``, ``(B, Cc, H, W)``) and one point ``(y, c)`` at a fixed
noise level, :class:`Linearisation` gives

* ``J_y v`` (:meth:`~Linearisation.jvp`) and ``J_y^T u`` (:meth:`~Linearisation.vjp`)
  for blocks of vectors, through ``torch.func.jvp`` / ``torch.func.vjp`` and
  ``torch.func.vmap`` over the block (the primal is computed once per block).
  Forward-mode AD through the U-Net costs 4-9 forward passes per vector on the
  CPU; :meth:`~Linearisation.prepare_repeated` traces the linear map once with
  ``torch.func.linearize`` (seconds), after which a JVP costs about one VJP,
  which pays for the hundreds of products of an eigensolver;
* ``J_c w`` (:meth:`~Linearisation.jvp_condition`) for the condition.

Bias-free denoisers (Mohan et al. 2020) are homogeneous of degree one, so
``D = J_y y + J_c c`` exactly (Euler's identity, :meth:`~Linearisation.euler_terms`):
the Jacobian is the adaptive linear filter the network applies.

The inner product and the noise space (:mod:`druids.explain.geometry`): with
``G`` the weights of :class:`~druids.explain.geometry.NoiseGeometry` and ``T``
its projector onto the noise space ``R``,

* ``J`` is *symmetric* when it is self-adjoint in ``G`` on ``R``:
  ``G (T J T) = (T J T)^T G``, i.e. ``<a, J b> = <J a, b>`` for ``a, b`` in ``R``;
* an *eigenvector* is a field ``v`` in ``R`` with ``T J v = lambda v`` and
  ``<v, v> = 1`` (eigenvectors of a symmetric ``J`` are ``G``-orthonormal).

Both are computed through the similarity ``J_hat = G^(1/2) T J T G^(-1/2)``,
written in ``G``-orthonormal coordinates of ``R`` (:func:`whitened_operator`):
an ordinary matrix whose transpose is the ``G``-adjoint and whose symmetric
part ``(J_hat + J_hat^T) / 2`` has the ``G``-symmetric part of ``J`` as its
eigenproblem; eigenvectors map back to ``G``-orthonormal fields. Every application is counted
(:attr:`Linearisation.applications`). Work in float64 where exactness matters
(:func:`in_float64`).
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch.func import jvp, linearize, vjp, vmap

from druids.explain.geometry import NoiseGeometry


def in_float64(denoiser):
    """A float64 copy of ``denoiser`` (an ``nn.Module``) in eval mode; other objects are returned as they are."""
    if isinstance(denoiser, torch.nn.Module):
        return copy.deepcopy(denoiser).double().eval()
    return denoiser


class Linearisation:
    """``D(., c; sigma)`` linearised at ``y``: products with ``J_y`` and ``J_c``, in blocks of vectors.

    ``y`` (C, H, W), ``c`` (Cc, H, W), ``sigma`` > 0 (float); tensors are
    converted to ``dtype`` (default: the denoiser's parameters', float64 for
    a denoiser without parameters) on the denoiser's device. ``chunk``: vectors per
    batched call (memory). ``applications`` counts vectors by kind
    (``"jvp"``, ``"vjp"``, ``"jvp_condition"``).
    """

    def __init__(self, denoiser, y: torch.Tensor, c: torch.Tensor, sigma: float, dtype=None, chunk: int = 64):
        device, dtype = _device_of(denoiser), dtype or _dtype_of(denoiser)
        self.denoiser = denoiser
        self.y = y.detach().to(device=device, dtype=dtype)
        self.c = c.detach().to(device=device, dtype=dtype)
        self.sigma = float(sigma)
        self.chunk = chunk
        self.applications: Counter = Counter()
        self._vjp_fn = None
        self._jvp_fn = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.y.shape)

    def output(self) -> torch.Tensor:
        """``D(y, c; sigma)`` (C, H, W)."""
        with torch.no_grad():
            return self._denoise(self.y, self.c)

    def _denoise(self, y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.denoiser.denoise(y[None], c[None], self.sigma)[0]  # a float: no tensor to lift into torch.func

    def prepare_repeated(self) -> Linearisation:
        """Trace ``v -> J_y v`` once (``torch.func.linearize``) so that later JVPs cost about one VJP each."""
        if self._jvp_fn is None:
            with torch.no_grad(), warnings.catch_warnings():
                # torch's own constant folding inside linearize warns about its internal graph; harmless
                warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node", category=UserWarning)
                _, self._jvp_fn = linearize(lambda y: self._denoise(y, self.c), self.y)
        return self

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """``J_y v`` for a block ``v`` (K, C, H, W) -> (K, C, H, W)."""
        v = v.to(self.y)
        self.applications["jvp"] += v.shape[0]
        if self._jvp_fn is not None:
            single = self._jvp_fn
        else:
            single = lambda t: jvp(lambda y: self._denoise(y, self.c), (self.y,), (t,))[1]  # noqa: E731
        with torch.no_grad():  # no graph for the weights; torch.func differentiates inside regardless
            return _blocked(single, v, self.chunk)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """``J_y^T u`` for a block ``u`` (K, C, H, W) -> (K, C, H, W); one forward pass per linearisation."""
        u = u.to(self.y)
        with torch.no_grad():
            if self._vjp_fn is None:
                _, self._vjp_fn = vjp(lambda y: self._denoise(y, self.c), self.y)
            self.applications["vjp"] += u.shape[0]
            return _blocked(lambda t: self._vjp_fn(t)[0], u, self.chunk)

    def jvp_condition(self, w: torch.Tensor) -> torch.Tensor:
        """``J_c w`` for a block ``w`` (K, Cc, H, W) of condition directions -> (K, C, H, W)."""
        w = w.to(self.c)
        self.applications["jvp_condition"] += w.shape[0]
        with torch.no_grad():
            return _blocked(lambda t: jvp(lambda c: self._denoise(self.y, c), (self.c,), (t,))[1], w, self.chunk)

    def euler_terms(self, groups: dict[str, slice]) -> dict[str, torch.Tensor]:
        """Euler's identity split by input: ``{"noisy input": J_y y, name: J_c[group] c[group], ...}`` (C, H, W) each.

        ``groups`` names slices of the condition channels (e.g. previous state,
        static fields) that together cover them; for a bias-free denoiser the
        terms sum to ``D(y, c; sigma)`` (:func:`euler_residual`).
        """
        parts = []
        for group in groups.values():
            part = torch.zeros_like(self.c)
            part[group] = self.c[group]
            parts.append(part)
        by_condition = self.jvp_condition(torch.stack(parts))
        terms = {"noisy input": self.jvp(self.y[None])[0]}
        return terms | {name: term for name, term in zip(groups, by_condition)}


def euler_residual(linearisation: Linearisation, groups: dict[str, slice]) -> float:
    """``||D - (J_y y + J_c c)|| / ||D||`` (Euclidean): 0 up to rounding for a bias-free denoiser."""
    output = linearisation.output()
    total = sum(linearisation.euler_terms(groups).values())
    return float(torch.linalg.vector_norm(output - total) / torch.linalg.vector_norm(output))


class FieldBlock:
    """The block of ``J_y`` from input channel ``channel`` to the same output channel: one field, ``(1, H, W)``.

    Has :meth:`jvp` and :meth:`vjp` like :class:`Linearisation` (which it
    counts into), so the spectral tools work on one field (2,048 dims on the
    32 x 64 grid) as on the whole state.
    """

    def __init__(self, linearisation: Linearisation, channel: int):
        self.linearisation = linearisation
        self.channel = channel

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, *self.linearisation.shape[1:])

    @property
    def applications(self) -> Counter:
        return self.linearisation.applications

    def prepare_repeated(self) -> FieldBlock:
        self.linearisation.prepare_repeated()
        return self

    def _embed(self, v: torch.Tensor) -> torch.Tensor:
        full = torch.zeros((v.shape[0], *self.linearisation.shape), dtype=self.linearisation.y.dtype, device=self.linearisation.y.device)
        full[:, self.channel] = v[:, 0].to(full)
        return full

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return self.linearisation.jvp(self._embed(v))[:, self.channel : self.channel + 1]

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self.linearisation.vjp(self._embed(u))[:, self.channel : self.channel + 1]


def whitened_operator(linearisation, geometry: NoiseGeometry) -> LinearOperator:
    """``J_hat``: ``T J_y T`` in ``G``-orthonormal coordinates of the noise space, a float64 scipy ``LinearOperator``.

    Coordinates from :meth:`~druids.explain.geometry.NoiseGeometry.to_coefficients`
    (``r`` per field; the operator is square of size ``C r``). With ``Phi`` the
    ``G``-orthonormal basis of ``R``, ``J_hat = Phi^T G J Phi`` is similar to
    ``G^(1/2) T J T G^(-1/2)`` on ``R``; its transpose ``Phi^T J^T G Phi`` is
    the ``G``-adjoint. ``linearisation``: a :class:`Linearisation` or
    :class:`FieldBlock` (anything with ``shape``, ``jvp`` and ``vjp``);
    ``matmat`` / ``rmatmat`` apply blocks of vectors in one batched call.
    """
    n_channels = linearisation.shape[0]
    size = geometry.noise_dims(n_channels)

    def forward(block: np.ndarray) -> np.ndarray:
        fields = geometry.from_coefficients(_columns(block, size), n_channels)
        return geometry.to_coefficients(linearisation.jvp(fields).cpu()).T.numpy()

    def adjoint(block: np.ndarray) -> np.ndarray:
        fields = geometry.from_coefficients(_columns(block, size), n_channels)
        g = geometry.weight(fields)
        pulled = linearisation.vjp(g * fields).cpu().double()
        return geometry.to_coefficients(pulled / g).T.numpy()  # Phi^T pulled = Phi^T G (G^-1 pulled)

    return LinearOperator(
        (size, size),
        matvec=lambda x: forward(x.reshape(-1, 1))[:, 0],
        rmatvec=lambda x: adjoint(x.reshape(-1, 1))[:, 0],
        matmat=forward,
        rmatmat=adjoint,
        dtype=np.float64,
    )


def symmetric_part(operator: LinearOperator) -> LinearOperator:
    """``(A + A^T) / 2`` of a square ``LinearOperator`` (one forward and one adjoint product per vector)."""

    def apply(block: np.ndarray) -> np.ndarray:
        block = block.reshape(operator.shape[1], -1)
        return 0.5 * (operator.matmat(block) + operator.rmatmat(block))

    return LinearOperator(
        operator.shape,
        matvec=lambda x: apply(x)[:, 0],
        rmatvec=lambda x: apply(x)[:, 0],
        matmat=apply,
        rmatmat=apply,
        dtype=np.float64,
    )


def _blocked(single, block: torch.Tensor, chunk: int) -> torch.Tensor:
    """``single`` (one vector in, one out) over a block ``(K, ...)``: a direct call for one vector (vmap's
    overhead doubles the cost of a single JVP on the CPU), ``torch.func.vmap`` in chunks otherwise."""
    if block.shape[0] == 1:
        return single(block[0])[None]
    return vmap(single, chunk_size=chunk)(block)


def _columns(block: np.ndarray, size: int) -> torch.Tensor:
    """Columns of ``block`` (size, K) as K float64 rows ``(K, size)``."""
    block = np.asarray(block, dtype=np.float64).reshape(size, -1)
    return torch.from_numpy(np.ascontiguousarray(block.T))


def _dtype_of(denoiser) -> torch.dtype:
    """The dtype of a module's parameters (float64 for parameter-free denoisers)."""
    parameters = denoiser.parameters() if isinstance(denoiser, torch.nn.Module) else iter(())
    first = next(parameters, None)
    return first.dtype if first is not None else torch.float64


def _device_of(denoiser) -> torch.device:
    """The device of a module's parameters (CPU for parameter-free denoisers)."""
    parameters = denoiser.parameters() if isinstance(denoiser, torch.nn.Module) else iter(())
    first = next(parameters, None)
    return first.device if first is not None else torch.device("cpu")
