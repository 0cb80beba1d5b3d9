"""What makes two configs the same run: a rerun in a workdir resumes there (its checkpoint, its
finished summary) only if its resolved config equals the one recorded there, outside RESUMABLE.

`resolved` is the form a run records its config in (summary.json, checkpoints, TensorBoard's
hparams through `flatten`); `changes` lists what differs between two such records and
`check_same_run` refuses a workdir holding another config's run (ConfigMismatch).
"""

import functools

from flax import traverse_util
from omegaconf import DictConfig, OmegaConf

# What a rerun in the same workdir may change: where and how the run executes, logs and
# checkpoints, never what it computes. trainer.max_steps only stops a run early (the schedule
# follows trainer.epochs), so a resumed run may extend it; the scale preset is compared through
# the values it resolved to; table and cell only label a run.
RESUMABLE = ("logger", "distributed", "scale", "table", "cell", "variant", "reading", "data.data_dir",
             "data.download",
             "trainer.max_steps", "trainer.eval_batch_size", "trainer.log_every_steps",
             "trainer.checkpoint_every_steps", "trainer.keep_checkpoints", "trainer.microbatch",
             "trainer.num_devices", "trainer.workdir", "trainer.nan_policy")


# without one computed what the schema's default computes, so a missing key reads as that default.
# A new setting joins here only if its default changes nothing.
ADDED_LATER = ("data.cutout", "data.cutout_probability", "sam.selection", "sam.batchnorm", "sam.swp_skip")


@functools.cache
def added_later_defaults() -> dict:
    """ADDED_LATER's keys (flat) -> the schema's defaults: what a run recorded before them ran with."""
    from looksam import config  # the schema holds the defaults

    schema = OmegaConf.structured(config.Config)
    return {key: OmegaConf.select(schema, key) for key in ADDED_LATER}


class ConfigMismatch(ValueError):
    """A rerun in a workdir holding another config's run; the workdir is left as it is."""


def resolved(cfg: DictConfig) -> dict:
    """The config as plain, interpolation-free containers: what a run records and compares."""
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(tree: dict) -> dict:
    """{"sam": {"k": 5}} -> {"sam.k": 5} (TensorBoard's hparams, config comparisons); an empty
    dict leaves no key, so `changes` still sees the keys a free-form dict gains or loses."""
    return traverse_util.flatten_dict(tree, sep=".")


def changes(recorded: dict, current: dict) -> list[str]:
    """'key: old -> new' for every setting outside RESUMABLE that differs (resolved configs).

    Keys on one side only count too: a free-form dict such as model.kwargs gains or loses keys.
    """
    old, new = flatten(recorded), flatten(current)
    for key, default in added_later_defaults().items():
        if (key in old) != (key in new):  # one side was recorded before the key existed
            (new if key in old else old)[key] = default

    def show(values, key):
        return repr(values[key]) if key in values else "<unset>"

    return [f"{key}: {show(old, key)} -> {show(new, key)}" for key in sorted(old.keys() | new.keys())
            if not any(key == k or key.startswith(k + ".") for k in RESUMABLE)
            and (key not in old or key not in new or old[key] != new[key])]


def check_same_run(recorded: dict | None, current: dict, where: str, workdir: str) -> None:
    """Raises ConfigMismatch when the run recorded in workdir (its checkpoint or summary) had
    another config: resuming it would mix two runs, and its summary is another run's result."""
    if recorded is None:  # written before configs were recorded there
        return
    diff = changes(recorded, current)
    if diff:
        raise ConfigMismatch(
            f"trainer.workdir={workdir} holds a run with another config ({where}):\n  "
            + "\n  ".join(diff) + "\nNothing there was changed. Use another trainer.workdir for "
            "this config (a sweep needs one per job: leave trainer.workdir unset), or remove "
            f"{workdir} to start over.")
