"""The Hydra tree in configs/: every file composes against the schema and validates, bad keys and
values fail with their name, scale presets shrink only what they claim, and sweeps expand."""

from __future__ import annotations

import itertools
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from looksam import config, models, optim, run_identity, sam
from looksam.data import pipeline
from reproduce import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
GROUPS = ("model", "data", "optimizer", "sam", "schedule", "trainer", "logger", "scale")
SCALES = ("paper", "cpu", "smoke", "afternoon")


def names(group, configs=CONFIGS):
    return sorted(p.stem for p in (configs / group).glob("*.yaml"))


GROUP_FILES = [(g, n) for g in (*GROUPS, "experiment") for n in names(g)]
# Registry cells (reproduce/tables/, the only description of a paper's settings) the tests below
# compose as examples of a paper run: ESAM Table 1 (its hyper-parameters: ESAM Table 4), LookSAM
# Table 1 (SGD-M on CIFAR) and Table 2 (a ViT on ImageNet, warmup steps and m-sharpness).
PAPER_CELLS = [("esam_table1", "resnet18_cifar10/esam"), ("looksam_table1", "resnet18/looksam5"),
               ("looksam_table2", "vit_b16/looksam5")]
CELL_IDS = [f"{t}:{c}" for t, c in PAPER_CELLS]
VIT_B16 = PAPER_CELLS[2]


def cell_overrides(table_id, cell_id) -> list[str]:
    return list(registry.load(table_id).cell(cell_id).overrides)


def compose_cfg(*overrides, configs=CONFIGS, **kwargs):
    config.register()
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        return compose("config", overrides=list(overrides), **kwargs)


def scaled(*overrides):
    return config.scaled_config(compose_cfg(*overrides))


def error_text(exc: BaseException) -> str:
    """The message with its causes: Hydra wraps OmegaConf's error (which holds full_key)."""
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


# --- the tree is complete ------------------------------------------------------------------------


def test_defaults_compose_and_validate():
    cfg = scaled()
    assert (cfg.model.name, cfg.data.name, cfg.optimizer.name, cfg.sam.method, cfg.scale.name) == (
        "resnet18", "cifar10", "sgd", "none", "paper")
    assert config.validated_estimator(cfg).method == "none"


def test_group_files_cover_the_registries():
    assert names("model") == sorted(models.MODELS)
    assert names("sam") == sorted(sam.METHODS)
    assert names("optimizer") == sorted(optim.OPTIMIZERS)
    assert names("data") == sorted(pipeline.DATASETS)
    assert {"cosine", "linear"} <= set(names("schedule"))
    assert names("scale") == sorted(SCALES)


@pytest.mark.parametrize("group,name", GROUP_FILES, ids=[f"{g}={n}" for g, n in GROUP_FILES])
def test_every_group_file_composes_and_validates(group, name):
    cfg = scaled(f"{group}={name}")
    config.validated_estimator(cfg)
    if group == "sam":
        assert cfg.sam.method == name
    elif group in ("model", "data", "optimizer", "scale"):
        assert cfg[group].name == name


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("cell", PAPER_CELLS, ids=CELL_IDS)
def test_paper_cells_validate_at_every_scale(cell, scale):
    est = config.validated_estimator(scaled(*cell_overrides(*cell), f"scale={scale}"))
    assert est.method == compose_cfg(*cell_overrides(*cell)).sam.method


@pytest.mark.parametrize("scale", ("cpu", "smoke"))
def test_scale_model_kwargs_build_small_models(scale):
    """Every model at cpu/smoke scale is valid, builds on its (possibly mapped) data and is small."""
    limit = {"cpu": 5_000_000, "smoke": 100_000}[scale]
    for name in sorted(models.MODELS):
        cfg = scaled(f"model={name}", "data=imagenet2012", f"scale={scale}")
        config.validated_estimator(cfg)
        spec = pipeline.spec(cfg.data.name)
        model = models.create(name, num_classes=spec.num_classes,
                              **OmegaConf.to_container(cfg.model.kwargs))
        x = jnp.zeros((2, spec.image_size, spec.image_size, 3))
        shapes = jax.eval_shape(lambda k, m=model, x=x: m.init(k, x, train=False), jax.random.key(0))
        count = sum(math.prod(p.shape) for p in jax.tree.leaves(shapes["params"]))
        assert count < limit, (name, count)


# --- the papers' settings ------------------------------------------------------------------------

