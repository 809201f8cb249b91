#!/usr/bin/env bash
# Stop the daemons that ci/slurm/setup-slurm.sh started, by their pid files.
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
    fi
done
