#!/usr/bin/env bash
# Cloud TPU VM pod helper: create a pod slice, install this repository on every worker, run the
# trainer (or a table) on all workers at once, copy the results back, delete the slice.
# Run `scripts/tpu_pod.sh --help` for the commands; DRY_RUN=1 prints them instead of running them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=scripts/tpu_pod.sh

ACCELERATOR=${ACCELERATOR:-v3-128}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
PROJECT=${PROJECT:-}
PREEMPTIBLE=${PREEMPTIBLE:-0}
SPOT=${SPOT:-0}
DRY_RUN=${DRY_RUN:-0}
WORKER=${WORKER:-0}
FORWARD_ENV=${FORWARD_ENV:-}
BUCKET=${BUCKET:-}
MOUNT=${MOUNT:-/mnt/looksam}
SHARED_WORKDIR_OK=${SHARED_WORKDIR_OK:-0}
# The project pins jax>=0.10,<0.11 (pyproject.toml); the TPU wheels must match it.
JAX_TPU_SPEC=${JAX_TPU_SPEC:-jax[tpu]>=0.10,<0.11}
REMOTE_DIR=looksam  # ~/looksam on every worker

usage() {
  cat <<EOF
Usage: TPU_NAME=<name> ZONE=<zone> BUCKET=<bucket> [VAR=...] $PROG <command> [...]

Every worker of a pod slice must see the same run directories: each writes its shards of every
checkpoint there, and the table driver on each decides from the summary.json files there which
cells are finished. BUCKET is a Cloud Storage bucket that setup mounts with gcsfuse at \$MOUNT on
every worker; WORKDIR and RUNS lie under it. (The trainer rejects a gs:// trainer.workdir: it
writes with local file APIs. Data can be read from gs:// directly: data.data_dir=gs://...)

Commands (each one gcloud call unless noted; DRY_RUN=1 prints them, prefixed with '+ '):
  create                  gcloud compute tpus tpu-vm create \$TPU_NAME --zone \$ZONE \\
                            --accelerator-type \$ACCELERATOR --version \$TPU_VERSION \\
                            [--preemptible if PREEMPTIBLE=1] [--spot if SPOT=1]
  setup                   tar the repository (without .venv, .git, runs/, caches), then
                            gcloud compute tpus tpu-vm scp <tarball> \$TPU_NAME:looksam.tar.gz --worker=all
                            gcloud compute tpus tpu-vm ssh \$TPU_NAME --worker=all --command \\
                              'untar into ~/looksam; cd ~/looksam && make install &&
                               .venv/bin/pip install -U "$JAX_TPU_SPEC"'
                          and, with BUCKET set, what 'mount' does
  mount                   on ALL workers: install gcsfuse if missing (Google's apt repository), then
                            mountpoint -q \$MOUNT || gcsfuse --implicit-dirs \$BUCKET \$MOUNT
                          (a rebooted or restarted worker has lost its mount; run and reproduce
                          also mount it where it is missing)
  run -- OVERRIDES...     on ALL workers at once (one JAX process per worker):
                            cd ~/looksam && .venv/bin/python -m looksam.train \\
                              distributed.enabled=true trainer.workdir=\$WORKDIR OVERRIDES...
  reproduce TABLE -- ARGS...
                          on ALL workers at once:
                            cd ~/looksam && .venv/bin/python -m reproduce run TABLE --scale paper \\
                              --runs \$RUNS ARGS... -o distributed.enabled=true
  copy [workdir|runs]     fetch \$WORKDIR (default) or \$RUNS to ./runs/tpu/:
                            gsutil -m cp -r gs://\$BUCKET/<path under \$MOUNT> ./runs/tpu/
                          (SHARED_WORKDIR_OK=1 without BUCKET: gcloud compute tpus tpu-vm scp
                          --recurse --worker=0 \$TPU_NAME:<dir> ./runs/tpu/)
  ssh [-- COMMAND...]     gcloud compute tpus tpu-vm ssh \$TPU_NAME --worker=\$WORKER \\
                            [--command 'COMMAND...'] (words joined by spaces, as ssh does)
  delete                  gcloud compute tpus tpu-vm delete \$TPU_NAME --zone \$ZONE --quiet

Environment:
  TPU_NAME, ZONE          required
  BUCKET                  a Cloud Storage bucket name (my-bucket; a gs:// prefix is dropped), mounted
                          with gcsfuse at \$MOUNT on every worker. The workers' service account needs
                          write access to it (e.g. roles/storage.objectUser). Required by run and
                          reproduce unless SHARED_WORKDIR_OK=1
  MOUNT                   where BUCKET is mounted on every worker (default /mnt/looksam)
  WORKDIR                 the run's trainer.workdir (default \$MOUNT/runs/\$TPU_NAME, which is
                          gs://\$BUCKET/runs/\$TPU_NAME); must lie under \$MOUNT
  RUNS                    the table driver's --runs directory (default \$MOUNT/reproduce)
  SHARED_WORKDIR_OK=1     skip the shared-directory checks: WORKDIR and RUNS already are on a
                          filesystem mounted on every worker (NFS, Filestore), or the slice has a
                          single worker (v3-8, v4-8). Without BUCKET they default to
                          runs/tpu/\$TPU_NAME and runs/reproduce under ~/looksam
  PROJECT                 passed as --project when set (else gcloud's default project)
  ACCELERATOR             default v3-128: 16 workers, 128 TPU cores (JAX devices), 64 chips;
                          LookSAM's "128 TPU-v3 chips" (Section 4.4) would be a v3-256
  TPU_VERSION             default tpu-ubuntu2204-base
  PREEMPTIBLE=1, SPOT=1   create a preemptible / spot slice
  WORKER                  the worker for 'ssh' (default 0; 'all' for every worker)
  FORWARD_ENV             names of local variables to export on the workers for run/reproduce,
                          e.g. FORWARD_ENV="WANDB_API_KEY TFDS_DATA_DIR"
  DRY_RUN=1               print the commands instead of running them

Example:
  export TPU_NAME=looksam-v3-128 ZONE=europe-west4-a BUCKET=my-bucket
  $PROG create && $PROG setup
  $PROG run -- $(python -m reproduce config looksam_table2 vit_b16/looksam5 --overrides) \\
      scale=paper data.data_dir=gs://my-bucket/tensorflow_datasets
  $PROG copy                # gs://my-bucket/runs/looksam-v3-128 -> ./runs/tpu/looksam-v3-128
  $PROG delete
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 1
}

# One word for a POSIX shell, like Python's shlex.quote: bare when safe, else single-quoted.
quote() {
  local s=$1 q="'\\''"
  if [[ -n $s && $s =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/$q}"
  fi
}

quote_all() {
  local out="" a
  for a in "$@"; do
    out+="${out:+ }$(quote "$a")"
  done
  printf '%s' "$out"
}

# Runs a command, or only prints it (DRY_RUN=1); the printed line is valid shell.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    echo "+ $(quote_all "$@")"
  else
    echo "+ $(quote_all "$@")" >&2
    "$@"
  fi
}

require_env() {
  local name
  for name in TPU_NAME ZONE; do
    [[ -n ${!name:-} ]] || die "$name is not set (e.g. $name=... $PROG $COMMAND; see --help)"
  done
}

gcloud_tpu() {  # gcloud compute tpus tpu-vm <verb> <args...> --zone $ZONE [--project $PROJECT]
  local verb=$1
  shift
  local extra=(--zone "$ZONE")
  if [[ -n $PROJECT ]]; then extra+=(--project "$PROJECT"); fi
  run gcloud compute tpus tpu-vm "$verb" "$@" "${extra[@]}"
}

# The shell prefix that exports FORWARD_ENV's variables on the workers.
env_prefix() {
  local name out=""
  for name in $FORWARD_ENV; do
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "FORWARD_ENV: '$name' is no variable name"
    [[ -n ${!name+x} ]] || die "FORWARD_ENV names $name, which is not set here"
    out+="export $name=$(quote "${!name}"); "
  done
  printf '%s' "$out"
}

# Drops a leading `--` (the separator before overrides/arguments).
strip_dashdash() {
  if [[ ${1:-} == -- ]]; then
    shift
  fi
  ARGS=("$@")
}

cmd_create() {
  local flags=(--accelerator-type "$ACCELERATOR" --version "$TPU_VERSION")
  if [[ $PREEMPTIBLE == 1 ]]; then flags+=(--preemptible); fi
  if [[ $SPOT == 1 ]]; then flags+=(--spot); fi
  gcloud_tpu create "$TPU_NAME" "${flags[@]}"
}

cmd_setup() {
  local tarball
  SETUP_TMP=$(mktemp -d "${TMPDIR:-/tmp}/looksam-tpu.XXXXXX")
  trap 'rm -rf "$SETUP_TMP"' EXIT
  tarball=$SETUP_TMP/looksam.tar.gz
  run tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude=runs --exclude=outputs \
    --exclude=multirun --exclude=wandb --exclude=__pycache__ --exclude='*.egg-info' \
    --exclude=.pytest_cache --exclude=.ruff_cache --exclude=build --exclude=dist --exclude=.whl \
    -czf "$tarball" .
  gcloud_tpu scp "$tarball" "$TPU_NAME:$REMOTE_DIR.tar.gz" --worker=all
  # make and python3-venv (ensurepip) are missing from some base images.
  local remote
  remote="set -e; mkdir -p ~/$REMOTE_DIR && tar -xzf ~/$REMOTE_DIR.tar.gz -C ~/$REMOTE_DIR"
  remote+=" && rm ~/$REMOTE_DIR.tar.gz; need=; command -v make >/dev/null || need=make;"
  remote+=" python3 -c 'import ensurepip' 2>/dev/null || need=\"\$need python3-venv\";"
  remote+=" if [ -n \"\$need\" ]; then sudo apt-get update -qq"
  remote+=" && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \$need; fi;"
  remote+=" cd ~/$REMOTE_DIR && make install && .venv/bin/pip install -U $(quote "$JAX_TPU_SPEC")"
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$remote"
  if [[ -n $BUCKET ]]; then
    cmd_mount
  else
    echo "$PROG: note: BUCKET is not set, so no shared directory was mounted; run and reproduce" \
      "need BUCKET=<bucket> (then: $PROG mount) or SHARED_WORKDIR_OK=1" >&2
  fi
}

# Shell lines for a worker: mount BUCKET at MOUNT unless it is mounted (the mount point belongs
# to the ssh user, who runs gcsfuse and the trainer).
mount_lines() {
  local m b
  m=$(quote "$MOUNT")
  b=$(quote "$BUCKET")
  printf '%s' "if ! mountpoint -q $m; then sudo mkdir -p $m && sudo chown \"\$(id -u):\$(id -g)\" $m" \
    " && gcsfuse --implicit-dirs $b $m; fi"
}

cmd_mount() {
  [[ -n $BUCKET ]] || die "mount needs BUCKET=<bucket name> (mounted at MOUNT=$MOUNT)"
  # Google's apt repository for gcsfuse (https://cloud.google.com/storage/docs/gcsfuse-install).
  local remote
  remote="set -e; if ! command -v gcsfuse >/dev/null; then"
  remote+=" export GCSFUSE_REPO=gcsfuse-\$(lsb_release -c -s);"
  remote+=" echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt \$GCSFUSE_REPO main\""
  remote+=" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null;"
  remote+=" curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg"
  remote+=" | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null;"
  remote+=" sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse; fi;"
  remote+=" $(mount_lines)"
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$remote"
}

# Checks (and defaults) WORKDIR or RUNS, the directories every worker must see alike.
# $1: the variable's name, $2: its default under $MOUNT, $3: its default without BUCKET.
shared_dir() {
  local name=$1 value=${!1:-}
  if [[ $value == gs://* ]]; then
    local rest=${value#gs://} path=
    [[ $rest != */* ]] || path=${rest#*/}
    die "$name=$value: the trainer and the table driver write with local file APIs and reject" \
      "gs:// URLs. Mount the bucket on every worker instead: BUCKET=${rest%%/*} $PROG mount" \
      "(setup does it too), then use $name=$MOUNT${path:+/$path} (or leave $name unset)"
  fi
  if [[ -n $BUCKET ]]; then
    value=${value:-$2}
    if [[ $value != "$MOUNT" && $value != "$MOUNT"/* && $SHARED_WORKDIR_OK != 1 ]]; then
      die "$name=$value is not under MOUNT=$MOUNT, where BUCKET=$BUCKET is mounted on every" \
        "worker, so each worker would write its own copy. Leave $name unset (default $2), or" \
        "set SHARED_WORKDIR_OK=1 if it is on another filesystem that every worker mounts"
    fi
  elif [[ $SHARED_WORKDIR_OK == 1 ]]; then
    value=${value:-$3}
  else
    die "a multi-worker run needs a $name that every worker sees (checkpoint shards," \
      "summary.json files, completed table cells), but a local path is a separate directory on" \
      "each worker. Set BUCKET=<bucket name>: $PROG setup (or mount) mounts it with gcsfuse at" \
      "MOUNT=$MOUNT on every worker and $name defaults to $2. Or set SHARED_WORKDIR_OK=1 if" \
      "${value:-$3} already is on a filesystem mounted on every worker (NFS, Filestore), or the" \
      "slice has a single worker"
  fi
  printf -v "$name" '%s' "$value"
}

# The start of every trainer command: mount the bucket where a restarted worker lost it, go to
# the repository, export FORWARD_ENV.
# (Called as $(remote_prefix): a bad FORWARD_ENV must end it, and the caller with it.)
remote_prefix() {
  local out="" exports
  exports=$(env_prefix) || exit 1
  if [[ -n $BUCKET ]]; then out+="set -e; $(mount_lines); "; fi
  printf '%s' "${out}cd ~/$REMOTE_DIR && $exports"
}

cmd_run() {
  strip_dashdash "$@"
  shared_dir WORKDIR "$MOUNT/runs/$TPU_NAME" "runs/tpu/$TPU_NAME"
  local remote
  remote=$(remote_prefix)
  remote+=".venv/bin/python -m looksam.train distributed.enabled=true"
  remote+=" $(quote "trainer.workdir=$WORKDIR")"
  if ((${#ARGS[@]})); then
    remote+=" $(quote_all "${ARGS[@]}")"
  fi
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$remote"
}

cmd_reproduce() {
  [[ $# -ge 1 && $1 != -- ]] || die "reproduce needs a table, e.g. $PROG reproduce looksam_table2 -- --seeds 1"
  local table=$1
  shift
  strip_dashdash "$@"
  shared_dir RUNS "$MOUNT/reproduce" runs/reproduce
  local remote
  remote=$(remote_prefix)
  remote+=".venv/bin/python -m reproduce run $(quote "$table") --scale paper"
  remote+=" --runs $(quote "$RUNS")"
  if ((${#ARGS[@]})); then
    remote+=" $(quote_all "${ARGS[@]}")"
  fi
  remote+=" -o distributed.enabled=true"
  gcloud_tpu ssh "$TPU_NAME" --worker=all --command "$remote"
}

cmd_copy() {
  local which=${1:-workdir} dest=./runs/tpu/ name src
  case $which in
    workdir) name=WORKDIR && shared_dir WORKDIR "$MOUNT/runs/$TPU_NAME" "runs/tpu/$TPU_NAME" ;;
    runs) name=RUNS && shared_dir RUNS "$MOUNT/reproduce" runs/reproduce ;;
    *) die "copy takes 'workdir' (the default) or 'runs', not '$which'" ;;
  esac
  src=${!name}
  [[ $DRY_RUN == 1 ]] || mkdir -p "$dest"
  if [[ -n $BUCKET && ($src == "$MOUNT" || $src == "$MOUNT"/*) ]]; then
    local rel=${src#"$MOUNT"}
    rel=${rel#/}
    run gsutil -m cp -r "gs://$BUCKET${rel:+/$rel}" "$dest"
  else  # SHARED_WORKDIR_OK=1: the directory as worker 0 sees it
    [[ $src == /* ]] || src=$REMOTE_DIR/$src  # scp paths are relative to the home directory
    gcloud_tpu scp --recurse --worker=0 "$TPU_NAME:$src" "$dest"
  fi
}

cmd_ssh() {
  strip_dashdash "$@"
  local flags=(--worker="$WORKER")
  if ((${#ARGS[@]})); then
    flags+=(--command "${ARGS[*]}")  # joined by spaces, as ssh does
  fi
  gcloud_tpu ssh "$TPU_NAME" "${flags[@]}"
}

cmd_delete() {
  gcloud_tpu delete "$TPU_NAME" --quiet
}

COMMAND=${1:-}
case $COMMAND in
  -h | --help | help)
    usage
    exit 0
    ;;
  "")
    echo "$PROG: error: no command given" >&2
    usage >&2
    exit 2
    ;;
  create | setup | mount | run | reproduce | copy | ssh | delete) ;;
  *)
    echo "$PROG: error: unknown command '$COMMAND'" >&2
    usage >&2
    exit 2
    ;;
esac
shift
require_env
BUCKET=${BUCKET#gs://}
BUCKET=${BUCKET%/}
[[ $BUCKET != */* ]] || die "BUCKET is a bucket name (e.g. BUCKET=my-bucket), not a path: '$BUCKET'"
MOUNT=${MOUNT%/}
[[ $MOUNT == /?* ]] || die "MOUNT must be an absolute path, not '$MOUNT'"
WORKDIR=${WORKDIR:-}
RUNS=${RUNS:-}
ARGS=()
"cmd_$COMMAND" "$@"
