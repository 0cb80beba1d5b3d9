"""Hydra structured configs: the schema every config group and experiment is validated against.

Composition (configs/config.yaml): model + data + optimizer + sam + schedule + trainer + logger +
scale, then an optional experiment (`# @package _global_`) holding only what differs. OmegaConf
rejects a misspelt key or a wrongly typed value against these dataclasses; `validated_estimator`
checks the value ranges, so a bad config fails before anything is compiled.

`scale` changes only how big and how long (model width, data, epochs, batch, evaluation
frequency); it never touches `sam`, the method or its hyper-parameters (`scaled_config`), except
`sam.m` where the scaled batch no longer holds whole m-sharpness groups (`scaled_m`). What a run
is (the keys a rerun may change, the comparison of configs) is looksam.run_identity.
"""

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from looksam.sam import estimator as sam_defaults


@dataclass
class ModelConfig:
    name: str = MISSING  # a looksam.models registry name
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    # Any other constructor field of the model (width, depth, patch_size, image_size, ...).
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = MISSING  # cifar10 | cifar100 | imagenet2012
    data_dir: Optional[str] = None  # TFDS data_dir; None: $TFDS_DATA_DIR, else ~/tensorflow_datasets
    # Prepare a missing CIFAR through TFDS when its host answers a 3 s probe (offline: fail in
    # seconds, naming the fix, not after TFDS's minutes of retries); false: never download.
    download: bool = True
    train_split: Optional[str] = None  # None: the dataset's train split; e.g. "train[:10%]"
    eval_split: Optional[str] = None
    # Held out from the training data and evaluated beside the test split (e.g. "train[45000:]",
    # which must not overlap train_split): choices made by measurement read this, never the test.
    validation_split: Optional[str] = None
    randaugment: Optional[List[int]] = None  # [num_ops, magnitude]
    # Cutout on the training split after normalisation: the erased square's side in pixels (ESAM's
    # official CIFAR loader: 16), drawn with cutout_probability per image; None: off. The mock
    # path (data.mock) applies no per-example augmentation, Cutout included.
    cutout: Optional[int] = None
    cutout_probability: float = 0.5
    mixup_alpha: float = 0.0
    label_smoothing: float = 0.0
    shuffle_buffer: int = 50_000
    mock: bool = False  # generated random examples instead of files (smoke scale, tests)
    mock_examples: int = 64
    # How many parts the split is read as (each process reads its own ones); None: one per
    # process. Fixed, it makes the global batches independent of how many processes run.
    input_shards: Optional[int] = None


@dataclass
class OptimizerConfig:
    name: str = MISSING  # sgd | adamw | lamb
    lr: float = MISSING  # peak learning rate at `base_batch`
    base_batch: Optional[int] = None  # lr scales linearly with trainer.batch_size / base_batch
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: Optional[float] = None
    clip_norm: Optional[float] = None
    weight_decay_mask: str = "all"  # all | kernels


@dataclass
class ScheduleConfig:
    decay: str = "cosine"  # cosine | linear | constant
    warmup_epochs: float = 0.0
    warmup_steps: Optional[int] = None  # overrides warmup_epochs
    init_lr: float = 0.0
    end_lr: float = 0.0


BATCHNORM_POLICIES = ("clean", "every_forward")  # SamConfig.batchnorm


