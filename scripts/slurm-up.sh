#!/usr/bin/env bash
# Bring up a real one-node SLURM cluster on this machine (controller, compute
# daemon and munge), for `snakemake --profile slurm` and the slurm tests.
#
# Idempotent: installs slurm-wlm + munge with apt-get only when missing, writes
# /etc/slurm/slurm.conf only when it is absent or was written by this script,
# starts only the daemons that are not running, and returns once `sinfo` shows
# the node ready. Prints one line per thing it did. Needs root (or sudo).
#
# Settings (environment):
#   SLURM_PARTITION   name of the single partition        (default: debug)
#   SLURM_UP_TIMEOUT  seconds to wait for the node          (default: 60)
#   SLURM_CONF        where to write/read slurm.conf        (default: /etc/slurm/slurm.conf)
#   SLURM_FAKE_GPUS   on a machine without NVIDIA GPUs, give the node this many GPU
#                     generic resources backed by stand-in device files (/dev/vitpeft-gpuN,
#                     made with mknod like /dev/null), so jobs asking for GPUs are scheduled
#                     as on a GPU cluster; torch sees no CUDA in them (default: 0)
#
# Not for a real cluster: there, the site's admins run SLURM; only the profile
# in slurm/config.yaml needs editing.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
CONF="${SLURM_CONF:-/etc/slurm/slurm.conf}"
MARKER="# written by vitpeft scripts/slurm-up.sh"
LOGDIR=/var/log/slurm
NODE="$(hostname -s)"