# The config key a group file selects by its name (sam=esam: sam.method == "esam").
GROUP_KEYS = {"model": "model.name", "data": "data.name", "optimizer": "optimizer.name",
              "sam": "sam.method", "schedule": "schedule.decay"}


def registry_values(table_id, cell_id) -> dict:
    """The paper's settings as the registry file writes them for a cell: {config key: value}."""
    values = {}
    for override in OverridesParser.create().parse_overrides(cell_overrides(table_id, cell_id)):
        key = override.key_or_group
        values[GROUP_KEYS.get(key, key)] = override.value()  # typed as Hydra reads it: 1e-3 a float
    return values


@pytest.mark.parametrize("cell", PAPER_CELLS, ids=CELL_IDS)
def test_paper_cells_hold_their_registry_values(cell):
    """Every value the registry transcribes from the paper reaches the composed config at paper
    scale, through the group files and the schema's defaults."""
    want = registry_values(*cell)
    assert len(want) >= 10  # the paper's hyper-parameters, not just a method
    cfg = scaled(*cell_overrides(*cell))
    assert {k: OmegaConf.select(cfg, k) for k in want} == want
    assert cfg.model.kwargs == {}  # the paper's architecture, unchanged at paper scale


def test_no_experiment_restates_a_registry_cell():
    """configs/experiment/ holds only settings no table has: a paper cell is the registry's."""
    experiments = names("experiment")
    if not experiments:
        return
    from reproduce import compose

    cells = [c for t in registry.all_tables().values() for c in t.cells]
    known = compose.configs(cells)
    for name in experiments:
        mine = run_identity.resolved(scaled(f"experiment={name}"))
        assert all(run_identity.changes(mine, other) for other in known), name


