"""Chapter 04's studies shared out over local processes (:func:`druids.runtime.process_map`) give what they give
in one process: every item carries its own seeds, so nothing depends on which process computed it."""

import numpy as np
import pandas as pd
import pytest
import torch

from druids.config import ExplainConfig, ModelConfig, SamplingConfig
from druids.explain import memorisation, study
from druids.explain.geometry import NoiseGeometry
from druids.models import build_denoiser

LATITUDE = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(8)[0]))
GEOMETRY = NoiseGeometry.of((LATITUDE, 3), LATITUDE, 16)
TINY = ModelConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1)


def fields(n: int, channels: int, seed: int) -> torch.Tensor:
    return GEOMETRY.noise((n, channels, 8, 16), torch.Generator().manual_seed(seed), torch.float32)


def test_survey_in_two_processes_matches_one(torch_one_thread):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        denoiser = build_denoiser(TINY, 2, 1, GEOMETRY.band).eval().requires_grad_(False)
    states = {"a": (fields(1, 2, 1)[0], fields(1, 1, 2)[0]), "b": (fields(1, 2, 3)[0], fields(1, 1, 4)[0])}
    cfg = ExplainConfig(sigmas=(1.0,), n_eigen=2, eigen_tol=1e-3, n_probes=3)
    serial = study.survey(denoiser, states, GEOMETRY, cfg, seed=7, progress=False, processes=1)
    shared = study.survey(denoiser, states, GEOMETRY, cfg, seed=7, progress=False, processes=2)
    assert [(p.state, p.sigma) for p in shared] == [("a", 1.0), ("b", 1.0)]
    torch.testing.assert_close(shared[1].y, states["b"][0] + study.noisy_input(torch.zeros(2, 8, 16), 1.0, GEOMETRY, 8))  # seed + 1
    for one, two in zip(serial, shared):
        torch.testing.assert_close(two.y, one.y, rtol=0, atol=0)
        np.testing.assert_allclose(two.pairs.values, one.pairs.values, rtol=1e-6)
        assert two.traces.trace.mean == pytest.approx(one.traces.trace.mean, rel=1e-6)
        assert two.applications == one.applications and one.applications["jvp"] > 0  # counted in the workers


def test_ladder_in_two_processes_matches_one(torch_one_thread):
    condition, target, held_out = fields(8, 1, 5), fields(8, 2, 6), fields(2, 1, 7)
    args = (condition, target, held_out, (1, 2), TINY, SamplingConfig(n_levels=3), GEOMETRY, LATITUDE, 4, 2, 1e-3, 3, False)
    table_one, samples_one = memorisation.ladder(*args, processes=1)
    table_two, samples_two = memorisation.ladder(*args, processes=2)
    pd.testing.assert_frame_equal(table_two, table_one, rtol=1e-6)
    assert list(samples_two) == [1, 2]
    for size in samples_one:
        for one, two in zip(samples_one[size], samples_two[size]):
            torch.testing.assert_close(two, one, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(*samples_two[1])  # the two models of a size start from different seeds