say() { echo "slurm-up: $*"; }
die() {
    echo "slurm-up: ERROR: $*" >&2
    for log in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" /var/log/munge/munged.log; do
        [ -s "$log" ] && { echo "--- last lines of $log" >&2; tail -n 15 "$log" >&2; }
    done
    exit 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "must run as root (or with sudo available) to install and start SLURM"
    SUDO="sudo"
fi

# -- 1. packages --------------------------------------------------------------
missing=()
for bin in slurmctld slurmd munged sinfo sbatch; do
    command -v "$bin" >/dev/null || PATH="$PATH:/usr/sbin" command -v "$bin" >/dev/null || missing+=("$bin")
done
export PATH="$PATH:/usr/sbin"
if [ ${#missing[@]} -gt 0 ]; then
    say "installing slurm-wlm and munge (missing: ${missing[*]})"
    command -v apt-get >/dev/null || die "no apt-get: install slurm-wlm and munge with your package manager"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
        || die "apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null \
        || die "apt-get install slurm-wlm munge failed"
else
    say "slurm-wlm and munge already installed ($(slurmctld -V 2>/dev/null))"
fi

# -- 2. munge -------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    $SUDO mkdir -p /etc/munge
    $SUDO mungekey --create --keyfile=/etc/munge/munge.key --force
    $SUDO chown munge:munge /etc/munge/munge.key
    $SUDO chmod 400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    $SUDO mkdir -p /run/munge /var/lib/munge /var/log/munge
    $SUDO chown munge:munge /run/munge /var/lib/munge /var/log/munge
    $SUDO chmod 755 /run/munge
    # a stale socket or pid file from a killed munged blocks a new one
    $SUDO rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock /run/munge/munged.pid
    say "starting munged as user munge"
    $SUDO runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.25
    done
    munge -n | unmunge >/dev/null || die "munge does not answer"
fi

# -- 3. slurm.conf --------------------------------------------------------------
cpus="$(nproc)"
mem_total_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
real_mem=$(( mem_total_mb * 9 / 10 ))   # leave room for the OS; slurmd refuses a node that claims more than it has
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
fi

gpu_files="/dev/nvidia[0-$((gpus - 1))]"
if [ "$gpus" -eq 0 ] && [ "${SLURM_FAKE_GPUS:-0}" -gt 0 ]; then
    # slurmd drops a GPU without a device file (the node then goes INVALID_REG)
    gpus="$SLURM_FAKE_GPUS"
    for i in $(seq 0 $((gpus - 1))); do
        [ -e "/dev/vitpeft-gpu$i" ] || $SUDO mknod "/dev/vitpeft-gpu$i" c 1 3 || die "mknod /dev/vitpeft-gpu$i failed"
    done
    gpu_files="/dev/vitpeft-gpu[0-$((gpus - 1))]"
fi

gres_lines=""
node_gres=""
if [ "$gpus" -gt 0 ]; then
    gres_lines="GresTypes=gpu"
    node_gres=" Gres=gpu:${gpus}"
fi

desired="$(cat <<EOF
$MARKER; rerun it to regenerate (edits here are overwritten)
ClusterName=vitpeft
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
# no cgroups in containers: track processes by parentage, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no slurmdbd: sacct does not work, so the profile uses squeue for job status,
# which needs finished jobs kept visible for a while (MinJobAge >= 120 s;
# an hour here, so tests and users can still see what ran)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
${gres_lines}
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem}${node_gres} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
)"

conf_changed=0
if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    say "keeping $CONF: it was not written by this script (a site configuration)"
else
    if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$desired" ]; then
        $SUDO mkdir -p "$(dirname "$CONF")"
        printf '%s\n' "$desired" | $SUDO tee "$CONF" >/dev/null
        say "wrote $CONF (node ${NODE}: ${cpus} CPUs, ${real_mem} MB, ${gpus} GPUs; partition ${PARTITION})"
        conf_changed=1
    else
        say "$CONF is up to date"
    fi
    gres_conf="$(dirname "$CONF")/gres.conf"
    if [ "$gpus" -gt 0 ]; then
        gres_desired="$(printf 'AutoDetect=off\nName=gpu File=%s' "$gpu_files")"
        if [ ! -e "$gres_conf" ] || [ "$(cat "$gres_conf")" != "$gres_desired" ]; then
            printf '%s\n' "$gres_desired" | $SUDO tee "$gres_conf" >/dev/null
            say "wrote $gres_conf ($gpus GPUs: $gpu_files)"
            conf_changed=1
        fi
    fi
fi
export SLURM_CONF="$CONF"
$SUDO mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOGDIR"

# -- 4. daemons -----------------------------------------------------------------
running() {  # running <pidfile> <name>
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1")"
    [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null
}
stop() {  # stop <pidfile> <name>
    if running "$1" "$2"; then
        say "stopping $2 (config changed)"
        $SUDO kill "$(cat "$1")"
        for _ in $(seq 1 40); do running "$1" "$2" || break; sleep 0.25; done
    fi
}
if [ "$conf_changed" -eq 1 ]; then
    stop /run/slurmd.pid slurmd
    stop /run/slurmctld.pid slurmctld
fi

if running /run/slurmctld.pid slurmctld; then
    say "slurmctld already running (pid $(cat /run/slurmctld.pid))"
else
    say "starting slurmctld"
    $SUDO env SLURM_CONF="$CONF" slurmctld -i || die "slurmctld did not start"
fi
for _ in $(seq 1 40); do
    scontrol ping 2>/dev/null | grep -q "is UP" && break
    sleep 0.25
done
scontrol ping 2>/dev/null | grep -q "is UP" || die "slurmctld does not answer (scontrol ping)"

if running /run/slurmd.pid slurmd; then
    say "slurmd already running (pid $(cat /run/slurmd.pid))"
else
    say "starting slurmd"
    $SUDO env SLURM_CONF="$CONF" slurmd -N "$NODE" || die "slurmd did not start"
fi

# -- 5. wait for the node -------------------------------------------------------
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    state="$(sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 | tr -d '*~#!%$@^-')"
    case "$state" in
        idle|mix|alloc|comp) break ;;
        drain|drng|down|fail)
            # e.g. left down by an earlier unclean stop
            $SUDO scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mix|alloc|comp) ;;
    *) die "node $NODE not ready after ${TIMEOUT}s (state: '${state:-none}'; reason: $(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null))" ;;
esac
say "ready: partition ${PARTITION}, node ${NODE} is ${state}"
sinfo