@dataclass
class SamConfig:
    method: str = "none"  # a looksam.sam method; only its own hyper-parameters are passed on
    # The defaults are the estimator's own (looksam.sam.DEFAULTS), stated once there.
    rho: float = sam_defaults.DEFAULTS["rho"]
    k: int = sam_defaults.DEFAULTS["k"]
    alpha: float = sam_defaults.DEFAULTS["alpha"]
    beta: float = sam_defaults.DEFAULTS["beta"]
    gamma: float = sam_defaults.DEFAULTS["gamma"]
    selection: str = sam_defaults.DEFAULTS["selection"]  # ESAM's SDS rule: ceil | official
    adaptive: bool = sam_defaults.DEFAULTS["adaptive"]
    m: Optional[int] = sam_defaults.DEFAULTS["m"]
    drift_interval: Optional[int] = None  # LookSAM Figure 2 diagnostic (methods perturbing every step)
    subset_cosines: bool = False  # ESAM Figure 6 diagnostic (esam with gamma < 1; one extra pass)
    # ESAM's SWP without the dropped kernels' weight gradients (looksam/sam/swp_skip.py): the same
    # update; for accelerators (a convolution inside lax.cond is slow on XLA:CPU).
    swp_skip: bool = sam_defaults.DEFAULTS["swp_skip"]
    # Which forwards of a step update BatchNorm's running statistics: "clean" (the spec: the pass at
    # w alone) or "every_forward" (each training forward in the order it ran, as ESAM's official
    # code does, its model in train mode throughout). The trainer applies it; no method reads it.
    batchnorm: str = "clean"


@dataclass
class TrainerConfig:
    epochs: float = MISSING
    max_steps: Optional[int] = None  # stop earlier than `epochs` (smoke runs, tests)
    batch_size: int = MISSING  # global batch, over all processes and devices
    eval_batch_size: int = 1024
    eval_every_epochs: float = 1.0
    log_every_steps: int = 50
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 2
    microbatch: Optional[int] = None  # examples per accumulated chunk (per step, global)
    seed: int = 0
    num_devices: Optional[int] = None  # None: every local device (data parallel over all of them)
    workdir: Optional[str] = None  # None: the Hydra run directory (or ./runs/<time> outside Hydra)
    nan_policy: str = "stop"  # stop: end with status 'diverged' at the first non-finite loss


@dataclass
class DistributedConfig:
    """JAX's distributed runtime (looksam.distributed): one process per host, GPU or TPU worker."""

    # auto: initialise when a coordinator is configured or the job runs as several SLURM tasks;
    # true: always (a TPU pod: jax.distributed.initialize() finds its workers); false: never.
    enabled: str = "auto"
    coordinator_address: Optional[str] = None  # host:port of process 0
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    local_device_ids: Optional[List[int]] = None
    initialization_timeout: int = 300  # seconds to wait for every process to join


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    wandb_mode: Optional[str] = None  # online | offline | disabled; None: online with an API key
    project: str = "looksam"
    entity: Optional[str] = None
    group: Optional[str] = None  # one per table or sweep
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None


def _replaces(key: str):
    """A preset field whose value replaces the experiment's `key` as it is (None: left alone)."""
    return field(default=None, metadata={"replaces": key})


@dataclass
class ScaleConfig:
    """What a scale preset changes; None leaves the experiment's value alone. The values are the
    presets' (configs/scale/*.yaml); a `_replaces` field is copied to its key, and `scaled_config`
    computes the rest: batch_size (the linear lr rule), dataset, model_kwargs, warmup's share."""

    name: str = "paper"
    epochs: Optional[float] = _replaces("trainer.epochs")
    max_steps: Optional[int] = _replaces("trainer.max_steps")
    batch_size: Optional[int] = None  # the lr follows by the linear rule (optimizer.base_batch)
    eval_batch_size: Optional[int] = _replaces("trainer.eval_batch_size")
    eval_every_epochs: Optional[float] = _replaces("trainer.eval_every_epochs")
    log_every_steps: Optional[int] = _replaces("trainer.log_every_steps")
    dataset: Dict[str, str] = field(default_factory=dict)  # e.g. imagenet2012 -> cifar10
    train_split: Optional[str] = _replaces("data.train_split")
    eval_split: Optional[str] = _replaces("data.eval_split")
    validation_split: Optional[str] = _replaces("data.validation_split")
    mock: Optional[bool] = _replaces("data.mock")
    mock_examples: Optional[int] = _replaces("data.mock_examples")
    model_kwargs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per model name
    model_dtype: Optional[str] = _replaces("model.dtype")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    table: Optional[str] = None  # the table and cell a run belongs to (reproduce/)
    cell: Optional[str] = None
    variant: Optional[str] = None  # a sweep's point of that cell, e.g. "sam.alpha=0.2" (reproduce --sweep)
    reading: Optional[str] = None  # the table reading the cell runs (None: the paper; reproduce --reading)


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="looksam_schema", node=Config)


