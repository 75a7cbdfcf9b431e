"""Configs, cache, values and the command line."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from druids import cache, cli, paths, values
from druids.config import PROFILES, Config, config_hash, from_dict, get_config, objective_config, to_dict


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="valid profiles are: smoke, default, gpu"):
        get_config("fast")


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_config_round_trip_and_hash(profile):
    cfg = get_config(profile)
    assert from_dict(Config, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(get_config(profile))
    changed = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, noise_amplitude=cfg.world.noise_amplitude + 1e-4))
    assert config_hash(changed) != config_hash(cfg)


def test_default_world_meets_the_design():
    world = get_config("default").world
    assert (world.truncation, world.n_levels, world.output_hours) == (21, 8, 6)
    assert world.spinup_days >= 200 and world.noise_amplitude > 0


def test_objective_config_gives_flow_its_own_steps():
    cfg = get_config("default")
    edm, flow = objective_config(cfg, "edm"), objective_config(cfg, "flow")
    assert (edm.model.objective, flow.model.objective) == ("edm", "flow")
    assert (edm.training.n_steps, flow.training.n_steps) == (cfg.training.n_steps, cfg.training.flow_n_steps)
    smoke = get_config("smoke")  # no flow_n_steps: both objectives train as long
    assert objective_config(smoke, "flow").training.n_steps == smoke.training.n_steps
    with pytest.raises(ValueError, match="objective"):
        objective_config(cfg, "ddpm")


def test_compute_or_load_computes_once_per_config(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return "payload"

    def run(cfg):
        return cache.compute_or_load(
            "demo", cfg, compute, save=lambda v, p: p.write_text(v), load=lambda p: p.read_text(), suffix="txt", root=tmp_path
        )

    cfg = get_config("smoke")
    assert run(cfg) == "payload" and run(cfg) == "payload"
    assert len(calls) == 1
    run(dataclasses.replace(cfg, seed=1))
    assert len(calls) == 2
    assert (tmp_path / "demo" / f"demo-{config_hash(cfg)}.txt.json").exists()


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "artifact.txt"

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.atomic_write(target, broken)
    assert list(tmp_path.iterdir()) == []


def test_values_are_latex_macros(tmp_path):
    path = values.write_values("01_data", {"dataJetSpeed": 28.456, "dataLabel": "x"}, profile="smoke", directory=tmp_path)
    text = path.read_text()
    assert "\\newcommand{\\dataJetSpeed}{28.5}" in text and "profile smoke" in text
    with pytest.raises(ValueError, match="letters only"):
        values.write_values("01_data", {"jet_1": 1.0}, profile="smoke", directory=tmp_path)


def test_cli_lists_chapters_and_rejects_unknown_ones():
    runner = CliRunner()
    assert "01_data" in runner.invoke(cli.app, ["chapters"]).output
    result = runner.invoke(cli.app, ["run", "99_nothing", "--profile", "smoke"])
    assert result.exit_code != 0 and "unknown chapter" in result.output
    result = runner.invoke(cli.app, ["run", "01_data", "--profile", "huge"])
    assert result.exit_code != 0 and "valid profiles" in result.output


def _message(output: str) -> str:
    """A command-line error as plain words: rich's box drawing dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", output).split())


def test_bad_profile_is_one_short_error_from_python_m_and_the_command():
    """``python -m druids train`` (what torchrun runs) and ``druids train`` reject a bad profile alike:
    exit code 2, the valid profiles named, no traceback."""
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-m", "druids", "train", "--profile", "nope"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=paths.ROOT)  # fmt: skip
    command = CliRunner().invoke(cli.app, ["train", "--profile", "nope"], prog_name="druids", env={"COLUMNS": "80"})
    assert done.returncode == command.exit_code == 2
    assert done.stdout == ""
    for output in (done.stderr, command.output):
        assert "Traceback" not in output and len(output.splitlines()) <= 8
        assert "Unknown profile 'nope'; valid profiles are: smoke, default, gpu" in _message(output)
    assert _message(done.stderr) == _message(command.output)


def test_bad_config_file_is_a_short_error(tmp_path):
    """``druids train --config`` with a missing file or JSON that is not a Config: exit code 2, the file named."""
    runner, bad = CliRunner(), tmp_path / "config.json"
    bad.write_text('{"seed": 0}')
    for path, words in ((tmp_path / "missing.json", "does not exist"), (bad, "is not a Config as JSON")):
        result = runner.invoke(cli.app, ["train", "--config", str(path)], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
        assert str(path) in _message(result.output) and words in _message(result.output)
        assert "Traceback" not in result.output


def test_failing_chapter_names_chapter_and_cell(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "99_broken.py").write_text(
        '# %% tags=["parameters"]\nprofile = "smoke"\nseed = 0\n\n# %%\nx = 1\n\n# %%\nraise RuntimeError("boom")\n'
    )
    monkeypatch.setattr(paths, "NOTEBOOKS", notebooks)
    with pytest.raises(cli.ChapterFailed, match=r"chapter 99_broken failed in cell \d+ .*RuntimeError: boom"):
        cli.execute_chapter("99_broken", "smoke", 0, output_dir=tmp_path / "out")


@pytest.mark.filterwarnings("ignore:A test tried to use socket:UserWarning")
def test_network_is_blocked_in_tests():
    """pytest-socket (pyproject addopts) lets tests reach only this machine."""
    import socket

    from pytest_socket import SocketConnectBlockedError

    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed


def test_training_seed_keeps_the_world(monkeypatch):
    """``druids train --training-seed`` changes the training seed only; ``--seed`` re-seeds the world as well."""
    from druids import training

    seen = {}

    def fake_train(cfg, run_dir, **kwargs):
        seen["cfg"] = cfg
        return training.TrainResult(None, None, None, Path("run"), 0, 0)

    monkeypatch.setattr(training, "train", fake_train)
    runner, world = CliRunner(), get_config("smoke").world
    assert runner.invoke(cli.app, ["train", "--profile", "smoke", "--training-seed", "5"]).exit_code == 0
    assert seen["cfg"].seed == 5 and seen["cfg"].world == world
    assert runner.invoke(cli.app, ["train", "--profile", "smoke", "--seed", "5"]).exit_code == 0
    assert seen["cfg"].seed == 5 and seen["cfg"].world.seed == 5 != world.seed
