#!/usr/bin/env bash
# Zero-downtime upgrade of a running lb-dataplane.
#
# Usage: scripts/upgrade-dataplane.sh PID [NEW_BINARY]
#
# Starts NEW_BINARY (default: the running binary's path) with exactly the
# flags of the data plane PID plus --upgrade. The new process takes the
# listening sockets over through the old one's --upgrade-socket, starts
# serving once it has a configuration, and the old one drains and exits.
# The new process runs in the background with its output appended to
# $LB_UPGRADE_LOG (default: lb-dataplane.log in the current directory).
# Exits 0 once the old process has exited, 1 if the upgrade did not happen
# within $LB_UPGRADE_WAIT seconds (default 60; the old one keeps serving).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
fi
pid=$1
[[ -r /proc/$pid/cmdline ]] || { echo "upgrade-dataplane: no process $pid" >&2; exit 1; }
mapfile -d '' argv </proc/"$pid"/cmdline
new=${2:-$(readlink -f /proc/"$pid"/exe)}
args=("${argv[@]:1}")
has_socket=false
for a in "${args[@]}"; do
	[[ $a == --upgrade || $a == -upgrade ]] && { echo "upgrade-dataplane: process $pid was itself started with --upgrade; its flags are reused without it" >&2; }
	[[ $a == --upgrade-socket* || $a == -upgrade-socket* ]] && has_socket=true
done
$has_socket || { echo "upgrade-dataplane: process $pid has no --upgrade-socket; it cannot hand over its sockets" >&2; exit 1; }
clean=()
for a in "${args[@]}"; do
	[[ $a == --upgrade || $a == -upgrade ]] || clean+=("$a")
done
log=${LB_UPGRADE_LOG:-lb-dataplane.log}
echo "upgrade-dataplane: starting $new ${clean[*]} --upgrade" >&2
nohup "$new" "${clean[@]}" --upgrade >>"$log" 2>&1 &
newpid=$!
wait_s=${LB_UPGRADE_WAIT:-60}
for ((i = 0; i < wait_s * 10; i++)); do
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "upgrade-dataplane: process $pid has drained and exited; $newpid serves" >&2
		exit 0
	fi
	if ! kill -0 "$newpid" 2>/dev/null; then
		echo "upgrade-dataplane: the new process exited before taking over (see $log); $pid keeps serving" >&2
		exit 1
	fi
	sleep 0.1
done
echo "upgrade-dataplane: process $pid still running after ${wait_s}s (draining?); new process $newpid" >&2
exit 1
