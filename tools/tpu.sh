#!/usr/bin/env bash
# A thin wrapper over the gcloud commands that run cnnjax on a Cloud TPU VM or a multi-host
# pod slice: create the VM (or a queued resource), install this checkout on every worker,
# run the same `python launch.py ...` on every worker at once, and delete the VM.
# Every gcloud call it makes is printed before it runs (--dry-run prints and runs nothing),
# so the script doubles as the list of commands to type by hand. See README.md, "Running on
# GPUs and Cloud TPUs".
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: tools/tpu.sh [OPTIONS] COMMAND [ARGS...]

Options go before COMMAND; everything after `run` goes to launch.py unchanged.

Commands:
  create          create the TPU VM NAME (with --queued: a queued resource NAME whose node
                  is NAME; `status` tells when it is ACTIVE)
  status          describe the TPU VM (or the queued resource)
  install         copy this checkout (tracked and untracked, not ignored files) to every
                  worker as ~/cnnjax and pip install it there with the `tpu` extra in
                  ~/cnnjax/.venv (Python 3.12; uv fetches it where the image lacks it);
                  with --data DIR, also copy a prepared TFDS data directory to ~/tfds
  run ARGS...     on every worker: cd ~/cnnjax, activate .venv, TFDS_DATA_DIR=~/tfds if
                  that exists, python launch.py ARGS...   e.g.
                    tools/tpu.sh run --exp mnist_lenet --workdir gs://BUCKET/runs/mnist_lenet
  ssh [CMD...]    without CMD: a shell on worker 0; with CMD: run it on --worker (default
                  all workers)
  delete          delete the TPU VM (with --queued: the queued resource and its node)

Options (each also read from the environment variable in capitals):
  --name NAME        TPU VM / queued resource name (NAME, default: cnnjax)
  --zone ZONE        zone, e.g. us-central2-b (ZONE, default: gcloud's compute/zone)
  --project PROJECT  Google Cloud project (PROJECT, default: gcloud's core/project)
  --type TYPE        accelerator type, e.g. v4-8, v4-32, v5litepod-8, v5p-8, v6e-8
                     (TYPE, default: v4-8; hosts = chips / 4 for v4, v5p; / 8 for v5e, v6e)
  --version VERSION  TPU software (runtime) version (VERSION, default from TYPE:
                     v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                     v6e v2-alpha-tpuv6e)
  --spot             a Spot TPU (SPOT=1): cheaper, preempted at any time. A preempted TPU
                     cannot be restarted: delete, create and install again, then `run` the
                     same arguments; the run resumes from its last checkpoint in the gs://
                     workdir
  --queued           use a queued resource instead of creating the VM directly (QUEUED=1)
  --worker W         worker(s) for `ssh CMD` (WORKER, default: all)
  --extras E         pip extras installed by `install` (EXTRAS, default: tpu)
  --data DIR         `install` also copies this TFDS data directory to ~/tfds on every worker
  --dry-run          print the gcloud commands, run none (DRY_RUN=1)
  -h, --help         this text

Example (a v4-32 slice: 4 hosts, 16 chips):
  export NAME=cnnjax ZONE=us-central2-b TYPE=v4-32
  tools/tpu.sh --spot create
  tools/tpu.sh --data ../shared/tfds install
  tools/tpu.sh run --exp mnist_lenet --workdir gs://BUCKET/runs/mnist_lenet
  tools/tpu.sh delete
EOF
}

die() {
    echo "tools/tpu.sh: $*" >&2
    echo "Run tools/tpu.sh --help for usage." >&2
    exit 2
}

NAME=${NAME:-cnnjax}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
TYPE=${TYPE:-v4-8}
VERSION=${VERSION:-}
SPOT=${SPOT:-0}
QUEUED=${QUEUED:-0}
WORKER=${WORKER:-all}
EXTRAS=${EXTRAS:-tpu}
DATA=""
DRY_RUN=${DRY_RUN:-0}
GCLOUD=${GCLOUD:-gcloud}

need_value() {
    [[ $# -ge 2 && -n $2 ]] || die "option $1 needs a value"
}

COMMAND=""
while [[ $# -gt 0 ]]; do
    case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --name) need_value "$@"; NAME=$2; shift 2 ;;
        --zone) need_value "$@"; ZONE=$2; shift 2 ;;
        --project) need_value "$@"; PROJECT=$2; shift 2 ;;
        --type) need_value "$@"; TYPE=$2; shift 2 ;;
        --version) need_value "$@"; VERSION=$2; shift 2 ;;
        --worker) need_value "$@"; WORKER=$2; shift 2 ;;
        --extras) need_value "$@"; EXTRAS=$2; shift 2 ;;
        --data) need_value "$@"; DATA=$2; shift 2 ;;
        --spot) SPOT=1; shift ;;
        --queued) QUEUED=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -*) die "unknown option $1" ;;
        *)
            COMMAND=$1
            shift
            break
            ;;
    esac
done
[[ -n $COMMAND ]] || {
    usage >&2
    exit 2
}

