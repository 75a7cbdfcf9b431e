"""In-model calibration: fine-tuning the denoiser on its own sampled members with the almost-fair CRPS.

Lang et al. (2024, "AIFS-CRPS: ensemble forecasting using a model trained with a
loss function based on the continuous ranked probability score") train an
ensemble model on the almost-fair CRPS of ``M`` members ``x_j`` against the truth ``y``,

    afCRPS_a = 1 / (2 M (M - 1)) sum_{j != k} (|x_j - y| + |x_k - y| - (1 - eps) |x_j - x_k|),
    eps = (1 - a) / M,

the blend ``a fCRPS + (1 - a) CRPS`` of the fair and the standard estimator
(:func:`afcrps`). Both are proper; the fair one alone is indifferent to where one
member goes when the others sit on the truth, which with two members lets them
drift apart; ``a = 0.95`` keeps almost all of its fairness and removes that.

Here the members are the diffusion sampler's own (``SamplingConfig``'s sampler and
noise levels, eager fp32), differentiated end to end through every sampler step, for
one 6-h step from true states of the training split (:func:`sampled_members`). The
denoising loss trains each noise level for its conditional mean alone; this loss
sees what the sampler makes of all of them together, so it moves both the ensemble
mean and the spread of a step towards the truth's. Why this method: the chapter's
oracle comparison shows the one-step distribution too wide and its mean too far off
(post-hoc spread scaling and the sampling temperature move only the spread), and the
denoiser is the one place both come from.

:func:`finetune` runs it from a trained EMA denoiser and caches the result
(``.cache/finetuned/``), saving its progress every ``CHECKPOINT_EVERY`` steps so that
a killed run resumes. On a multi-core CPU it runs in local gloo processes
(:func:`auto_processes`), each taking a share of every step's states with the random
draws of those states, its gradients summed with the others': the weights are the
single process's up to float rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as torch_dist
from torch import nn

from druids import runtime, sphere
from druids.cache import artifact_path, atomic_write, write_json
from druids.config import Config, SamplingConfig, to_dict
from druids.data.dataset import ForecastDataset, collate
from druids.sampling import MemberNoise
from druids.sampling.samplers import sample
from druids.training import TrainedModel, batches

#: Random stream of the fine-tuning (batches and sampler noise), apart from training's streams.
FINETUNE_STREAM = 10
#: Steps between the saved states of a running fine-tuning.
CHECKPOINT_EVERY = 10


def afcrps(members: torch.Tensor, truth: torch.Tensor, alpha: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Almost-fair CRPS (Lang et al. 2024), weighted mean over points: scalar.

    ``members`` ``(M, *shape)``, ``truth`` ``shape``, ``M >= 2``; ``weights``
    broadcastable to ``shape`` (e.g. latitude weights ``(H, 1)`` of mean 1), None
    for equal weights. ``alpha = 1``: the fair estimator; ``alpha = 0``: the
    standard (energy-form) estimator of the members' empirical distribution.
    """
    m = members.shape[0]
    if m < 2:
        raise ValueError(f"the almost-fair CRPS needs at least 2 members, got {m}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    skill = (members - truth).abs().mean(0)
    spread = (members[:, None] - members[None]).abs().sum((0, 1)) / (2 * m * (m - 1))
    score = skill - (1 - (1 - alpha) / m) * spread
    if weights is None:
        return score.mean()
    weights = torch.broadcast_to(weights.to(score.dtype), score.shape)
    return (weights * score).sum() / weights.sum()


def sampled_members(
    denoiser,
    condition: torch.Tensor,
    n_channels: int,
    n_members: int,
    sampling_cfg: SamplingConfig,
    seed: int,
    first_row: int = 0,
) -> torch.Tensor:
    """``n_members`` samples of the next residual per condition, differentiable: ``(M, B, C, H, W)``, ``C = n_channels``.

    ``condition`` ``(B, Cc, H, W)``: rows ``first_row ... first_row + B - 1`` of a
    larger batch (a process's share of a step's states); the noise of member ``j``
    of row ``b`` comes from its own generator seeded from ``(seed, j, b)``, whichever
    process draws it. Runs ``sampling_cfg``'s sampler with autograd on (no
    inference mode, no compilation).
    """
    rows = range(first_row, first_row + condition.shape[0])
    param = next(denoiser.parameters())
    generators = [torch.Generator().manual_seed(batches.stream_seed(seed, j, b)) for j in range(n_members) for b in rows]
    shape = (n_channels, *condition.shape[-2:])
    noise = MemberNoise(generators, shape, param.dtype, param.device, getattr(denoiser, "noise_band", None))
    x, _ = sample(denoiser, condition.repeat(n_members, 1, 1, 1), noise, sampling_cfg)
    return x.reshape(n_members, len(rows), *x.shape[1:])


@dataclasses.dataclass(frozen=True)
class FineTuneKey:
    """What a fine-tuned model depends on (its cache key): the trained run, the settings and the sampler."""

    run: str
    seed: int
    steps: int
    states: int
    members: int
    lr: float
    alpha: float
    sampling: SamplingConfig


@dataclasses.dataclass
class FineTuned:
    """A fine-tuned denoiser (eval mode, no gradients) and its loss per step (``step``, ``afcrps``, ``grad_norm``)."""

    denoiser: nn.Module
    history: pd.DataFrame


def eager_sampling(cfg: SamplingConfig) -> SamplingConfig:
    """``cfg`` without compilation, bf16 or channels-last: the sampler the fine-tuning differentiates."""
    return dataclasses.replace(cfg, compile=False, bf16=False, channels_last=False)


def finetune_key(trained: TrainedModel, cfg: Config) -> FineTuneKey:
    """The cache key of :func:`finetune` for ``trained`` and ``cfg.calibration``'s fine-tuning settings."""
    cc = cfg.calibration
    return FineTuneKey(trained.run_dir.name, cfg.seed, cc.finetune_steps, cc.finetune_states, cc.finetune_members,
                       cc.finetune_lr, cc.finetune_alpha, eager_sampling(cfg.sampling))  # fmt: skip


def finetune(trained: TrainedModel, data, cfg: Config, progress: bool = True, processes: int | None = None) -> FineTuned:
    """Fine-tune ``trained.denoiser`` (a copy) on the afCRPS of its sampled members; cached by :func:`finetune_key`.

    ``cfg.calibration``: ``finetune_steps`` AdamW steps (learning rate
    ``finetune_lr``, gradient norm clipped at ``cfg.training.grad_clip``), each on
    ``finetune_states`` training states with ``finetune_members`` members and
    ``alpha = finetune_alpha``; loss weights per latitude as the training's
    (``cfg.model.latitude_weighting``), in normalised residual units.
    ``processes``: local CPU processes that share out each step's states
    (default :func:`auto_processes`; 1 runs here). The result does not depend on
    it beyond float rounding, so it is not part of the cache key.
    """
    key = finetune_key(trained, cfg)
    path = artifact_path("finetuned", key, "pt")
    if not path.exists():
        _run(trained, data, cfg, key, path, progress, auto_processes(trained, cfg) if processes is None else processes)
        write_json(path.with_suffix(".pt.json"), {"kind": "finetuned", "config": to_dict(key)})
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = copy.deepcopy(trained.denoiser)
    model.load_state_dict(saved["model"])
    return FineTuned(model.eval().requires_grad_(False), pd.DataFrame(saved["history"]))


def auto_processes(trained: TrainedModel, cfg: Config) -> int:
    """How many local processes :func:`finetune` uses: one per CPU core, at most one per state of a step
    (``finetune_states``); 1 on CUDA, and for a denoiser that is not on the CPU.

    A state's sampler chain at batch 1-2 keeps two threads poorly busy, as the small
    work of ``bench/process_map.py`` does (docs/decisions.md, "process-layout")."""
    if next(trained.denoiser.parameters()).device.type != "cpu":
        return 1
    return runtime.local_processes(cfg.calibration.finetune_states)


def _run(trained: TrainedModel, data, cfg: Config, key: FineTuneKey, path: Path, progress: bool, processes: int) -> None:
    """The fine-tuning here (``processes`` = 1), or in ``processes`` spawned CPU processes (gloo) while this
    one shows their progress (rank 0's step file, :func:`_steps_done`); either way ``path`` is written."""
    if processes <= 1:
        _tune(trained, data, cfg, key, path, progress, CHECKPOINT_EVERY)
        return
    if next(trained.denoiser.parameters()).device.type != "cpu":
        raise ValueError(f"processes={processes} starts CPU processes; the denoiser is not on the CPU (use processes=1)")
    if processes > key.states:
        raise ValueError(f"processes={processes} exceeds finetune_states={key.states}: each process needs a state")
    _step_file(path).unlink(missing_ok=True)  # a killed run's count, which the new bar must not start from
    args = (trained, data, cfg, key, path, CHECKPOINT_EVERY)
    done = functools.partial(_steps_done, path, key.steps)
    desc = f"afCRPS fine-tuning ({processes} processes)"
    runtime.run_local_processes(_tune_in_process_group, args, processes, done, key.steps, desc, progress)


def _tune_in_process_group(trained: TrainedModel, data, cfg: Config, key: FineTuneKey, path: Path, checkpoint_every: int):
    """One of :func:`_run`'s spawned processes: :func:`_tune` as its rank of the gloo process group."""
    with runtime.process_group(torch.device("cpu")) as process:
        _tune(trained, data, cfg, key, path, False, checkpoint_every, process)


def _tune(
    trained: TrainedModel, data, cfg: Config, key: FineTuneKey, path: Path, progress: bool, checkpoint_every: int,
    process: runtime.Process = runtime.Process(),
) -> None:  # fmt: skip
    """The fine-tuning loop of ``process`` (alone, or one rank of a process group, all ranks taking the same steps).

    Resumes from ``path``'s ``.partial`` state; rank 0 saves that state every
    ``checkpoint_every`` steps, the number of steps done (:func:`_step_file`, in a
    group) after each, and ``path`` at the end.
    """
    partial = path.with_suffix(".partial")
    model = copy.deepcopy(trained.denoiser).train().requires_grad_(True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=key.lr, weight_decay=0.0)
    history, start = [], 0
    if partial.exists():
        state = torch.load(partial, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        history, start = state["history"], state["step"]
    device = next(model.parameters()).device
    train_set = ForecastDataset(data, trained.stats, "train", cfg.dataset)
    weights = sphere.latitude_weights(trained.stats.latitude, cfg.model.latitude_weighting)[:, None].to(device)
    lead = process.rank == 0
    show = progress and lead
    bar = runtime.progress(total=key.steps, initial=start, disable=not show, desc="afCRPS fine-tuning", unit="step")
    for step in range(start, key.steps):
        optimiser.zero_grad(set_to_none=True)
        loss = _gradients(model, train_set, weights, key, step, process)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip)
        optimiser.step()
        history.append({"step": step + 1, "afcrps": loss, "grad_norm": grad_norm.item()})
        bar.update()
        bar.set_postfix(afcrps=f"{loss:.4f}")
        if lead and (step + 1) % checkpoint_every == 0 and step + 1 < key.steps:
            state = {"model": model.state_dict(), "optimiser": optimiser.state_dict(), "history": history, "step": step + 1}
            atomic_write(partial, lambda tmp, state=state: torch.save(state, tmp))
        if lead and process.world_size > 1:
            atomic_write(_step_file(path), lambda tmp, done=step + 1: tmp.write_text(str(done)))
    bar.close()
    if lead:
        atomic_write(path, lambda tmp: torch.save({"model": model.state_dict(), "history": history}, tmp))
        partial.unlink(missing_ok=True)
        _step_file(path).unlink(missing_ok=True)


def _gradients(model: nn.Module, train_set: ForecastDataset, weights, key: FineTuneKey, step: int, process) -> float:
    """The gradient of ``step``'s afCRPS (mean over its ``key.states`` states) into ``.grad``; returns the loss.

    In a process group each rank takes a contiguous block of the states and
    backpropagates its afCRPS times its share of them; the gradients and losses
    are then summed over the ranks (one all-reduce), giving the mean of the lone
    process up to rounding (the states' latitude weights have equal sums).
    """
    indices = batches.batch_indices(batches.stream_seed(key.seed, FINETUNE_STREAM), step, key.states, len(train_set))
    first, stop = key.states * process.rank // process.world_size, key.states * (process.rank + 1) // process.world_size
    condition, target = collate(train_set, indices[first:stop], weights.device)
    seed = batches.stream_seed(key.seed, FINETUNE_STREAM, step)
    members = sampled_members(model, condition, target.shape[1], key.members, key.sampling, seed, first)
    loss = afcrps(members, target, key.alpha, weights)
    if process.world_size == 1:
        loss.backward()
        return loss.item()
    share = (stop - first) / key.states
    (loss * share).backward()
    return _sum_over_processes(model, loss.detach() * share)


def _sum_over_processes(model: nn.Module, value: torch.Tensor) -> float:
    """Sum ``model``'s gradients over the process group, in place, and return the sum of the scalar ``value``."""
    params = list(model.parameters())
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [value.reshape(1)])
    torch_dist.all_reduce(flat)
    for p, g in zip(params, flat[:-1].split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p).clone()
    return flat[-1].item()


def _step_file(path: Path) -> Path:
    """Where rank 0 of a process group records the fine-tuning steps done (text), for the parent's progress bar."""
    return path.with_suffix(".step")


def _steps_done(path: Path, steps: int) -> int:
    """Steps done by the fine-tuning of ``path`` in processes: all once ``path`` exists, else its step file's count."""
    if path.exists():
        return steps
    try:
        return int(_step_file(path).read_text())
    except (FileNotFoundError, ValueError):
        return 0
