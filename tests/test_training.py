"""Tests of druids.training on the smoke world: a run and its metrics, cached runs,
checkpoint config checks, exact resume, EMA, the learning-rate schedule, batch
order, and two-process DDP (gloo) against one process."""

import dataclasses
import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from druids import runtime, training
from druids.training import batches, checkpoint, diagnostics
from druids.config import TrainingConfig, get_config, to_dict
from druids.data.dataset import ForecastDataset, collate
from druids.data.source import open_dataset
from druids.models import build_loss


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def smoke_cfg():
    return get_config("smoke")


@pytest.fixture(scope="module")
def smoke_run(smoke_store, smoke_cfg, tmp_path_factory):
    """The smoke profile's run, trained once into a temporary run directory."""
    return training.train(smoke_cfg, tmp_path_factory.mktemp("run") / "edm", progress=False)


def metric_lines(run_dir):
    return (run_dir / checkpoint.METRICS).read_text().splitlines()


def test_smoke_run_trains_and_logs(smoke_run, smoke_cfg):
    tc = smoke_cfg.training
    assert smoke_run.step == smoke_run.steps_run == tc.n_steps
    assert (smoke_run.run_dir / checkpoint.CHECKPOINT).exists()
    assert json.loads((smoke_run.run_dir / "config.json").read_text())["model"] == to_dict(smoke_cfg.model)
    metrics = training.read_metrics(smoke_run.run_dir)
    train = metrics[metrics.kind == "train"]
    assert train.step.tolist() == list(range(1, tc.n_steps + 1))
    assert np.isfinite(train[["loss", "lr", "grad_norm"]].to_numpy()).all() and (train.samples_per_s > 0).all()
    # the logged learning rate follows the schedule
    expected_lr = [tc.lr * batches.lr_factor(s - 1, tc) for s in train.step]
    np.testing.assert_allclose(train.lr, expected_lr, rtol=1e-12)
    val = metrics[metrics.kind == "val"]
    assert sorted(set(val.step)) == list(range(tc.val_every, tc.n_steps + 1, tc.val_every))
    last = val[val.step == tc.n_steps]
    np.testing.assert_allclose(last.sigma, diagnostics.validation_sigmas(smoke_cfg.model))
    assert np.isfinite(last.val_mse).all()
    # denoising error grows with the noise level: tiny at sigma_min, about the target variance at sigma_max
    assert last.val_mse.iloc[0] < 0.01 < 0.5 < last.val_mse.iloc[-1]


def test_ema_differs_from_raw_weights(smoke_run):
    pairs = zip(smoke_run.ema.parameters(), smoke_run.model.parameters(), strict=True)
    assert not all(torch.equal(e, p) for e, p in pairs)
    assert not any(p.requires_grad for p in smoke_run.ema.parameters())


def test_finished_run_is_loaded_without_training(smoke_run, smoke_cfg):
    lines = metric_lines(smoke_run.run_dir)
    trained = training.load_trained(smoke_cfg, smoke_run.run_dir, progress=False)
    ema, stats, metrics = trained.denoiser, trained.stats, trained.metrics
    assert trained.run_dir == smoke_run.run_dir
    assert metric_lines(smoke_run.run_dir) == lines
    assert len(metrics) == len(training.read_metrics(smoke_run.run_dir))
    for name, value in smoke_run.ema.state_dict().items():
        assert torch.equal(ema.state_dict()[name], value), name
    n = len(stats.channel_names)
    y = torch.randn(2, n, 32, 64)
    c = torch.randn(2, n + 4, 32, 64)
    with torch.no_grad():
        assert ema.denoise(y, c, 1.0).shape == y.shape


def test_checkpoint_of_another_config_names_the_fields(smoke_run, smoke_cfg):
    other = dataclasses.replace(
        smoke_cfg,
        model=dataclasses.replace(smoke_cfg.model, base_channels=16),
        training=dataclasses.replace(smoke_cfg.training, weight_decay=0.5),
    )
    fields = rf"model\.base_channels: 8 != 16; training\.weight_decay: {smoke_cfg.training.weight_decay} != 0\.5"
    with pytest.raises(ValueError, match=fields):
        training.train(other, smoke_run.run_dir, progress=False)