def scaled_m(m: Optional[int], batch: int, microbatch: Optional[int]) -> Optional[int]:
    """m-sharpness group size for a batch a scale preset changed: the table's m where it still
    divides the (microbatch or) batch, else the largest divisor of it not above m.

    m is the number of examples each perturbation sees (the per-device batch of the paper's
    hardware in LookSAM's ViT tables, 128 in ESAM's ImageNet table), so it is kept rather than the
    paper's number of groups per batch (4,096 / 16 = 256 groups would leave half an example per
    group in a batch of 128). Where the batch is smaller than m (scale=smoke: 8) this is the
    whole batch, one perturbation per step; m = None (one group) stays None.
    """
    if m is None or isinstance(m, bool) or not isinstance(m, int) or m < 1:
        return m  # None, or a bad value that `validated_estimator` reports under its own name
    unit = microbatch or batch  # m must divide every accumulated chunk, hence the batch
    if unit % m == 0:
        return m
    return max(d for d in range(1, min(m, unit) + 1) if unit % d == 0)


def scaled_config(cfg: DictConfig) -> DictConfig:
    """The experiment as its scale preset shrinks it; `sam` is never touched, except `sam.m`
    where the preset's batch (or surviving microbatch) is not a multiple of it (`scaled_m`)."""
    from looksam.data import pipeline

    _check_batches(cfg)
    s = cfg.scale
    out = OmegaConf.to_container(cfg, resolve=True)
    trainer, data, model, opt = out["trainer"], out["data"], out["model"], out["optimizer"]
    sched = out["schedule"]
    if s.epochs is not None and data["name"] in pipeline.DATASETS:
        # Keep warmup's share of training (LookSAM's ViTs: 10k of ~94k steps), not its step count,
        # which would otherwise outlast a shortened run.
        if sched["warmup_steps"] is not None:
            per_epoch = pipeline.spec(data["name"]).train_examples / trainer["batch_size"]
            sched["warmup_epochs"], sched["warmup_steps"] = sched["warmup_steps"] / per_epoch, None
        sched["warmup_epochs"] *= s.epochs / trainer["epochs"]
    for f in dataclasses.fields(ScaleConfig):
        if "replaces" in f.metadata and s[f.name] is not None:
            group, key = f.metadata["replaces"].split(".")
            out[group][key] = s[f.name]
    if s.batch_size is not None and s.batch_size != trainer["batch_size"]:
        opt["base_batch"] = opt["base_batch"] or trainer["batch_size"]
        trainer["batch_size"] = s.batch_size
        if trainer["microbatch"] is not None and s.batch_size % trainer["microbatch"]:
            trainer["microbatch"] = None  # the paper's accumulation chunk no longer divides
        out["sam"]["m"] = scaled_m(out["sam"]["m"], s.batch_size, trainer["microbatch"])
    data["name"] = s.dataset.get(data["name"], data["name"])
    model["kwargs"] = {**model["kwargs"], **s.model_kwargs.get(model["name"], {})}
    merged = OmegaConf.merge(OmegaConf.structured(Config), out)
    OmegaConf.set_struct(merged, True)
    return merged


def _check_batches(cfg: DictConfig) -> None:
    """The batch sizes the scaling reads (the lr's linear rule divides by them), checked before it
    runs, so that a bad one is reported under its own key rather than as a negative lr."""
    checks = (("trainer.batch_size", False, "a positive multiple of the device count (the global batch)"),
              ("scale.batch_size", True, "a positive multiple of the device count, or null"),
              ("optimizer.base_batch", True, "the batch the lr is given for, >= 1, or null"))
    for key, nullable, what in checks:
        value = OmegaConf.select(cfg, key)
        if (value is None and not nullable) or (value is not None and value < 1):
            raise ValueError(f"{key}={value!r}: must be {what}")


