"""Linear probes recover a planted linear feature and not a random one; the sparse autoencoder recovers a
planted sparse dictionary; atoms are matched to features and scaled inside the network."""

import numpy as np
import pandas as pd
import pytest
import torch

from druids.config import ModelConfig
from druids.explain import autoencoder, probes
from druids.models import build_denoiser

N_TRAIN, N_TEST = 150, 80


@pytest.fixture(scope="module")
def planted():
    """Activations with 20 latent factors in 2000 noisy features; a feature linear in the factors, its sign
    (a 0/1 feature), and a random feature; and a control: other activations with the same loadings."""
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((N_TRAIN + N_TEST, 20))
    loadings = rng.standard_normal((20, 2000))
    activations = factors @ loadings + 0.5 * rng.standard_normal((N_TRAIN + N_TEST, 2000))
    linear = factors @ rng.standard_normal(20)
    truth = pd.DataFrame({"linear": linear, "present": (linear > 0).astype(float), "random": rng.standard_normal(N_TRAIN + N_TEST)})
    control = rng.standard_normal((N_TRAIN + N_TEST, 20)) @ loadings
    return activations, control, truth


def predictions(x, truth):
    return probes.probe_predictions({"layer": x[:N_TRAIN]}, {"layer": x[N_TRAIN:]}, truth.iloc[:N_TRAIN])["layer"]


METRICS = {"linear": "r2", "present": "auc", "random": "r2"}


def test_probe_recovers_a_planted_linear_feature_and_not_a_random_one(planted):
    activations, _, truth = planted
    held_out = truth.iloc[N_TRAIN:].reset_index(drop=True)
    scores = probes.score_table({("trained", 1.0, "layer"): predictions(activations, truth)}, held_out, METRICS).set_index("feature").score
    assert scores["linear"] > 0.9
    assert scores["present"] > 0.9
    assert scores["random"] < 0.1
    assert list(probes.score_table({("a",): predictions(activations, truth)}, held_out, METRICS).columns) == ["key0", "feature", "metric", "score"]


def test_a_feature_counts_as_represented_only_where_the_network_beats_every_control(planted):
    activations, control, truth = planted
    held_out = truth.iloc[N_TRAIN:].reset_index(drop=True)
    trained, random_net = predictions(activations, truth), predictions(control, truth)
    table = probes.against_controls(trained, {"random": random_net, "raw": random_net}, held_out, METRICS, n_boot=100, seed=0)
    assert table.loc["linear", "represented"] and table.loc["present", "represented"]
    assert not table.loc["random", "represented"]
    assert table.loc["linear", "margin_random"] > 0.5
    same = probes.against_controls(trained, {"itself": trained}, held_out, METRICS, n_boot=20, seed=0)
    assert not same.represented.any()  # a network never beats itself


def test_a_probe_worse_than_chance_is_not_represented_however_bad_the_controls():
    """Negative R^2 all round: the trained probe is less wrong than the controls, but no better than the mean."""
    rng = np.random.default_rng(3)
    truth = pd.DataFrame({"linear": rng.normal(size=200)})
    noise = lambda scale: pd.DataFrame({"linear": scale * rng.normal(size=200)})  # noqa: E731
    table = probes.against_controls(noise(1.0), {"random": noise(3.0), "raw": noise(3.0)}, truth, {"linear": "r2"}, n_boot=200, seed=0)
    assert table.loc["linear", "margin_random"] > 0 and table.loc["linear", "score"] < 0
    assert table.loc["linear", "margin_chance"] < 0 and not table.loc["linear", "represented"]


