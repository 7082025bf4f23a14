#!/usr/bin/env bash
# Runs BenchmarkFleetPush (controlplane/discovery/fleet_bench_test.go): one
# single-backend change pushed to 10, 100 and 1000 simulated data planes, 30
# changes each, against a store of 1,000 pools of 10 backends. The raw
# `go test` output goes to stderr, a markdown table to stdout. Extra
# arguments go to `go test` (e.g. -cpuprofile=cpu.out). Not part of
# scripts/test.sh: timings depend on the machine and are never asserted.
#
# Columns:
#   p50/p99 ms       time from the store commit's start until every data
#                    plane's ack reached the server (WaitAcked), over 30 changes
#   bytes/DP/change  bytes each data plane received per change (proto.Size)
#   KiB/DP           control-plane memory per connected data plane: server
#                    heap (from the heap profile) plus its goroutine stacks
#   KiB/DP upper     heap+stack growth of the whole process per data plane,
#                    simulated data planes included (they run in-process)
set -euo pipefail
cd "$(dirname "$0")/.."

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

go test -run=NONE -bench=BenchmarkFleetPush -benchtime=1x -timeout=15m "$@" ./controlplane/discovery/ | tee "$out" >&2

echo "| N | p50 ms | p99 ms | bytes/DP/change | KiB/DP (server) | KiB/DP (server+clients, upper bound) |"
echo "|---:|---:|---:|---:|---:|---:|"
awk '
	/^BenchmarkFleetPush\/N=[0-9]+/ {
		n = $1
		sub(/^BenchmarkFleetPush\/N=/, "", n)
		sub(/-[0-9]+$/, "", n)
		split("", m)
		for (i = 3; i < NF; i += 2) m[$(i + 1)] = $i
		printf "| %s | %s | %s | %s | %s | %s |\n", n, m["p50-ms"], m["p99-ms"], m["B/DP/change"], m["srv-KiB/DP"], m["all-KiB/DP"]
		rows++
	}
	END { if (rows == 0) { print "bench-fleet: no benchmark results" > "/dev/stderr"; exit 1 } }
' "$out"
