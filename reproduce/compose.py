"""A registry cell's composed config: the one place where a cell's Hydra overrides become a config.

Everything that needs to know what a cell runs (the cost estimates of `python -m reproduce list`,
the renderer's ideal cost, a figure's parameter values, `python -m reproduce config`) asks here,
and gets what `python -m looksam.train` runs: the overrides composed by Hydra against the schema,
the scale preset applied (looksam.config.scaled_config), resolved to plain data (the form a run's
summary.json records).

    configs(cells, scale="paper", seed=0) -> [dict, ...]   # the missing ones in ONE Hydra context
    config(cell, scale="paper", seed=0)   -> dict
    estimator(cell)                       -> looksam.sam.Estimator (its ideal_cost, ...)
    value(cell, "sam.beta")               -> OmegaConf.select on the composed config

Composing costs about 0.1 s of CPU per cell (and opening a Hydra context more), so callers hand
over every cell they will need at once, and each composition is cached per (overrides, scale,
seed), i.e. per table, cell, scale and seed: in memory, and on disk under
$XDG_CACHE_HOME/looksam (default ~/.cache/looksam) in a file named by a fingerprint of everything
a composition reads (configs/, the looksam package that holds the schema, Hydra's and OmegaConf's
versions), so that editing any of them composes again.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Iterable

from reproduce import registry

CONFIGS_DIR = registry.SCALES_DIR.parent
_INPUTS = (CONFIGS_DIR, CONFIGS_DIR.parent / "looksam", pathlib.Path(__file__))
_CACHE: dict[str, dict] = {}


def _key(cell: registry.Cell, scale: str, seed: int) -> str:
    return json.dumps([list(cell.overrides), scale, int(seed)])


def _overrides(key: str) -> list[str]:
    overrides, scale, seed = json.loads(key)
    return [*overrides, f"scale={scale}", f"trainer.seed={seed}"]


@functools.cache
def _cache_file() -> pathlib.Path:
    import hydra
    import omegaconf

    digest = hashlib.sha256(f"{hydra.__version__} {omegaconf.__version__}".encode())
    for root in _INPUTS:
        files = sorted(p for p in (root.rglob("*") if root.is_dir() else [root])
                       if p.is_file() and p.suffix in (".py", ".yaml"))
        for path in files:
            digest.update(f"{path.relative_to(root.parent)}\0".encode() + path.read_bytes())
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    return base / "looksam" / f"composed-{digest.hexdigest()[:16]}.json"


def _load_disk() -> None:
    try:
        _CACHE.update({k: v for k, v in json.loads(_cache_file().read_text()).items()
                       if k not in _CACHE})
    except (OSError, ValueError):
        pass


def _save_disk() -> None:
    """Best effort: a cache that cannot be written only means composing again next time."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_CACHE))
        tmp.replace(path)
        for old in path.parent.glob("composed-*.json"):  # other fingerprints: stale
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass


def configs(cells: Iterable[registry.Cell], scale: str = "paper", seed: int = 0) -> list[dict]:
    """The resolved configs of `cells` at `scale` (what each run's summary records as `config`,
    the table and cell labels aside), composing the ones not cached yet in one Hydra context.
    A cell that does not compose raises Hydra's or the schema's error."""
    keys = [_key(c, scale, seed) for c in cells]
    if any(k not in _CACHE for k in keys):
        _load_disk()
    missing = list(dict.fromkeys(k for k in keys if k not in _CACHE))
    if missing:
        from hydra import compose, initialize_config_dir

        from looksam import config, run_identity

        config.register()
        try:
            with initialize_config_dir(os.fspath(CONFIGS_DIR), version_base="1.3"):
                for key in missing:
                    cfg = config.scaled_config(compose("config", overrides=_overrides(key)))
                    _CACHE[key] = run_identity.resolved(cfg)
        finally:
            _save_disk()  # what composed before an error is kept
    return [copy.deepcopy(_CACHE[k]) for k in keys]


def config(cell: registry.Cell, scale: str = "paper", seed: int = 0) -> dict:
    return configs([cell], scale, seed)[0]


def estimator(cell: registry.Cell, scale: str = "paper"):
    """The estimator the cell trains with: looksam.config.estimator of its composed config (of
    the two groups it reads, `sam` and `trainer`: a whole config takes ten times as long to wrap,
    which `python -m reproduce list` would pay for every cell)."""
    from omegaconf import OmegaConf

    from looksam import config as config_lib

    cfg = config(cell, scale)
    return config_lib.estimator(OmegaConf.create({"sam": cfg["sam"], "trainer": cfg["trainer"]}))


def value(cell: registry.Cell, key: str, scale: str = "paper"):
    """The composed config's value at a dotted key (e.g. sam.beta); None where there is none."""
    from omegaconf import OmegaConf

    return OmegaConf.select(OmegaConf.create(config(cell, scale)), key, default=None)
