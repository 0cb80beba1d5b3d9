"""`--multirun` sweeps through `python -m looksam.train`: Hydra's basic launcher, the submitit
launcher (local executor here; the SLURM config composes) and the optuna sweeper
(configs/hydra/sweeper/optuna_accuracy.yaml). A failed job never stops a sweep. The plugins are
optional extras for users; `make install` (the dev extra) installs both, so nothing here skips."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import subprocess
import sys
import warnings

import pytest
from omegaconf import OmegaConf
from test_config import CONFIGS, compose_cfg

with warnings.catch_warnings():
    # optuna 2.x's storage models use SQLAlchemy 1.4 APIs that 2.0 removed (MovedIn20Warning, a
    # DeprecationWarning): hence SQLAlchemy<2 in the optuna extra.
    warnings.simplefilter("ignore", DeprecationWarning)
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

# Smoke runs of the smallest model: 4 steps on mock data, no wandb.
SMOKE = ("scale=smoke", "logger=disabled", "model=cnn")


def env() -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", WANDB_MODE="disabled",
                XLA_FLAGS="--xla_force_host_platform_device_count=1", HYDRA_FULL_ERROR="1")


def multirun(sweep_dir, *overrides, cwd, command=(sys.executable, "-m", "looksam.train"), timeout=600):
    """Runs the sweep to its end; the process must exit 0 whatever its jobs did."""
    out = subprocess.run([*command, "-m", f"hydra.sweep.dir={sweep_dir}", *overrides], cwd=cwd,
                         env=env(), capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    return out.stdout + out.stderr


def summaries(sweep_dir) -> dict[int, dict]:
    """summary.json of every job, by job number (the sweep's subdir)."""
    return {int(p.parent.name): json.loads(p.read_text())
            for p in pathlib.Path(sweep_dir).glob("*/summary.json")}


# --- launchers ------------------------------------------------------------------------------------


@pytest.mark.slow  # end to end; kept to `make test-slow` (CI runs it): `make test` stays under 15 min
def test_basic_launcher_sweep_goes_on_past_a_failed_job(tmp_path):
    sweep = tmp_path / "sweep"
    log = multirun(sweep, "sam=looksam", "sam.k=0,2", *SMOKE, cwd=tmp_path)
    jobs = summaries(sweep)
    assert sorted(jobs) == [0, 1]
    assert jobs[0]["status"] == "failed" and "sam.k=0 is out of range" in jobs[0]["message"], jobs[0]
    assert jobs[1]["status"] == "completed" and jobs[1]["step"] == 4
    assert jobs[1]["config"]["sam"]["k"] == 2
    assert "the sweep goes on" in log


@pytest.mark.slow  # a minute of subprocess training; make test-slow (and CI) run it
def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, "hydra/launcher=submitit_local", "sam=none", "trainer.seed=0,1", *SMOKE, cwd=tmp_path)
    jobs = summaries(sweep)
    assert sorted(jobs) == [0, 1]
    assert [jobs[i]["status"] for i in (0, 1)] == ["completed", "completed"]
    assert [jobs[i]["config"]["trainer"]["seed"] for i in (0, 1)] == [0, 1]
    # Each job went through submitit, and handed the launcher what a sweeper would optimise.
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2
    returned = []
    for path in results:
        with open(path, "rb") as f:
            outcome, job_return = pickle.load(f)
        assert outcome == "success"
        returned.append(job_return.return_value)
    assert sorted(returned) == sorted(jobs[i]["best_test_accuracy"] for i in (0, 1))


def test_slurm_launcher_config():
    """configs/hydra/launcher/slurm.yaml: submitit_slurm with one task (one JAX process) per GPU."""
    launcher = compose_cfg("hydra/launcher=slurm", "hydra.launcher.gpus_per_node=4",
                           return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.max_num_timeout > 0 and launcher.signal_delay_s > 0  # requeued at the time limit


# --- the optuna sweeper ---------------------------------------------------------------------------


def test_optuna_sweeper_config():
    sweeper = compose_cfg("hydra/sweeper=optuna_accuracy", return_hydra_config=True).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize"  # hydra_main returns the best test accuracy
    assert sweeper.max_failure_rate == 1.0 and sweeper.n_jobs >= 1
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert fixed == {}
    assert space["sam.rho"] == optuna.distributions.LogUniformDistribution(0.01, 1.0)
    assert space["sam.alpha"] == optuna.distributions.UniformDistribution(0.1, 1.0)
    assert space["sam.k"] == optuna.distributions.CategoricalDistribution([2, 5, 10])


APP = """
import hydra
from looksam import config

config.register()

@hydra.main(config_path={configs!r}, config_name="config", version_base="1.3")
def main(cfg):
    print("TRIAL", cfg.sam.rho, cfg.sam.alpha, cfg.sam.k, flush=True)
    return cfg.sam.rho

main()
"""


def test_optuna_search_space_and_direction(tmp_path):
    """The sweeper config's own search space, without training: an objective that returns rho. A
    value on the command line takes its dimension out (k), and the best trial is the largest rho."""
    app = tmp_path / "app.py"
    app.write_text(APP.format(configs=str(CONFIGS)))
    sweep = tmp_path / "sweep"
    log = multirun(sweep, "hydra/sweeper=optuna_accuracy", "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.sampler.seed=0", "sam=looksam", "sam.k=5",
                   cwd=tmp_path, command=(sys.executable, str(app)))
    trials = [tuple(map(float, line.split()[1:])) for line in log.splitlines() if line.startswith("TRIAL ")]
    assert len(trials) == 4 and len({rho for rho, *_ in trials}) == 4
    for rho, alpha, k in trials:
        assert 0.01 <= rho <= 1.0 and 0.1 <= alpha <= 1.0 and k == 5
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(result.best_params) == {"sam.rho", "sam.alpha"}
    assert result.best_value == max(rho for rho, *_ in trials)  # maximised, not minimised


@pytest.mark.slow  # a minute of subprocess training; make test-slow (and CI) run it
def test_optuna_study_goes_on_past_a_failed_trial(tmp_path):
    """Two trials of the real trainer, the last one invalid (k=0): it is FAIL in the study, which
    still ends with the other as best. Fixed rho and alpha leave k the only dimension. The study
    lives in SQLite, as one that should outlive its process would (SQLAlchemy<2 makes that work)."""
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    multirun(sweep, "hydra/sweeper=optuna_accuracy", "hydra/sweeper/sampler=random",
             "hydra.sweeper.sampler.seed=0", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
             "hydra.sweeper.study_name=smoke", "sam=looksam", "sam.k=choice(0,2)", "sam.rho=0.05",
             "sam.alpha=0.7", *SMOKE, cwd=tmp_path)
    jobs = summaries(sweep)
    # optuna 2.x's RandomSampler(seed=0) draws k=2, then k=0: the failure is the study's last trial.
    assert [jobs[i]["config"]["sam"]["k"] for i in (0, 1)] == [2, 0]
    assert jobs[0]["status"] == "completed" and jobs[1]["status"] == "failed"
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert OmegaConf.to_container(result.best_params) == {"sam.k": 2}
    assert result.best_value == jobs[0]["best_test_accuracy"]
    study = optuna.load_study(study_name="smoke", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
