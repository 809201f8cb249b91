#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, for the tests of profiles/slurm.
#
# Debian 12 (Slurm 22.05), run as root, no systemd needed. Safe to run again: packages already
# installed are not fetched again, and daemons already running are kept (restarted only when
# the generated configuration changed).
#
# The cluster: partitions `cpu` (default) and `gpu` on the one node, which advertises
# FAKE_GPUS fake GPUs of type `tesla` (gres; device files only, there is no real GPU).
# Accounting is off (no slurmdbd), so clients must ask `squeue`, not `sacct`, for job states.
#
#   FAKE_GPUS=N          fake GPUs on the node (default 2; 0 = none)
#   SLURM_CI_LOGDIR=DIR  daemon logs (default /var/log/slurm)
set -euo pipefail

FAKE_GPUS=${FAKE_GPUS:-2}
LOGDIR=${SLURM_CI_LOGDIR:-/var/log/slurm}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" != 0 ]; then
    echo "setup-slurm.sh: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

# ---- packages ------------------------------------------------------------------------------
PACKAGES=(slurmctld slurmd slurm-client munge)
if ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    # Without systemd the postinst scripts cannot start services and say so; that is expected:
    # the daemons are started by hand below.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# retry SECONDS COMMAND...: run COMMAND every 0.25 s until it succeeds or SECONDS pass.
retry() {
    local seconds=$1; shift
    local tries=$((seconds * 4))
    while [ "$tries" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25; tries=$((tries - 1))
    done
    echo "setup-slurm.sh: gave up after ${seconds}s waiting for: $*" >&2
    return 1
}

config_digest() { { cat "$CONF" "$GRES" 2>/dev/null || true; } | md5sum; }  # a file may be missing

mkdir -p /etc/slurm /var/spool/slurmd /var/spool/slurmctld "$LOGDIR"
digest_before=$(config_digest)

# ---- munge (authentication between the daemons and the clients) ----------------------------
if [ ! -s /etc/munge/munge.key ]; then  # Debian's postinst usually made one already
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge  # systemd's RuntimeDirectory, done by hand
running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
retry 10 bash -c 'munge -n | unmunge'

# ---- fake GPUs -----------------------------------------------------------------------------
# Slurm accepts a gpu gres only with File= naming character devices (else the node is drained
# as INVAL); nodes with the major/minor of /dev/null serve.
GRES_TYPES=""
NODE_GRES=""
rm -f "$GRES.new"
if [ "$FAKE_GPUS" -gt 0 ]; then
    made=yes
    for ((i = 0; i < FAKE_GPUS; i++)); do
        [ -c "/dev/fakegpu$i" ] || mknod "/dev/fakegpu$i" c 1 3 2>/dev/null || made=no
    done
    if [ "$made" = yes ]; then
        GRES_TYPES="GresTypes=gpu"
        NODE_GRES="Gres=gpu:tesla:$FAKE_GPUS"
        echo "NodeName=$(hostname -s) Name=gpu Type=tesla File=/dev/fakegpu[0-$((FAKE_GPUS - 1))]" \
            > "$GRES.new"
    else
        echo "setup-slurm.sh: mknod is not permitted here; the node gets no GPUs" >&2
    fi
fi
if [ -s "$GRES.new" ]; then mv "$GRES.new" "$GRES"; else rm -f "$GRES" "$GRES.new"; fi

# ---- slurm.conf ----------------------------------------------------------------------------
NODE=$(hostname -s)  # SlurmctldHost must be the short host name
# Announce less memory than the kernel reports: more than slurmd measures makes the node INVAL.
NODE_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$CONF.new" <<CONF
# Written by ci/slurm/setup-slurm.sh: a one-node cluster for tests.
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
# No cgroup delegation without systemd: track processes by parent id, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise hold all the node's memory and run alone.
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue this long; Snakemake's squeue status mode relies on it.
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$NODE_MB $NODE_GRES State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
CONF
mv "$CONF.new" "$CONF"

# ---- daemons -------------------------------------------------------------------------------
stop_pidfile() {
    local pid
    running "$1" || return 0
    pid=$(cat "$1")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}
if [ "$digest_before" != "$(config_digest)" ]; then
    # Node and gres changes need fresh daemons; `scontrol reconfigure` does not apply them all.
    stop_pidfile /run/slurmd.pid
    stop_pidfile /run/slurmctld.pid
fi
if ! running /run/slurmctld.pid; then
    /usr/sbin/slurmctld -D >>"$LOGDIR/slurmctld.out" 2>&1 &
fi
retry 30 scontrol ping
if ! running /run/slurmd.pid; then
    /usr/sbin/slurmd -D >>"$LOGDIR/slurmd.out" 2>&1 &
fi
retry 60 bash -c 'sinfo -h -N -o %t | grep -qE "^(idle|mix|alloc)"'
sinfo

# ---- smoke test: one batch job through the scheduler, and one on a fake GPU ----------------
sbatch --wait --quiet --output=/dev/null --time=1 --wrap true
if [ -n "$NODE_GRES" ]; then
    sbatch --wait --quiet --output=/dev/null --time=1 --partition=gpu --gpus=tesla:1 \
        --wrap 'test -n "$CUDA_VISIBLE_DEVICES"'
fi
echo "setup-slurm.sh: slurm is up (partitions cpu, gpu; ${FAKE_GPUS} fake GPUs if gres is on)"
