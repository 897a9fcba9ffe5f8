#!/usr/bin/env bash
# Stop the one-node SLURM that scripts/slurm-up.sh started (slurmd, slurmctld,
# and munged with --all). Jobs still running are killed by slurmd's exit.
# Idempotent: stopping what is not running is not an error.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { echo "slurm-down: $*"; }

stop() {  # stop <pidfile> <process name>
    local pid
    if [ -s "$1" ] && pid="$(cat "$1")" && [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/comm" 2>/dev/null; then
        $SUDO kill "$pid"
        for _ in $(seq 1 40); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
        if [ -d "/proc/$pid" ]; then
            say "$2 (pid $pid) ignored SIGTERM; killing it"
            $SUDO kill -9 "$pid" || true
        fi
        say "stopped $2 (pid $pid)"
    else
        say "$2 not running"
    fi
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
if [ "${1:-}" = "--all" ]; then
    stop /run/munge/munged.pid munged
fi