if [[ -z $VERSION ]]; then
    case $TYPE in
        v4-*) VERSION=tpu-ubuntu2204-base ;;
        v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
        v5p-*) VERSION=v2-alpha-tpuv5 ;;
        v6e-*) VERSION=v2-alpha-tpuv6e ;;
        *) die "no default software version for TYPE=$TYPE: give --version" ;;
    esac
fi

# Flags that every gcloud call takes; empty ones fall back to gcloud's own configuration.
# (${a[@]+"${a[@]}"} expands an empty array without tripping `set -u` in bash 3, macOS's.)
WHERE=()
if [[ -n $ZONE ]]; then WHERE+=("--zone=$ZONE"); fi
if [[ -n $PROJECT ]]; then WHERE+=("--project=$PROJECT"); fi

# Print a command (shell-quoted, so it can be pasted), then run it unless --dry-run.
run_cmd() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ $DRY_RUN != 1 ]]; then
        "$@"
    fi
}

tpu_vm() {
    run_cmd "$GCLOUD" compute tpus tpu-vm "$@" ${WHERE[@]+"${WHERE[@]}"}
}

# Run a shell command on the given workers (ssh --worker=all runs it on all at once).
on_workers() {
    local workers=$1 command=$2
    tpu_vm ssh "$NAME" "--worker=$workers" "--command=$command"
}

# Copy a local file to ~/DEST on every worker.
copy_to_workers() {
    tpu_vm scp "$1" "$NAME:$2" --worker=all
}

# The commands `install` runs on each worker, from the unpacked checkout in ~/cnnjax.
REMOTE_INSTALL='set -euo pipefail
rm -rf ~/cnnjax.new && mkdir -p ~/cnnjax.new && tar -xzf ~/cnnjax.tar.gz -C ~/cnnjax.new
if [ -d ~/cnnjax/.venv ]; then mv ~/cnnjax/.venv ~/cnnjax.new/.venv; fi
rm -rf ~/cnnjax && mv ~/cnnjax.new ~/cnnjax && rm ~/cnnjax.tar.gz && cd ~/cnnjax
if [ ! -x .venv/bin/python ]; then
  python3 -m pip install -q --user uv || python3 -m pip install -q --user --break-system-packages uv
  ~/.local/bin/uv venv --seed --python 3.12 .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[EXTRAS]"
.venv/bin/python -c "import jax, flax, cnnjax; print(\"jax\", jax.__version__, \"flax\", flax.__version__)"'

REMOTE_DATA='set -euo pipefail
rm -rf ~/tfds && mkdir -p ~/tfds && tar -xzf ~/tfds.tar.gz -C ~/tfds && rm ~/tfds.tar.gz'

TMP=""
install() {
    local root
    root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    echo "packing $root (git ls-files: tracked and untracked, not ignored)"
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        tar --null -T - -czf "$TMP/cnnjax.tar.gz")
    copy_to_workers "$TMP/cnnjax.tar.gz" cnnjax.tar.gz
    on_workers all "${REMOTE_INSTALL//EXTRAS/$EXTRAS}"
    if [[ -n $DATA ]]; then
        [[ -d $DATA ]] || die "--data $DATA is not a directory"
        tar -C "$DATA" -czf "$TMP/tfds.tar.gz" .
        copy_to_workers "$TMP/tfds.tar.gz" tfds.tar.gz
        on_workers all "$REMOTE_DATA"
    fi
}

case $COMMAND in
    create)
        spot=()
        if [[ $SPOT == 1 ]]; then spot=(--spot); fi
        if [[ $QUEUED == 1 ]]; then
            run_cmd "$GCLOUD" compute tpus queued-resources create "$NAME" "--node-id=$NAME" \
                "--accelerator-type=$TYPE" "--runtime-version=$VERSION" ${spot[@]+"${spot[@]}"} \
                ${WHERE[@]+"${WHERE[@]}"}
            echo "queued; tools/tpu.sh --queued status shows its state (ACTIVE: ready)"
        else
            tpu_vm create "$NAME" "--accelerator-type=$TYPE" "--version=$VERSION" ${spot[@]+"${spot[@]}"}
        fi
        ;;
    status)
        if [[ $QUEUED == 1 ]]; then
            run_cmd "$GCLOUD" compute tpus queued-resources describe "$NAME" ${WHERE[@]+"${WHERE[@]}"}
        else
            tpu_vm describe "$NAME"
        fi
        ;;
    install)
        install
        ;;
    run)
        [[ $# -gt 0 ]] || die "run needs launch.py's arguments, e.g. run --exp mnist_lenet"
        args=$(printf ' %q' "$@")
        on_workers all "cd ~/cnnjax && . .venv/bin/activate && \
if [ -d ~/tfds ]; then export TFDS_DATA_DIR=~/tfds; fi && python launch.py$args"
        ;;
    ssh)
        if [[ $# -eq 0 ]]; then
            tpu_vm ssh "$NAME" --worker=0
        else
            on_workers "$WORKER" "$*"
        fi
        ;;
    delete)
        if [[ $QUEUED == 1 ]]; then
            run_cmd "$GCLOUD" compute tpus queued-resources delete "$NAME" --force --quiet \
                ${WHERE[@]+"${WHERE[@]}"}
        else
            tpu_vm delete "$NAME" --quiet
        fi
        ;;
    *)
        die "unknown command $COMMAND"
        ;;
esac