def test_command_line_overrides_an_experiment(tmp_path):
    """An experiment file (`# @package _global_`) sets values over the groups' and the command
    line sets values over the experiment's."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: vit_b16\n"
        "optimizer:\n  lr: 3.0e-3\nsam:\n  rho: 0.18\n")
    cfg = compose_cfg("experiment=mine", "model=wrn28_10", "sam.rho=0.3",
                      f"hydra.searchpath=[file://{tmp_path}]")
    assert (cfg.model.name, cfg.sam.rho, cfg.optimizer.lr) == ("wrn28_10", 0.3, 3e-3)
    assert compose_cfg("experiment=mine", f"hydra.searchpath=[file://{tmp_path}]").model.name == "vit_b16"


# --- bad keys, types and values fail early, naming the key ---------------------------------------


@pytest.mark.parametrize("override,key", [
    ("sam.rhoo=0.1", "sam.rhoo"),  # misspelt key
    ("trainer.epoch=3", "trainer.epoch"),
    ("model.kwargs.width=8", "model.kwargs.width"),  # a new kwarg needs `+`
    ("sam.k=five", "sam.k"),  # wrong type
    ("trainer.batch_size=1.5", "trainer.batch_size"),
    ("logger.tensorboard=maybe", "logger.tensorboard"),
])
def test_compose_rejects_unknown_keys_and_wrong_types(override, key):
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(override)
    assert key in error_text(info.value)


@pytest.mark.parametrize("group,text,key", [
    ("model", "name: resnet18\nwidht: 8\n", "widht"),
    ("sam", "method: sam\nrho: 0.05\nbeta_: 0.5\n", "beta_"),
    ("experiment", "# @package _global_\ntrainer:\n  epoch: 3\n", "epoch"),
])
def test_unknown_key_in_a_file_fails(tmp_path, group, text, key):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    (configs / group).mkdir(exist_ok=True)  # experiment/: none ship
    (configs / group / "bad.yaml").write_text(text)
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(f"{group}=bad", configs=configs)
    assert key in error_text(info.value)


@pytest.mark.parametrize("overrides,pattern", [
    (["sam=looksam", "sam.k=0"], r"sam\b.*\bk=0"),
    (["sam=esam", "sam.gamma=1.5"], r"sam\b.*\bgamma=1\.5"),
    (["sam=sam", "sam.rho=-0.1"], r"sam\b.*\brho=-0\.1"),
    (["model.name=resnet19"], r"model\.name='resnet19'"),
    (["optimizer.name=adam"], r"optimizer\.name='adam'"),
    (["+model.kwargs.depth=10"], r"model\.kwargs .*'depth'"),
    (["schedule.decay=step"], r"schedule\.decay='step'"),
    (["trainer.microbatch=100"], r"trainer\.microbatch=100"),
    (["data.name=cifar11"], r"data\.name='cifar11'"),
    (["trainer.log_every_steps=0"], r"trainer\.log_every_steps=0: must be >= 1"),
    (["scale=smoke", "scale.log_every_steps=0"], r"scale\.log_every_steps=0: must be >= 1"),
    (["trainer.eval_batch_size=0"], r"trainer\.eval_batch_size=0: must be >= 1"),
    (["scale=smoke", "scale.eval_batch_size=-8"], r"scale\.eval_batch_size=-8: must be >= 1"),
    (["trainer.checkpoint_every_steps=0"], r"trainer\.checkpoint_every_steps=0: must be >= 1"),
    (["trainer.keep_checkpoints=0"], r"trainer\.keep_checkpoints=0: must be >= 1"),
    (["trainer.num_devices=0"], r"trainer\.num_devices=0: must be >= 1 or null"),
    (["schedule.warmup_epochs=-1"], r"schedule\.warmup_epochs=-1\.0: must be >= 0"),
    (["schedule.warmup_steps=-5"], r"schedule\.warmup_steps=-5: must be >= 0"),
    (["data.cutout=0"], r"data\.cutout=0: the erased square's side"),
    (["data.cutout_probability=1.5"], r"data\.cutout_probability=1\.5: must lie in \[0, 1\]"),
    (["sam.batchnorm=all"], r"sam\.batchnorm='all': one of \('clean', 'every_forward'\)"),
    (["sam=esam", "sam.selection=top"], r"sam\b.*selection='top'"),
])
def test_validate_rejects_bad_values_naming_the_key(overrides, pattern):
    cfg = scaled(*overrides)
    with pytest.raises(ValueError) as info:
        config.validated_estimator(cfg)
    assert re.search(pattern, str(info.value)), str(info.value)


def test_resume_compares_what_a_run_computes():
    """A rerun in a workdir may move, log and checkpoint differently, never compute differently;
    a scale preset counts through the values it resolves to."""
    base = run_identity.resolved(scaled("scale=smoke"))
    moved = run_identity.resolved(scaled(
        "scale=smoke", "trainer.workdir=/elsewhere", "data.data_dir=/data", "logger.project=p",
        "logger.wandb_mode=disabled", "scale.max_steps=9", "scale.log_every_steps=5",
        "trainer.microbatch=4", "trainer.num_devices=2", "trainer.checkpoint_every_steps=7",
        "distributed.initialization_timeout=5", "table=t1", "cell=c1"))
    assert run_identity.changes(base, moved) == []
    other = run_identity.resolved(scaled("scale=smoke", "scale.model_kwargs.resnet18.width=8",
                                        "scale.epochs=2", "trainer.seed=1"))
    assert run_identity.changes(base, other) == [
        "model.kwargs.width: 4 -> 8", "trainer.epochs: 1.0 -> 2.0", "trainer.seed: 0 -> 1"]
    # A key a free-form dict loses counts (an empty dict leaves no key of its own).
    assert run_identity.changes({"sam": {"rho": 0.05}}, {"sam": {}}) == ["sam.rho: 0.05 -> <unset>"]
    assert run_identity.changes({"model": {"kwargs": {}}}, {"model": {"kwargs": {"width": 8}}}) == [
        "model.kwargs.width: <unset> -> 8"]


def test_data_name_typo_is_rejected():
    with pytest.raises(ValueError, match="cifar11"):
        config.validated_estimator(scaled("data.name=cifar11"))


# --- scale presets: how big and how long, never the method ---------------------------------------


@pytest.mark.parametrize("cell", PAPER_CELLS, ids=CELL_IDS)
def test_scale_never_changes_sam(cell):
    # Only m may change: it must keep dividing the preset's batch (scaled_m, next tests).
    raw = OmegaConf.to_container(compose_cfg(*cell_overrides(*cell)).sam)
    for scale in SCALES:
        cfg = scaled(*cell_overrides(*cell), f"scale={scale}")
        want = dict(raw, m=config.scaled_m(raw["m"], cfg.trainer.batch_size, cfg.trainer.microbatch))
        assert OmegaConf.to_container(cfg.sam) == want


@pytest.mark.parametrize("m, batch, microbatch, want", [
    (None, 8, None, None),  # one group stays one group
    (16, 128, None, 16),    # LookSAM's ViTs at scale=cpu: the per-device batch is kept
    (16, 8, None, 8),       # ... at scale=smoke: cut to the batch, one perturbation per step
    (128, 8, None, 8),      # ESAM Table 2 at scale=smoke
    (16, 24, None, 12),     # not a divisor: the largest divisor of the batch not above m
    (64, 96, None, 48),
    (5, 8, None, 4),
    (16, 96, 32, 16),       # a surviving microbatch that m divides
    (3, 8, 4, 2),           # ... and one it does not: m must divide every chunk
])
def test_scaled_m_keeps_whole_groups(m, batch, microbatch, want):
    got = config.scaled_m(m, batch, microbatch)
    assert got == want
    if got is not None:
        assert got <= m and batch % got == 0 and (microbatch or got) % got == 0


def test_scale_changes_sam_m_only_where_the_batch_needs_it():
    """sam.m is the only `sam` key a scale may change, and only to keep whole m-sharpness groups
    in the scaled batch (LookSAM's ViT tables: m = 16, the paper's per-core batch)."""
    base = tuple(cell_overrides(*VIT_B16))
    assert "sam.m=16" in base
    raw = OmegaConf.to_container(compose_cfg(*base).sam)
    for scale, extra, m in (("paper", (), 16), ("cpu", (), 16), ("afternoon", (), 16),
                            ("smoke", (), 8), ("cpu", ("trainer.microbatch=512",), 16),
                            ("smoke", ("scale.batch_size=24",), 12)):
        cfg = scaled(*base, f"scale={scale}", *extra)
        assert OmegaConf.to_container(cfg.sam) == {**raw, "m": m}, (scale, extra)
        est = config.validated_estimator(cfg)
        assert est.m == m and cfg.trainer.batch_size % m == 0


@pytest.mark.parametrize("cell", PAPER_CELLS, ids=CELL_IDS)
def test_paper_scale_is_the_cell_itself(cell):
    cfg = compose_cfg(*cell_overrides(*cell))
    assert run_identity.resolved(config.scaled_config(cfg)) == run_identity.resolved(cfg)


@pytest.mark.parametrize("scale", ("cpu", "smoke"))
@pytest.mark.parametrize("cell", PAPER_CELLS, ids=CELL_IDS)
def test_cpu_and_smoke_shrink_what_they_claim(cell, scale):
    before = compose_cfg(*cell_overrides(*cell), f"scale={scale}")
    after = config.scaled_config(before)
    s = before.scale
    assert after.trainer.epochs == s.epochs
    assert after.trainer.batch_size == s.batch_size == {"cpu": 128, "smoke": 8}[scale]
    assert after.trainer.eval_every_epochs == 1
    assert after.data.name == {"imagenet2012": "cifar10"}.get(before.data.name, before.data.name)
    assert after.data.name in ("cifar10", "cifar100")  # no ImageNet below paper scale
    assert after.model.name == before.model.name
    assert OmegaConf.to_container(after.model.kwargs) == OmegaConf.to_container(
        s.model_kwargs[before.model.name])
    # The lr follows the batch by the linear rule, from the paper's batch.
    if before.trainer.batch_size != s.batch_size:
        assert after.optimizer.base_batch == before.trainer.batch_size
    assert after.optimizer.lr == before.optimizer.lr
    if scale == "smoke":
        assert (after.trainer.max_steps, after.data.mock, after.data.mock_examples) == (4, True, 32)
        assert after.trainer.eval_batch_size == 8 and after.trainer.log_every_steps == 1
    else:
        assert after.trainer.epochs == 3 and not after.data.mock and after.trainer.max_steps is None


def test_scales_cover_every_model():
    smoke, cpu = compose_cfg("scale=smoke").scale, compose_cfg("scale=cpu").scale
    assert set(smoke.model_kwargs) == set(models.MODELS)
    assert set(cpu.model_kwargs) == set(models.MODELS) - {"cnn"}  # cnn is CPU-sized already
    assert smoke.dataset == cpu.dataset == {"imagenet2012": "cifar10"}


# --- sweeps and Hydra's own settings -------------------------------------------------------------


def expand(overrides):
    """The jobs Hydra's basic sweeper makes of a multirun command line (cartesian product)."""
    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(job) for job in itertools.product(*choices)]