def test_scores_and_bootstrap():
    truth = np.array([0.0, 0.0, 1.0, 1.0])
    assert probes.score("auc", truth, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert np.isnan(probes.score("auc", np.ones(4), np.arange(4.0)))
    assert probes.score("r2", np.arange(4.0), np.arange(4.0)) == 1.0
    with pytest.raises(ValueError, match="metric"):
        probes.score("accuracy", truth, truth)
    difference = probes.paired_bootstrap("r2", np.arange(20.0), np.arange(20.0), np.zeros(20), n_boot=30, seed=1)
    assert difference.shape == (30,) and (difference > 0.9).all()


# ------------------------------------------------------------------------------------- sparse autoencoder


def planted_dictionary(n_atoms=24, dim=32, k=3, n=4096, seed=0):
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, dim, generator=generator)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    codes = torch.zeros(n, n_atoms)
    for row in range(n):
        chosen = torch.randperm(n_atoms, generator=generator)[:k]
        codes[row, chosen] = 0.5 + torch.rand(k, generator=generator)
    return atoms, codes, codes @ atoms + 2.0


def test_topk_autoencoder_recovers_a_planted_sparse_dictionary(torch_one_thread):
    atoms, _, vectors = planted_dictionary()
    model, log = autoencoder.train_autoencoder(vectors, n_atoms=48, k=3, steps=600, batch=256, lr=3e-3, seed=0)
    best = (atoms @ model.atoms.T).max(dim=1).values
    assert (best > 0.95).float().mean() >= 0.9
    assert log.fraction_unexplained.iloc[-1] < 0.02 < log.fraction_unexplained.iloc[0]
    codes = model.encode(vectors[:100])
    assert ((codes > 0).sum(dim=1) <= 3).all()
    with pytest.raises(ValueError, match="k = 0"):
        autoencoder.TopKAutoencoder(4, 8, 0)


def test_atoms_are_matched_to_the_features_they_track():
    rng = np.random.default_rng(0)
    strength = rng.standard_normal(200)
    activation = np.abs(rng.standard_normal((200, 5)))
    activation[:, 3] = 2.0 + strength  # atom 3 tracks the feature
    activation[:, 1] = 0.0  # atom 1 never fires
    features = pd.DataFrame({"jet": strength, "noise": rng.standard_normal(200)})
    correlations = autoencoder.match_atoms(activation, features)
    assert np.isnan(correlations.loc[1, "jet"])
    best = autoencoder.best_atoms(correlations)
    assert best.loc["jet", "atom"] == 3 and best.loc["jet", "correlation"] == pytest.approx(1.0)


def test_scaling_an_atom_moves_the_network_and_factor_one_leaves_it_alone():
    torch.manual_seed(0)
    denoiser = build_denoiser(ModelConfig(base_channels=4, channel_mults=(1, 2), blocks_per_level=1), 2, 3).eval().requires_grad_(False)
    y, c = torch.randn(2, 2, 8, 16), torch.randn(2, 3, 8, 16)
    model = autoencoder.TopKAutoencoder(8, 6, 6)  # every atom active: the edit is linear in the factor
    plain = denoiser.denoise(y, c, 1.0)
    torch.testing.assert_close(autoencoder.scale_atom(denoiser, model, "encoder.1.0", 2, 1.0, y, c, 1.0), plain)
    moved = autoencoder.scale_atom(denoiser, model, "encoder.1.0", 2, 3.0, y, c, 1.0)
    assert float((moved - plain).norm()) > 1e-3 * float(plain.norm())
    maps = autoencoder.atom_maps(model, torch.randn(2, 8, 4, 8))
    assert maps.shape == (2, 6, 4, 8)


@pytest.mark.parametrize("metric", ["r2", "auc"])
def test_vectorised_bootstrap_scores_equal_scikit_learn_per_resample(metric):
    """Every resample's score (ties and one-class resamples included) equals probes.score, i.e. scikit-learn."""
    rng = np.random.default_rng(3)
    truth = (rng.random(12) < 0.3).astype(float) if metric == "auc" else rng.standard_normal(12)
    prediction = np.round(rng.standard_normal(12), 1)  # ties
    rows = rng.integers(0, 12, (300, 12))
    rows[0] = 0  # one state only: constant truth
    expected = np.array([probes.score(metric, truth[r], prediction[r]) for r in rows])
    got = probes.resampled_scores(metric, truth[rows], prediction[rows])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True)
    if metric == "auc":
        assert np.isnan(got).any() and not np.isnan(got).all()
