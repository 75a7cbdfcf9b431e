"""afCRPS fine-tuning (druids.calibration.finetune): the score against scoringrules' estimators, gradients
through the sampler, a killed fine-tuning resuming to the weights of an uninterrupted one, also in two local
gloo processes."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scoringrules
import torch

from druids.calibration import finetune
from druids.data.dataset import ForecastDataset, collate
from druids.data.source import open_dataset
from druids.training import TrainedModel, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("members", [2, 5])
def test_afcrps_blends_the_fair_and_the_standard_estimator(members):
    rng = np.random.default_rng(members)
    x, y = rng.normal(size=(members, 3, 4)), rng.normal(size=(3, 4))
    fair = scoringrules.crps_ensemble(y, x, m_axis=0, estimator="fair")
    standard = scoringrules.crps_ensemble(y, x, m_axis=0, estimator="nrg")
    score = {a: float(finetune.afcrps(torch.from_numpy(x), torch.from_numpy(y), a)) for a in (1.0, 0.0, 0.95)}
    assert score[1.0] == pytest.approx(fair.mean(), rel=1e-10)
    assert score[0.0] == pytest.approx(standard.mean(), rel=1e-10)
    assert score[0.95] == pytest.approx(0.95 * fair.mean() + 0.05 * standard.mean(), rel=1e-10)
    weights = torch.from_numpy(rng.uniform(0.5, 1.5, size=(3, 1)))
    weighted = (fair * weights.numpy()).sum() / (weights.numpy() * np.ones((3, 4))).sum()
    assert float(finetune.afcrps(torch.from_numpy(x), torch.from_numpy(y), 1.0, weights)) == pytest.approx(weighted, rel=1e-10)


def test_afcrps_needs_two_members_and_alpha_in_the_unit_interval():
    with pytest.raises(ValueError, match="at least 2 members"):
        finetune.afcrps(torch.zeros(1, 3), torch.zeros(3), 0.95)
    with pytest.raises(ValueError, match="alpha"):
        finetune.afcrps(torch.zeros(2, 3), torch.zeros(3), 1.5)


@pytest.fixture
def untrained(smoke_store, smoke_config, tmp_path):
    """The smoke profile's denoiser at its initial weights, as a finished run, and the smoke world."""
    data, stats = open_dataset(smoke_config, progress=False)
    return TrainedModel(build_model(smoke_config, stats), stats, pd.DataFrame(), tmp_path / "edm-untrained"), data


def test_sampled_members_differ_and_carry_gradients_to_the_weights(untrained, smoke_config):
    trained, data = untrained
    condition, target = collate(ForecastDataset(data, trained.stats, "train", smoke_config.dataset), [0, 3], "cpu")
    sampling = finetune.eager_sampling(smoke_config.sampling)
    members = finetune.sampled_members(trained.denoiser, condition, target.shape[1], 3, sampling, seed=7)
    assert members.shape == (3, *target.shape)
    assert not torch.allclose(members[0], members[1])
    again = finetune.sampled_members(trained.denoiser, condition, target.shape[1], 3, sampling, seed=7)
    torch.testing.assert_close(again, members)  # the seed fixes the noise
    finetune.afcrps(members, target, 0.95).backward()
    grads = [p.grad for p in trained.denoiser.parameters() if p.requires_grad]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_a_killed_finetuning_resumes_to_the_weights_of_an_uninterrupted_one(untrained, smoke_config, monkeypatch, tmp_path):
    trained, data = untrained
    cfg = dataclasses.replace(smoke_config, calibration=dataclasses.replace(smoke_config.calibration, finetune_steps=3, finetune_lr=1e-2))
    monkeypatch.setattr(finetune, "CHECKPOINT_EVERY", 1)
    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "whole"))
    whole = finetune.finetune(trained, data, cfg, progress=False, processes=1)
    assert list(whole.history.step) == [1, 2, 3]
    start = dict(trained.denoiser.state_dict())
    assert any(not torch.equal(start[k], v) for k, v in whole.denoiser.state_dict().items())  # it learned
    assert all(torch.equal(start[k], v) for k, v in trained.denoiser.state_dict().items())  # on a copy

    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "killed"))
    score = finetune.afcrps
    monkeypatch.setattr(finetune, "afcrps", _afcrps_killed_at(3))
    with pytest.raises(KeyboardInterrupt):
        finetune.finetune(trained, data, cfg, progress=False, processes=1)
    assert list(Path(tmp_path / "killed" / "finetuned").glob("*.partial"))
    monkeypatch.setattr(finetune, "afcrps", score)
    resumed = finetune.finetune(trained, data, cfg, progress=False, processes=1)
    pd.testing.assert_frame_equal(resumed.history, whole.history)
    for name, value in whole.denoiser.state_dict().items():
        torch.testing.assert_close(resumed.denoiser.state_dict()[name], value, rtol=0, atol=0)

    monkeypatch.setattr(finetune, "_run", lambda *args: pytest.fail("a cached fine-tuning ran again"))
    finetune.finetune(trained, data, cfg, progress=False, processes=1)


