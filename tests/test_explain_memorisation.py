"""The memorisation ladder's pieces: disjoint sets, the mean-removed cosine, the Gaussian baseline's samples,
shared sampler noise, and a denoiser that memorises a single training state."""

import dataclasses

import numpy as np
import pytest
import torch

from druids.config import ModelConfig, SamplingConfig
from druids.data.channels import static_features
from druids.explain import memorisation
from druids.explain.geometry import NoiseGeometry

LATITUDE = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(8)[0]))
GEOMETRY = NoiseGeometry.of((LATITUDE, 3), LATITUDE, 16)


def band_limited(n: int, seed: int, channels: int = 2) -> torch.Tensor:
    return GEOMETRY.noise((n, channels, 8, 16), torch.Generator().manual_seed(seed))


def test_disjoint_subsets():
    a, b = memorisation.disjoint_subsets(10, 4, seed=0)
    assert len(a) == len(b) == 4 and not set(a) & set(b) and (np.diff(a) > 0).all()
    with pytest.raises(ValueError, match="disjoint"):
        memorisation.disjoint_subsets(10, 6, seed=0)


def test_mean_removed_cosine_ignores_scale_and_channel_means():
    x = band_limited(3, 0)
    weights = GEOMETRY.weights
    shifted = 2.5 * x + torch.tensor([1.0, -4.0])[:, None, None]
    matrix = memorisation.cosine_matrix(x, torch.cat([shifted, -x]), weights)
    np.testing.assert_allclose(np.diag(matrix[:, :3]), 1.0, atol=1e-10)
    np.testing.assert_allclose(np.diag(matrix[:, 3:]), -1.0, atol=1e-10)
    assert np.abs(matrix[0, 1]) < 0.5  # independent fields


def test_gaussian_baseline_samples_have_the_training_mean_and_covariance():
    training = band_limited(5, 1)
    noise = band_limited(4000, 2)
    samples = memorisation.gaussian_samples(training, noise, GEOMETRY)
    a, s = GEOMETRY.to_coefficients(training), GEOMETRY.to_coefficients(samples)
    np.testing.assert_allclose(s.mean(dim=0), a.mean(dim=0), atol=0.15)
    covariance, expected = torch.cov(s.T), torch.cov(a.T)
    assert float((covariance - expected).norm() / expected.norm()) < 0.1
    centred = (s - a.mean(dim=0)).T
    basis = torch.linalg.svd((a - a.mean(dim=0)).T, full_matrices=False)[0][:, :4]
    assert float((centred - basis @ (basis.T @ centred)).norm() / centred.norm()) < 1e-8  # in the training span
    again = memorisation.gaussian_samples(training.clone(), noise[:3], GEOMETRY)
    torch.testing.assert_close(again, samples[:3])


def test_conditional_gaussian_baseline_interpolates_its_training_pairs():
    training, conditions = band_limited(4, 4), band_limited(4, 5, channels=1)
    noise = band_limited(2, 6)
    own = memorisation.gaussian_samples(training, noise, GEOMETRY, conditions, conditions[[2, 2]])
    np.testing.assert_allclose(own.numpy(), training[[2, 2]].numpy(), atol=1e-8)  # N <= dim: the condition pins the sample
    unseen = memorisation.gaussian_samples(training, noise, GEOMETRY, conditions, band_limited(1, 7, channels=1).expand(2, -1, -1, -1))
    assert torch.allclose(unseen[0], unseen[1])  # no freedom left for the noise


class Identity(torch.nn.Module):
    """D(y) = y: the deterministic sampler then keeps its starting point ``sigma_max n``."""

    n_target, noise_band = 2, (LATITUDE, 3)

    def denoise(self, y, c, sigma):
        return y


def test_models_sampled_with_the_same_seed_share_the_gaussian_baseline_noise():
    sampling = SamplingConfig(n_levels=3, sigma_max=80.0)
    condition = torch.zeros(3, 1, 8, 16)
    sample = memorisation.sample_from_noise(Identity(), condition, sampling, seed=5)
    noise = memorisation.sample_noise(3, (2, 8, 16), (LATITUDE, 3), seed=5)
    torch.testing.assert_close(sample, 80.0 * noise)
    other = memorisation.sample_from_noise(Identity(), condition, dataclasses.replace(sampling, s_churn=2.5), seed=5)
    torch.testing.assert_close(other, sample)  # churn is switched off: deterministic


def test_a_denoiser_trained_on_one_state_memorises_it(torch_one_thread):
    state = band_limited(1, 3).float()
    condition = torch.as_tensor(static_features(LATITUDE, np.arange(16) * 22.5).values)[None]  # where each grid point is
    cfg = ModelConfig(base_channels=8, channel_mults=(1, 2), blocks_per_level=1)
    model = memorisation.train_denoiser(cfg, condition, state, GEOMETRY.band, LATITUDE, steps=400, batch=2, lr=5e-3, seed=0)
    samples = memorisation.sample_from_noise(model, condition.expand(3, -1, -1, -1), SamplingConfig(n_levels=8), seed=1)
    similarity = memorisation.cosine_matrix(samples, state, GEOMETRY.weights)[:, 0]
    assert similarity.mean() > 0.85 and similarity.min() > 0.7  # a fresh network's samples score about 0
    noise = memorisation.sample_noise(3, (2, 8, 16), GEOMETRY.band, seed=1)
    rows = memorisation.similarity_rows(1, (samples, samples), (state, state), (samples, samples), noise, GEOMETRY.weights)
    assert list(rows.columns) == ["size", "sample", "cross", "nearest_a", "nearest_b", "noise", "gaussian_cross", "gaussian_nearest_a"]
    np.testing.assert_allclose(rows.cross, 1.0, atol=1e-10)
    assert (rows.noise.abs() < 0.5).all()  # a memorising model forgets its noise