def test_unreadable_checkpoint_names_the_file(smoke_store, smoke_cfg, tmp_path):
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match=r"Cannot read checkpoint .*checkpoint\.pt: corrupt.* Delete it"):
        training.train(smoke_cfg, tmp_path, progress=False)


def test_every_truncated_checkpoint_is_a_checkpoint_error(smoke_run, smoke_cfg, tmp_path):
    """A real checkpoint cut at any length (a copy killed mid-write, a full disk), or another program's torch
    file, stops both resuming (``train``) and the step probe of multi-process training (``checkpoint_step``) with
    a CheckpointError that names the file, and the file is left as it was."""
    whole = (smoke_run.run_dir / checkpoint.CHECKPOINT).read_bytes()
    n = len(whole)
    lengths = sorted({0, 1, 100, 5000, n // 2, n - 22, n - 1})  # n - 22: inside the zip's end-of-directory record
    contents = {f"{k} bytes": whole[:k] for k in lengths}
    other = tmp_path / "other.pt"
    torch.save({"step": 3, "weights": torch.zeros(2)}, other)
    contents["another torch file"] = other.read_bytes()
    for name, content in contents.items():
        run_dir = tmp_path / name.replace(" ", "_")
        path = run_dir / checkpoint.CHECKPOINT
        run_dir.mkdir()
        path.write_bytes(content)
        for call in (checkpoint.checkpoint_step, functools.partial(training.train, smoke_cfg, progress=False)):
            with pytest.raises(checkpoint.CheckpointError) as info:
                call(run_dir)
            assert str(path) in str(info.value), name
            assert path.read_bytes() == content, name


def test_resume_after_kill_gives_identical_weights(smoke_run, smoke_cfg, tmp_path):
    tc = smoke_cfg.training
    killed_at = tc.checkpoint_every + 3  # the last checkpoint is 3 steps older
    partial = training.train(smoke_cfg, tmp_path, progress=False, stop_after=killed_at)
    assert partial.step == killed_at
    assert len(metric_lines(tmp_path)) > killed_at  # steps logged after the checkpoint, to be dropped
    resumed = training.train(smoke_cfg, tmp_path, progress=False)
    assert resumed.steps_run == tc.n_steps - tc.checkpoint_every
    for mine, reference in ((resumed.model, smoke_run.model), (resumed.ema, smoke_run.ema)):
        for name, value in reference.state_dict().items():
            assert torch.equal(mine.state_dict()[name], value), name
    # the same records (without the steps logged after the last checkpoint twice); speeds differ
    pd.testing.assert_frame_equal(
        training.read_metrics(tmp_path).drop(columns="samples_per_s"),
        training.read_metrics(smoke_run.run_dir).drop(columns="samples_per_s"),
    )


def test_ema_follows_the_formula():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = nn.Linear(3, 2)
    ema.load_state_dict(model.state_dict())
    expected = [p.detach().clone() for p in model.parameters()]
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        decay = batches.ema_decay(step, 0.999)
        assert decay == min(0.999, (1 + step) / (10 + step))
        batches.update_ema(ema, model, decay)
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, model.parameters())]
    for e, p in zip(expected, ema.parameters()):
        torch.testing.assert_close(p.detach(), e)
    assert batches.ema_decay(10_000, 0.999) == 0.999


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    tc = TrainingConfig(n_steps=100, warmup_steps=10, final_lr_fraction=0.1)
    factors = np.array([batches.lr_factor(s, tc) for s in range(tc.n_steps)])
    np.testing.assert_allclose(factors[:10], np.arange(1, 11) / 10)  # linear warm-up to 1
    assert factors[10] == 1.0 and factors[-1] == pytest.approx(0.1)
    assert (np.diff(factors[10:]) < 0).all()
    middle = 10 + (tc.n_steps - 1 - 10) / 2  # cosine: half-way down at mid-decay
    assert batches.lr_factor(math.floor(middle), tc) > 0.55 > batches.lr_factor(math.ceil(middle), tc)


