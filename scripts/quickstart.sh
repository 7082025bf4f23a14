#!/usr/bin/env bash
# Quickstart: builds everything, starts a control plane (embedded store in a
# temporary directory), a data plane and two demo backends, creates a pool,
# adds both backends with lbctl, shows requests alternating between them,
# then removes one backend and shows the traffic move. Every process it
# started is stopped on exit or Ctrl-C.
#
# Needs only Go. Ports can be changed through the environment:
#   LB_CP_ADDR (127.0.0.1:7400)   LB_DP_ADDR (127.0.0.1:6188)
#   LB_ADMIN_ADDR (127.0.0.1:9901) LB_BACKEND_A (127.0.0.1:9001)
#   LB_BACKEND_B (127.0.0.1:9002)  LB_CP_ADMIN_ADDR (127.0.0.1:7401)
#   QUICKSTART_WORKDIR  where binaries, data and logs go (default: a new temp dir, removed at exit)
set -euo pipefail
cd "$(dirname "$0")/.."

CP="${LB_CP_ADDR:-127.0.0.1:7400}"
CP_ADMIN="${LB_CP_ADMIN_ADDR:-127.0.0.1:7401}"
DP="${LB_DP_ADDR:-127.0.0.1:6188}"
ADMIN="${LB_ADMIN_ADDR:-127.0.0.1:9901}"
BA="${LB_BACKEND_A:-127.0.0.1:9001}"
BB="${LB_BACKEND_B:-127.0.0.1:9002}"

if [[ -n "${QUICKSTART_WORKDIR:-}" ]]; then
	WORK="$QUICKSTART_WORKDIR"
	KEEP_WORK=1
	mkdir -p "$WORK"
else
	WORK="$(mktemp -d -t lb-quickstart-XXXXXX)"
	KEEP_WORK=0
fi
BIN="$WORK/bin"
PIDS=()

cleanup() {
	local code=$?
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		echo "==> stopping ${#PIDS[@]} processes"
		kill -TERM "${PIDS[@]}" 2>/dev/null || true
		wait "${PIDS[@]}" 2>/dev/null || true
	fi
	if [[ $KEEP_WORK == 0 ]]; then rm -rf "$WORK"; fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# http_get URL-PATH: prints the body of GET http://$DP/PATH, with curl if it
# is there, else with bash's /dev/tcp (a fresh machine may only have Go).
http_get() {
	local hostport="$1" path="$2"
	if command -v curl >/dev/null; then
		curl -sS --max-time 5 "http://$hostport$path"
		return
	fi
	local host="${hostport%:*}" port="${hostport##*:}"
	exec 3<>"/dev/tcp/$host/$port"
	printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hostport" >&3
	sed '1,/^\r$/d' <&3
	exec 3<&-
}

# wait_version V: waits until the data plane serves configuration version V or later.
wait_version() {
	local want="$1"
	for _ in $(seq 1 200); do
		local ready
		ready="$(http_get "$ADMIN" /readyz 2>/dev/null || true)"
		if [[ "$ready" =~ version\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= want)); then
			return 0
		fi
		sleep 0.05
	done
	echo "quickstart: data plane did not apply version $want; logs are in $WORK" >&2
	return 1
}

# wait_port ADDR: waits until something listens on ADDR.
wait_port() {
	local host="${1%:*}" port="${1##*:}"
	for _ in $(seq 1 200); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "quickstart: nothing is listening on $1; logs are in $WORK" >&2
	return 1
}

lbctl() { "$BIN/lbctl" --controlplane "$CP" "$@"; }

# version_of: reads "configuration version N" from lbctl's output.
version_of() { sed -n 's/.*configuration version \([0-9]*\).*/\1/p'; }

echo "==> building into $BIN"
go build -o "$BIN/" ./cmd/...

echo "==> starting control plane on $CP, data plane on $DP (admin $ADMIN), backends on $BA and $BB"
"$BIN/lb-controlplane" --listen "$CP" --admin-listen "$CP_ADMIN" --data-dir "$WORK/controlplane" >"$WORK/controlplane.log" 2>&1 &
PIDS+=($!)
"$BIN/lb-dataplane" --controlplane "$CP" --listen "$DP" --admin-listen "$ADMIN" --node-id quickstart >"$WORK/dataplane.log" 2>&1 &
PIDS+=($!)
"$BIN/lb-demo-backend" --listen "$BA" --name a >"$WORK/backend-a.log" 2>&1 &
PIDS+=($!)
"$BIN/lb-demo-backend" --listen "$BB" --name b >"$WORK/backend-b.log" 2>&1 &
PIDS+=($!)
for addr in "$CP" "$DP" "$ADMIN" "$BA" "$BB"; do wait_port "$addr"; done

echo
echo "\$ lbctl pool create web"
lbctl pool create web
echo "\$ lbctl add-backend --pool web $BA"
lbctl add-backend --pool web "$BA"
echo "\$ lbctl add-backend --pool web $BB"
out="$(lbctl add-backend --pool web "$BB")"
echo "$out"
wait_version "$(version_of <<<"$out")"

echo
echo "==> 6 requests to the data plane: round robin between a and b"
for i in 1 2 3 4 5 6; do
	printf '  request %d -> %s\n' "$i" "$(http_get "$DP" "/hello/$i")"
done

echo
echo "\$ lbctl remove-backend --pool web $BB"
out="$(lbctl remove-backend --pool web "$BB")"
echo "$out"
wait_version "$(version_of <<<"$out")"

echo
echo "==> 4 more requests: all traffic has moved to a"
for i in 7 8 9 10; do
	printf '  request %d -> %s\n' "$i" "$(http_get "$DP" "/hello/$i")"
done

echo
echo "\$ lbctl pool get web"
lbctl pool get web
echo
echo "==> done; logs were in $WORK"