def _afcrps_killed_at(call: int):
    """``finetune.afcrps`` that raises ``KeyboardInterrupt`` at its ``call``-th call: a run killed in that step."""
    score, calls = finetune.afcrps, []

    def killed(*args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return score(*args)

    return killed


def _assert_same_finetuning(two, one, train_set, cfg):
    """The same fine-tuning up to the rounding of a batch of one state against two: steps, losses and gradient
    norms, the members the fine-tuned denoisers sample (same conditions and noise), and the weights.

    The weights get a looser absolute tolerance: the noise gains of the 8-channel blocks (zero at the start)
    get gradients of rounding size only (the per-channel RMS norm after them cancels a gain), which Adam
    scales up to about ``lr |g| / eps`` per step, so they move by ~1e-4 of rounding noise at lr 1e-2.
    """
    np.testing.assert_array_equal(two.history.step, one.history.step)
    np.testing.assert_allclose(two.history.afcrps, one.history.afcrps, rtol=1e-5)
    np.testing.assert_allclose(two.history.grad_norm, one.history.grad_norm, rtol=1e-4)
    condition, target = collate(train_set, [0, 5], "cpu")
    sampling = finetune.eager_sampling(cfg.sampling)
    with torch.no_grad():
        members = [finetune.sampled_members(t.denoiser, condition, target.shape[1], 2, sampling, seed=3) for t in (two, one)]
    torch.testing.assert_close(*members, rtol=1e-5, atol=1e-5)
    for name, value in one.denoiser.state_dict().items():
        torch.testing.assert_close(two.denoiser.state_dict()[name], value, rtol=1e-5, atol=1e-3)


@pytest.mark.timeout(300, method="thread")  # a rank that waits for a missing all-reduce would hang
def test_finetuning_resumed_in_two_processes_matches_one(untrained, smoke_config, monkeypatch, tmp_path):
    """A single-process fine-tuning killed after its first step, resumed in two spawned gloo processes (one state
    of the step's two each), ends with the uninterrupted single process's history and weights, leaves only the
    cached result behind, and is not run again."""
    trained, data = untrained
    cfg = dataclasses.replace(smoke_config, calibration=dataclasses.replace(smoke_config.calibration, finetune_steps=3, finetune_lr=1e-2))
    assert finetune.auto_processes(trained, cfg) == min(2, os.cpu_count())
    monkeypatch.setattr(finetune, "CHECKPOINT_EVERY", 1)
    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "one"))
    one = finetune.finetune(trained, data, cfg, progress=False, processes=1)

    monkeypatch.setenv("DRUIDS_CACHE", str(tmp_path / "two"))
    with monkeypatch.context() as patch:
        patch.setattr(finetune, "afcrps", _afcrps_killed_at(2))
        with pytest.raises(KeyboardInterrupt):
            finetune.finetune(trained, data, cfg, progress=False, processes=1)
    (partial,) = (tmp_path / "two" / "finetuned").glob("*.partial")
    state = torch.load(partial, weights_only=False)
    assert state["step"] == 1
    state["history"][0]["from_partial"] = True  # a mark that only a resumed run carries into its history
    torch.save(state, partial)
    two = finetune.finetune(trained, data, cfg, progress=False, processes=2)  # steps 2 and 3 in two processes
    assert two.history.from_partial.tolist()[0] is True
    _assert_same_finetuning(two, one, ForecastDataset(data, trained.stats, "train", cfg.dataset), cfg)
    assert sorted(p.suffix for p in (tmp_path / "two" / "finetuned").iterdir()) == [".json", ".pt"]  # no .partial, .step
    monkeypatch.setattr(finetune, "_run", lambda *args: pytest.fail("a cached fine-tuning ran again"))
    pd.testing.assert_frame_equal(finetune.finetune(trained, data, cfg, progress=False, processes=2).history, two.history)


def test_finetuning_processes_need_a_state_each(untrained, smoke_config):
    trained, data = untrained
    with pytest.raises(ValueError, match="exceeds finetune_states=2"):
        finetune.finetune(trained, data, smoke_config, progress=False, processes=3)