def test_sweep_expands_and_every_job_composes():
    jobs = expand(["sam=looksam", "sam.k=2,5,10", "scale=smoke", "optimizer=sgd,adamw"])
    assert len(jobs) == 6
    seen = set()
    for job in jobs:
        cfg = scaled(*job)
        config.validated_estimator(cfg)
        seen.add((cfg.sam.k, cfg.optimizer.name))
    assert seen == {(k, o) for k in (2, 5, 10) for o in ("sgd", "adamw")}


def test_hydra_settings():
    h = OmegaConf.to_container(compose_cfg(return_hydra_config=True).hydra, resolve=False)
    assert h["job"]["chdir"] is False
    assert h["run"]["dir"] == "${oc.env:LOOKSAM_RUNS,runs}/${now:%Y-%m-%d}/${now:%H-%M-%S}"
    assert h["sweep"] == {"dir": "${oc.env:LOOKSAM_RUNS,runs}/multirun/${now:%Y-%m-%d_%H-%M-%S}",
                          "subdir": "${hydra.job.num}"}
    assert h["launcher"]["_target_"].endswith("BasicLauncher")


APP = """
import os, sys
import hydra
from looksam import config

config.register()

@hydra.main(config_path={configs!r}, config_name="config", version_base="1.3")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig
    cfg = config.scaled_config(cfg)
    print("JOB", cfg.sam.method, cfg.sam.k, cfg.trainer.max_steps, os.getcwd(),
          HydraConfig.get().runtime.output_dir, flush=True)

main()
"""