def test_batch_order_is_reproducible_and_covers_each_epoch():
    n, batch = 10, 4
    first = np.concatenate([batches.batch_indices(0, s, batch, n) for s in range(5)])  # two epochs
    assert sorted(first[:n]) == list(range(n)) and sorted(first[n:]) == list(range(n))
    assert not np.array_equal(first[:n], first[n:])
    np.testing.assert_array_equal(batches.batch_indices(0, 3, batch, n), first[12:16])
    assert not np.array_equal(batches.batch_indices(1, 0, batch, n), first[:batch])


def test_micro_batches_share_the_global_batch():
    tc = TrainingConfig(batch_size=8, micro_batch=2)
    assert batches.micro_batches(tc, 1, 0) == [(0, 0, 2), (1, 2, 4), (2, 4, 6), (3, 6, 8)]
    assert batches.micro_batches(tc, 2, 1) == [(2, 4, 6), (3, 6, 8)]
    assert batches.micro_batches(TrainingConfig(batch_size=8), 2, 1) == [(1, 4, 8)]
    with pytest.raises(ValueError, match="batch_size=8 cannot be cut"):
        batches.micro_batches(TrainingConfig(batch_size=8, micro_batch=3), 1, 0)


def test_two_ddp_processes_match_one(smoke_store, smoke_cfg, tmp_path):
    """torchrun with 2 gloo workers and the same global batch gives the one-process loss curve and weights."""
    tc = dataclasses.replace(
        smoke_cfg.training, batch_size=4, micro_batch=2, n_steps=6, warmup_steps=2, checkpoint_every=6, val_every=6
    )
    cfg = dataclasses.replace(smoke_cfg, training=tc)
    one = training.train(cfg, tmp_path / "one", progress=False)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(to_dict(cfg)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "druids", "train", "--config", str(config_file), "--run-dir", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    two = training.load_trained(cfg, tmp_path / "two", progress=False)
    losses = {name: training.read_metrics(tmp_path / name).query("kind == 'train'").loss for name in ("one", "two")}
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
    for name, value in one.ema.state_dict().items():
        torch.testing.assert_close(two.denoiser.state_dict()[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300, method="thread")  # a validator that waits for the other rank would hang here
def test_train_in_processes_matches_one_and_validates(smoke_store, smoke_cfg, tmp_path):
    """``processes=2`` trains in two spawned gloo processes: the one-process weights, and the skill validator
    (a forecast that rank 0 makes alone while rank 1 waits) is logged instead of deadlocking."""
    from druids import calibration

    tc = dataclasses.replace(
        smoke_cfg.training, batch_size=4, micro_batch=2, n_steps=6, warmup_steps=2, checkpoint_every=6, val_every=3
    )
    cfg = dataclasses.replace(smoke_cfg, training=tc)
    assert training.auto_processes(cfg, "cpu") == min(2, os.cpu_count())
    assert training.auto_processes(smoke_cfg, "cpu") == 1  # no micro_batch: weights would depend on processes
    one = training.train(cfg, tmp_path / "one", progress=False)
    two = training.train(cfg, tmp_path / "two", progress=False, processes=2, validators=[calibration.SkillValidator(cfg)])
    assert two.steps_run == 6 and two.step == 6
    for name, value in one.ema.state_dict().items():
        torch.testing.assert_close(two.ema.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert sorted(training.read_extra_validation(tmp_path / "two")["step"].unique()) == [3, 6]
    again = training.train(cfg, tmp_path / "two", progress=False, processes=2)
    assert again.steps_run == 0


def test_extra_validators_are_logged(smoke_store, tmp_path):
    """``validators`` run at each validation step and land in the metrics log (here: 6-h forecast skill)."""
    from druids import calibration

    cfg = get_config("smoke")
    training.train(cfg, run_dir=tmp_path / "run", progress=False, validators=[calibration.SkillValidator(cfg)])
    extra = training.read_extra_validation(tmp_path / "run")
    assert sorted(extra["step"].unique()) == [10, 20]
    assert set(extra["field"]) == {f"{name}@{level:g}" for name, level in cfg.levels.skill_fields}
    assert (extra[["model", "persistence", "climatology"]].astype(float) > 0).all().all()
    assert set(training.read_metrics(tmp_path / "run")["kind"]) == {"train", "val"}


@pytest.mark.parametrize("history", [1, 2])
def test_condition_noise_keeps_the_next_state(history):
    """Noise on the condition's states changes the target so that state + residual is still x_{t+6h}."""
    n, c, static = 3, 4, 4
    condition = torch.randn(n, history * c + static, 8, 16, dtype=torch.float64)
    target = torch.randn(n, c, 8, 16, dtype=torch.float64)
    ratio = torch.tensor([0.1, 0.2, 0.4, 0.5], dtype=torch.float64)
    noisy, new_target = batches.perturb_condition(condition, target, ratio, 0.5, torch.Generator().manual_seed(0))
    assert noisy.shape == condition.shape and new_target.shape == target.shape
    torch.testing.assert_close(noisy[:, history * c :], condition[:, history * c :])  # static channels untouched
    # the next state in normalised state units, x_t + ratio * residual, is unchanged
    implied = lambda cond, res: cond[:, :c] + ratio[:, None, None] * res
    torch.testing.assert_close(implied(noisy, new_target), implied(condition, target))
    # the noise is 0.5 residual stds: 0.5 * ratio in state units, on every lag
    state_noise = (noisy - condition)[:, : history * c].reshape(n, history, c, -1)
    np.testing.assert_allclose(state_noise.std(dim=(0, 1, 3)).numpy(), 0.5 * ratio.numpy(), rtol=0.1)


def test_condition_noise_can_lie_in_the_spectral_truncation():
    """Projected condition noise has no zonal wavenumber beyond the truncation, and state + residual is unchanged."""
    latitude = np.rad2deg(np.arcsin(np.polynomial.legendre.leggauss(16)[0]))
    condition, target = torch.randn(2, 3 + 4, 16, 32), torch.randn(2, 3, 16, 32)
    ratio = torch.ones(3)
    noisy, new_target = batches.perturb_condition(
        condition, target, ratio, 1.0, torch.Generator().manual_seed(0), latitude, 5
    )
    noise = noisy[:, :3] - condition[:, :3]
    spectrum = torch.fft.rfft(noise, dim=-1).abs()
    assert spectrum[..., 6:].max() < 1e-5 * spectrum.max()
    torch.testing.assert_close(noisy[:, :3] + new_target, condition[:, :3] + target)
    torch.testing.assert_close(noisy[:, 3:], condition[:, 3:])


def _first_step_loss(cfg, condition_noise: float) -> float:
    """The loss of training step 1 recomputed from its parts: the initial model, the step's batch and noise
    stream (as ``druids.training.batches`` defines them), the condition noise of ``condition_noise``."""
    ds, stats = open_dataset(cfg, progress=False)
    train_set = ForecastDataset(ds, stats, "train", cfg.dataset)
    condition, target = collate(train_set, batches.batch_indices(cfg.seed, 0, cfg.training.batch_size, len(train_set)), "cpu")
    generator = torch.Generator().manual_seed(batches.stream_seed(cfg.seed, batches.NOISE, 0, 0))
    if condition_noise > 0:
        ratio = torch.as_tensor(train_set.residual_to_state)
        condition, target = batches.perturb_condition(
            condition, target, ratio, condition_noise, generator, train_set.latitude, cfg.dataset.spectral_truncation
        )
    loss = build_loss(cfg.model, stats.latitude, len(stats.channel_names))
    with torch.no_grad():
        return loss(training.build_model(cfg, stats).train(), target, condition, generator).item()


def test_training_with_condition_noise_runs(smoke_run, smoke_cfg, tmp_path):
    """The condition noise reaches training: with 0.3 (here) and 1.0 (the smoke run) residual stds, the same seed
    gives other losses at every step, and the logged first-step loss is the loss of the batch perturbed by that
    amount, not of the clean batch."""
    assert smoke_cfg.training.condition_noise == 1.0 and smoke_cfg.training.micro_batch is None
    cfg = dataclasses.replace(smoke_cfg, training=dataclasses.replace(smoke_cfg.training, condition_noise=0.3))
    result = training.train(cfg, tmp_path, progress=False, stop_after=3)
    assert result.step == 3
    losses = training.read_metrics(tmp_path).query("kind == 'train'")["loss"].to_numpy()
    reference = training.read_metrics(smoke_run.run_dir).query("kind == 'train'")["loss"].to_numpy()[:3]
    assert len(losses) == 3 and np.isfinite(losses).all() and (losses != reference).all()
    assert losses[0] == pytest.approx(_first_step_loss(cfg, 0.3), rel=1e-6)
    assert reference[0] == pytest.approx(_first_step_loss(smoke_cfg, 1.0), rel=1e-6)
    clean = _first_step_loss(smoke_cfg, 0.0)
    assert clean != pytest.approx(losses[0], rel=1e-3) and clean != pytest.approx(reference[0], rel=1e-3)


def test_speed_options_train_the_eager_model(smoke_store, smoke_cfg, tmp_path):
    """``compile`` + ``channels_last`` computes the eager fp32 loss (the first step's, at the same weights,
    to float precision) and its checkpoint holds plain weights that load into an eager model; ``bf16``
    changes the loss by bf16's precision. Later steps are compared loosely: Adam turns float-level
    differences in near-zero gradients (of zero-initialised weights) into full-size updates."""
    tc = dataclasses.replace(smoke_cfg.training, batch_size=4, n_steps=6, warmup_steps=2, checkpoint_every=6, val_every=6)
    configs = {"eager": tc, "compiled": dataclasses.replace(tc, compile=True, channels_last=True), "bf16": dataclasses.replace(tc, bf16=True)}
    runs = {name: training.train(dataclasses.replace(smoke_cfg, training=c), tmp_path / name, progress=False) for name, c in configs.items()}
    losses = {name: training.read_metrics(tmp_path / name).query("kind == 'train'").loss.values for name in configs}
    np.testing.assert_allclose(losses["compiled"][0], losses["eager"][0], rtol=1e-5)
    np.testing.assert_allclose(losses["bf16"][0], losses["eager"][0], rtol=0.01)
    if runtime.bf16_supported("cpu"):
        assert losses["bf16"][0] != losses["eager"][0]  # bf16 was on
    for name in ("compiled", "bf16"):
        np.testing.assert_allclose(losses[name], losses["eager"], rtol=0.1)
    loaded = training.load_trained(dataclasses.replace(smoke_cfg, training=configs["compiled"]), tmp_path / "compiled", progress=False)
    assert loaded.denoiser.state_dict().keys() == runs["eager"].ema.state_dict().keys()  # a strict load of plain weights
    assert not isinstance(loaded.denoiser.net, torch._dynamo.eval_frame.OptimizedModule)


def test_float32_gradients_match_float64(smoke_run, smoke_cfg):
    """``diagnostics.gradient_errors``: the trained smoke model's float32 training gradient, eager and through
    torch.compile's graph capture (``aot_eager``: no code generation), is float64's to float precision in every
    parameter, for two batches and noise draws. (Inductor's generated code: study compiled_gradients.)"""
    ds, stats = open_dataset(smoke_cfg, progress=False)
    train_set = ForecastDataset(ds, stats, "train", smoke_cfg.dataset)
    draws = [(*reversed(collate(train_set, np.arange(k, k + 4), "cpu")), k) for k in (0, 4)]
    loss = build_loss(smoke_cfg.model, stats.latitude, len(stats.channel_names))
    for backend in (None, "aot_eager"):
        errors = diagnostics.gradient_errors(smoke_run.model, loss, draws, backend=backend)
        assert len(errors) == 2 * len(list(smoke_run.model.parameters()))
        largest = errors.gradient_norm.groupby("draw").transform("max")
        assert (errors.gradient_norm > 1e-3 * largest).mean() > 0.5  # most parameters carry gradient
        assert diagnostics.largest_relative_error(errors).max() < 1e-4, errors.sort_values("relative").tail()
        assert (errors.error_norm < 1e-5 * largest).all()