def ignored_sam_settings(cfg: DictConfig, overrides) -> list[str]:
    """Warnings for `sam.<key>=...` command-line overrides that the chosen method ignores (sam.k
    with sam.method=none), where the value differs from the schema's default."""
    from looksam import sam

    method = cfg.sam.method
    if method not in sam.METHODS:
        return []  # validated_estimator names the unknown method
    used = set(sam.HPARAMS[method]) | {"method"}
    if method != "none":
        used |= {"adaptive", "m", "drift_interval", "batchnorm"}
    defaults = OmegaConf.structured(SamConfig)
    warnings = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key.startswith("sam.") or key[4:] in used or key[4:] not in defaults:
            continue
        if cfg.sam[key[4:]] != defaults[key[4:]]:
            takes = ", ".join(sorted(used - {"method"})) or "nothing"
            warnings.append(f"{key} has no effect with sam.method={method} (it takes: {takes})")
    return warnings


def validated_estimator(cfg: DictConfig):
    """The run's estimator (`estimator`), once every value check the types cannot express has
    passed: a ValueError naming the key otherwise."""
    from looksam import models, optim
    from looksam.data import pipeline

    def need(ok, key, what):
        if not ok:
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)!r}: {what}")

    if cfg.model.name not in models.MODELS:
        raise ValueError(f"model.name={cfg.model.name!r}: choose one of {sorted(models.MODELS)}")
    unknown = sorted(set(cfg.model.kwargs) - set(models.fields(cfg.model.name)) - {"num_classes"})
    if unknown:
        raise ValueError(f"model.kwargs has no field {unknown} for {cfg.model.name}; its fields are "
                         f"{models.fields(cfg.model.name)}")
    need(cfg.model.dtype in ("float32", "bfloat16"), "model.dtype", "float32 or bfloat16")
    need(cfg.data.name in pipeline.DATASETS, "data.name", f"one of {sorted(pipeline.DATASETS)}")
    need(cfg.optimizer.name in optim.OPTIMIZERS, "optimizer.name", f"one of {optim.OPTIMIZERS}")
    need(cfg.optimizer.lr >= 0, "optimizer.lr", "must be >= 0")
    need(cfg.schedule.decay in optim.DECAYS, "schedule.decay", f"one of {optim.DECAYS}")
    need(cfg.optimizer.weight_decay_mask in optim.DECAY_MASKS, "optimizer.weight_decay_mask",
         f"one of {optim.DECAY_MASKS}")
    t = cfg.trainer

    def need_trainer(ok, key, what):
        # Name the key the user set: a scale preset's value replaces the experiment's.
        source = "scale" if cfg.scale.get(key) is not None else "trainer"
        need(ok, f"{source}.{key}", what)

    need_trainer(t.epochs > 0, "epochs", "must be > 0")
    need_trainer(t.batch_size >= 1, "batch_size", "must be >= 1")
    need_trainer(t.max_steps is None or t.max_steps >= 1, "max_steps", "must be >= 1 or null")
    need_trainer(t.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
    need_trainer(t.eval_every_epochs > 0, "eval_every_epochs", "must be > 0")
    need_trainer(t.log_every_steps >= 1, "log_every_steps", "must be >= 1")
    need(t.checkpoint_every_steps >= 1, "trainer.checkpoint_every_steps", "must be >= 1")
    need(t.keep_checkpoints >= 1, "trainer.keep_checkpoints", "must be >= 1")
    # How many devices there are is known only once JAX starts (train._train checks the upper end).
    need(t.num_devices is None or t.num_devices >= 1, "trainer.num_devices",
         "must be >= 1 or null (every local device)")
    need(cfg.schedule.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
    need(cfg.schedule.init_lr >= 0, "schedule.init_lr", "must be >= 0")
    need(cfg.schedule.end_lr >= 0, "schedule.end_lr", "must be >= 0")
    need(cfg.schedule.warmup_steps is None or cfg.schedule.warmup_steps >= 0,
         "schedule.warmup_steps", "must be >= 0 or null (schedule.warmup_epochs)")
    need(t.nan_policy in ("stop", "ignore"), "trainer.nan_policy", "stop or ignore")
    need(t.workdir is None or "://" not in t.workdir, "trainer.workdir",
         "must be a filesystem path every process sees (a URL is not): mount the bucket, e.g. "
         "gcsfuse BUCKET /mnt/looksam, and use trainer.workdir=/mnt/looksam/runs/NAME")
    need(t.microbatch is None or t.batch_size % t.microbatch == 0, "trainer.microbatch",
         f"must divide trainer.batch_size={t.batch_size}")
    need(cfg.logger.wandb_mode in (None, "online", "offline", "disabled"), "logger.wandb_mode",
         "online, offline, disabled or null")
    need(cfg.data.mixup_alpha >= 0, "data.mixup_alpha", "must be >= 0 (0: no mixup)")
    need(0 <= cfg.data.label_smoothing < 1, "data.label_smoothing", "must lie in [0, 1)")
    need(cfg.data.input_shards is None or cfg.data.input_shards >= 1, "data.input_shards",
         "must be >= 1 or null (one per process)")
    d = cfg.distributed
    need(str(d.enabled).lower() in ("auto", "true", "false"), "distributed.enabled",
         "auto, true or false")
    explicit = (d.coordinator_address, d.num_processes, d.process_id)
    need(all(v is None for v in explicit) or all(v is not None for v in explicit),
         "distributed.coordinator_address",
         "set distributed.coordinator_address, num_processes and process_id together")
    need(d.num_processes is None or d.num_processes >= 1, "distributed.num_processes", "must be >= 1")
    need(d.process_id is None or 0 <= d.process_id < (d.num_processes or 1), "distributed.process_id",
         "must lie in [0, distributed.num_processes)")
    need(cfg.sam.batchnorm in BATCHNORM_POLICIES, "sam.batchnorm", f"one of {BATCHNORM_POLICIES}")
    need(cfg.data.cutout is None or cfg.data.cutout >= 1, "data.cutout",
         "the erased square's side in pixels, >= 1, or null (no Cutout)")
    need(0 <= cfg.data.cutout_probability <= 1, "data.cutout_probability", "must lie in [0, 1]")
    need(cfg.data.randaugment is None or len(cfg.data.randaugment) == 2, "data.randaugment",
         "[num_ops, magnitude] or null")
    return estimator(cfg)


def estimator(cfg: DictConfig):
    """The estimator cfg.sam names: sam.make with the method's own hyper-parameters (others are
    ignored) and trainer.microbatch; no other value is checked (`validated_estimator` checks all)."""
    return sam_estimator(cfg.sam, cfg.trainer.microbatch)


def sam_estimator(sam_settings, microbatch=None):
    """The estimator of a `sam` group (a config node, or a run summary's resolved `config.sam`
    dict): its method with that method's own settings; a setting the group lacks (a summary
    written before it existed) takes the estimator's default."""
    from looksam import sam

    method = sam_settings.get("method") or "none"
    if method not in sam.METHODS:
        raise ValueError(f"sam.method={method!r}: choose one of {sam.METHODS}")
    keys = list(sam.HPARAMS[method]) + ([] if method == "none" else ["adaptive", "m", "drift_interval"])
    try:
        return sam.make(method, microbatch=microbatch,
                        **{k: sam_settings[k] for k in keys if k in sam_settings})
    except ValueError as e:  # "k=0 is out of range": name the key the user set, sam.k
        raise ValueError(f"sam.{e}" if re.match(r"\w+=", str(e)) else f"sam: {e}") from None