def test_multirun_with_the_basic_launcher(tmp_path):
    """`-m sam=looksam sam.k=2,5,10 scale=smoke` runs three jobs under $LOOKSAM_RUNS/multirun."""
    app = tmp_path / "app.py"
    app.write_text(APP.format(configs=str(CONFIGS)))
    env = {**os.environ, "LOOKSAM_RUNS": str(tmp_path / "runs"), "HYDRA_FULL_ERROR": "1"}
    out = subprocess.run([sys.executable, str(app), "-m", "sam=looksam", "sam.k=2,5,10", "scale=smoke"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    jobs = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("JOB ")]
    assert [j[:3] for j in jobs] == [["looksam", k, "4"] for k in ("2", "5", "10")]
    for num, (*_, cwd, output_dir) in enumerate(jobs):
        assert cwd == str(tmp_path)  # hydra.job.chdir: false
        path = pathlib.Path(output_dir)
        assert path.name == str(num) and path.parent.parent == tmp_path / "runs" / "multirun"


def test_cpu_scale_keeps_warmups_share_of_training():
    """LookSAM's ViT-B/16: 10k warmup steps of 300 epochs at batch 4096 on 1,281,167 images, i.e.
    10000 / (1281167 / 4096) = 31.97 epochs; at 3 epochs that is 0.3197 epochs, not 10k steps."""
    cfg = scaled(*cell_overrides(*VIT_B16), "scale=cpu")
    assert cfg.schedule.warmup_steps is None
    assert cfg.schedule.warmup_epochs == pytest.approx(10000 / (1281167 / 4096) * 3 / 300, rel=1e-6)
    paper = scaled(*cell_overrides(*VIT_B16), "scale=paper")
    assert paper.schedule.warmup_steps == 10000


def test_esam_selection_reaches_the_estimator_and_only_esam():
    est = config.validated_estimator(scaled("sam=esam", "sam.selection=official"))
    assert est.selection == "official"
    assert config.validated_estimator(scaled("sam=esam")).selection == "ceil"  # the spec's default
    # sam has no SDS: the key is not passed on (ESAM's code reading sets it for every cell)
    assert config.validated_estimator(scaled("sam=sam", "sam.selection=official")).selection == "ceil"


def test_a_recorded_config_from_before_a_new_setting_reads_as_its_default():
    """Summaries recorded before data.cutout, sam.selection and sam.batchnorm existed are the
    same run as today's config at those settings' defaults, and another run once one is set."""
    from looksam import run_identity

    today = run_identity.resolved(scaled("sam=esam"))
    old = json.loads(json.dumps(today))
    for group, key in (("data", "cutout"), ("data", "cutout_probability"), ("sam", "selection"),
                       ("sam", "batchnorm")):
        del old[group][key]
    assert run_identity.changes(old, today) == []
    code = run_identity.resolved(scaled("sam=esam", "data.cutout=16", "sam.batchnorm=every_forward"))
    assert run_identity.changes(old, code) == ["data.cutout: None -> 16",
                                               "sam.batchnorm: 'clean' -> 'every_forward'"]
