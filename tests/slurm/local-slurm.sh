#!/usr/bin/env bash
# A throw-away single-node Slurm (munged + slurmctld + slurmd) with fake GPUs, for the tests.
#
#   tests/slurm/local-slurm.sh start     # ~1 s to an idle node; prints SLURM_CONF=...
#   tests/slurm/local-slurm.sh stop      # cancels its jobs, stops its daemons by pid file
#
# Debian's Slurm 22.05 (.ci/ensure-slurm installs it). Everything lives under $LOCAL_SLURM_DIR:
# munge key and socket, slurm.conf, gres.conf, state, spool, logs, pid files. Nothing in /etc is
# touched: clients find this cluster through SLURM_CONF=$LOCAL_SLURM_DIR/etc/slurm.conf (also
# written to $LOCAL_SLURM_DIR/env.sh). Several clusters can run side by side with their own
# directories and ports. No cgroups, no accounting database; SlurmUser=root, so it must run as
# root (slurmd setuids to the job's user).
#
# Fake GPUs are GRES entries whose File= is a symlink named nvidiaN to /dev/null (slurmd wants a
# character device, and takes the GPU index from the digits of the name).
#
# Knobs (environment):
#   LOCAL_SLURM_DIR        /tmp/local-slurm; wiped on start
#   LOCAL_SLURM_GPUS       4 fake GPUs (0: no GRES)
#   LOCAL_SLURM_CPUS       max(nproc, 8): CPUs advertised (more than the box has is fine)
#   LOCAL_SLURM_MEM        8000: RealMemory in MB; memory is a consumable (CR_Core_Memory)
#   LOCAL_SLURM_CTLD_PORT  6817
#   LOCAL_SLURM_SLURMD_PORT 6818
#   LOCAL_SLURM_TIMEOUT    60: seconds to wait for the node to become idle
set -euo pipefail

D=${LOCAL_SLURM_DIR:-/tmp/local-slurm}
ACTION=${1:-}

stop_pids() {  # pidfile...: SIGTERM to each, then wait for all (SIGKILL after 10 s)
    local pf pid pids=()
    for pf in "$@"; do
        [ -f "$pf" ] || continue
        pid=$(cat "$pf")
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$pf"
    done
    for _ in $(seq 100); do
        alive "${pids[@]}" || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "pid $pid ignored SIGTERM: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

alive() {  # pid...: is any of them running?
    local pid
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done
    return 1
}

do_stop() {
    export SLURM_CONF="$D/etc/slurm.conf"
    # Cancel whatever the tests left behind so that no job process outlives the cluster.
    if [ -f "$D/run/slurmctld.pid" ] && kill -0 "$(cat "$D/run/slurmctld.pid")" 2>/dev/null; then
        scancel --full --signal=KILL --state=RUNNING "--user=$(id -un)" 2>/dev/null || true
        scancel "--user=$(id -un)" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    # No job is left: both Slurm daemons at once (each takes a second or two), then munge.
    stop_pids "$D/run/slurmd.pid" "$D/run/slurmctld.pid"
    stop_pids "$D/munge/munged.pid"
}

do_start() {
    local NGPU NCPU MEM CTLD_PORT SLURMD_PORT TIMEOUT NODE bins b p i
    NGPU=${LOCAL_SLURM_GPUS:-4}
    NCPU=${LOCAL_SLURM_CPUS:-$(( $(nproc) > 8 ? $(nproc) : 8 ))}
    MEM=${LOCAL_SLURM_MEM:-8000}
    CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-6817}
    SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-6818}
    TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
    NODE=$(hostname -s)

    [ "$(id -u)" = 0 ] || { echo "local Slurm must start as root" >&2; exit 1; }
    bins="munge unmunge munged mungekey slurmctld slurmd sinfo sbatch squeue scancel scontrol"
    for b in $bins; do
        command -v "$b" >/dev/null || { echo "missing $b: run .ci/ensure-slurm" >&2; exit 1; }
    done
    if [ -d "$D/run" ]; then  # never clobber a running cluster of ours
        for p in "$D"/run/*.pid "$D"/munge/munged.pid; do
            if [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then
                echo "a local Slurm already runs in $D ($p): stop it first" >&2; exit 1
            fi
        done
    fi
    rm -rf "$D"
    mkdir -p "$D"/{etc,state,"spool/$NODE",log,run,dev,munge}
    chmod 755 "$D" "$D/munge"  # munged wants its socket's directory world-searchable

    # A private munged (own key and socket): /etc/munge and /run/munge stay untouched.
    mungekey -c -k "$D/munge/munge.key"
    munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.socket" \
        --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
        --seed-file="$D/munge/munged.seed"
    for _ in $(seq 50); do [ -S "$D/munge/munge.socket" ] && break; sleep 0.1; done
    munge -S "$D/munge/munge.socket" -n | unmunge -S "$D/munge/munge.socket" >/dev/null

    local gres_node="" gres_types=""
    : > "$D/etc/gres.conf"
    if [ "$NGPU" -gt 0 ]; then
        for i in $(seq 0 $((NGPU - 1))); do
            ln -s /dev/null "$D/dev/nvidia$i"
            echo "NodeName=$NODE Name=gpu File=$D/dev/nvidia$i" >> "$D/etc/gres.conf"
        done
        gres_node="Gres=gpu:$NGPU"
        gres_types="GresTypes=gpu"
    fi

    cat > "$D/etc/slurm.conf" <<EOF
ClusterName=meowtest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.log
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,bf_interval=2
$gres_types
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=600
InactiveLimit=0
Waittime=0
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM $gres_node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    echo "export SLURM_CONF=$D/etc/slurm.conf" > "$D/env.sh"
    export SLURM_CONF="$D/etc/slurm.conf"

    # Each daemonizes and writes its pid file.
    slurmctld -c -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N "$NODE"

    local t0 st
    t0=$(date +%s)
    while :; do
        st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        [ "$st" = idle ] && break
        for p in slurmctld slurmd; do  # a daemon that died (bad config) fails fast
            if [ -f "$D/run/$p.pid" ] && ! kill -0 "$(cat "$D/run/$p.pid")" 2>/dev/null; then
                echo "$p died:" >&2; tail -n 5 "$D/log/$p.log" >&2; do_stop; exit 1
            fi
        done
        if [ $(( $(date +%s) - t0 )) -ge "$TIMEOUT" ]; then
            echo "node $NODE not idle after ${TIMEOUT}s (state: '$st')" >&2
            tail -n 20 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2 || true
            do_stop; exit 1
        fi
        sleep 0.2
    done
    echo "SLURM_CONF=$SLURM_CONF"
}

case "$ACTION" in
    start) do_start ;;
    stop) do_stop ;;
    *) echo "usage: $0 start|stop   (LOCAL_SLURM_DIR=$D)" >&2; exit 2 ;;
esac
