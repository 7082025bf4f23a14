#!/usr/bin/env bash
# Benchmark of issue 7: our data plane side by side with nginx and HAProxy, in
# the same run, on this machine. Not a test (timings are never asserted) and
# never part of scripts/test.sh. `scripts/bench.sh --help` lists the options.
#
# What it does:
#   1. installs what is missing: nginx, haproxy, wrk, nghttp2-client (h2load),
#      util-linux (taskset), procps, openssl, curl and jq with apt-get, and ghz
#      with `go install` into a cache directory (~/.cache/lb-bench/bin);
#   2. builds lb-controlplane, lb-dataplane, lbctl, scripts/benchbackend and
#      scripts/benchconns with `go build` (no -race) into a temporary directory;
#   3. starts two backends (scripts/benchbackend: a minimal HTTP/1.1 server
#      answering /small with 64 B and /large with 64 KiB, gRPC health over h2c,
#      and WebSocket echo), our control plane and data plane configured with
#      lbctl, nginx and HAProxy, each proxy doing round robin over the same two
#      backends with upstream keep-alive, everything on 127.0.0.1 with a
#      self-signed ECDSA certificate made by openssl;
#   4. throughput, interleaved: for each round, for each scenario: ours, nginx,
#      HAProxy, then direct to a backend (no proxy: the physical limit);
#   5. memory at scale: RSS growth of each proxy, restarted fresh, holding
#      10,000 idle keep-alive client connections and then 10,000 WebSocket
#      sessions (scripts/benchconns);
#   6. prints a markdown report on stdout (progress goes to stderr) and writes
#      every run and the summary as JSON to --out.
# A run during which other processes kept the proxy's core more than 20% busy
# (this machine may be shared) is repeated, up to 3 runs, the least disturbed
# kept; the report shows how busy both cores were in each.
#
# Pinning (2 cores): the proxy under test runs on CPU 0 (taskset -c 0; our data
# plane with GOMAXPROCS=1, nginx with worker_processes 1, HAProxy with
# nbthread 1); the load generators (wrk -t1, h2load -t1, ghz), the two backends
# (GOMAXPROCS=1 each), benchconns and our control plane run on CPU 1
# (taskset -c 1). Only one proxy is under load at a time; the others sit idle.
#
# Scenarios:
#   h1-small  HTTP/1.1 keep-alive, 64 B responses:  wrk -t1 -c50 --latency URL/small
#   h1-large  HTTP/1.1 keep-alive, 64 KiB responses: wrk -t1 -c50 --latency URL/large
#   h1-close  a new connection per request: wrk -t1 -c50 -H 'Connection: close' URL/small
#   h2-tls    HTTP/2 over TLS, many streams: h2load -t1 -c10 -m100 https://.../small
#             (latency percentiles from h2load's --log-file; no direct run: the
#             backends speak HTTP/1.1 only)
#   grpc      gRPC unary over h2c (plain text, prior knowledge), grpc.health.v1
#             Health/Check: ghz --insecure -c50 --connections 5; nginx uses
#             grpc_pass behind `listen ... http2`, HAProxy `proto h2` both ways.
#             ghz itself costs so much CPU that it sets the pace on one core;
#   grpc-h2load  the same call driven by h2load (-c10 -m10, a 5-byte gRPC
#             frame, content-type application/grpc), which can load a proxy;
#             h2load sees only HTTP status, so the requests the backends
#             answered are compared with its count
#   mem-keepalive, mem-websocket  the memory-at-scale measurements (step 4)
#
# Measures per run: req/s and p50/p99 latency from the load generator; proxy
# CPU seconds (utime+stime from /proc/PID/stat, summed over nginx's master and
# worker) per 100,000 requests; peak RSS (VmHWM from /proc/PID/status, reset
# through /proc/PID/clear_refs before each run; nginx: master + worker); how
# busy each core was (/proc/stat), so that load from elsewhere on the proxy's
# core and a saturated load generator show; upstream connection reuse as the
# backends saw it (1 - connections accepted / requests answered), and for our
# data plane also from its /metrics when it has lb_dataplane_upstream_* (else
# "n/a").
#
# Proxy configurations (equivalent on purpose): round robin over the same two
# backends; upstream keep-alive (nginx: proxy_http_version 1.1, Connection "",
# keepalive 1024 idle connections, see --nginx-keepalive; HAProxy: http-reuse
# always; ours: its default pool); no access logs; per-connection request
# limits lifted (nginx keepalive_requests); nginx never buffers responses to
# disk (proxy_max_temp_file_size 0); TLS with the same ECDSA P-256 certificate.
# Requests in flight: 50 for wrk and ghz, 1,000 for h2-tls, 100 for grpc-h2load.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

usage() {
	cat <<'EOF'
Usage: scripts/bench.sh [options]

Benchmarks our data plane against nginx and HAProxy on this machine (issue 7).
The proxy under test runs on CPU 0 (taskset -c 0, our data plane with
GOMAXPROCS=1, nginx worker_processes 1, HAProxy nbthread 1); load generators,
the two backends and the control plane run on CPU 1 (taskset -c 1).
Markdown goes to stdout, progress to stderr, all results as JSON to --out.

Options:
  --duration D     length of each measured run, in seconds ("10" or "10s"; default 10s)
  --rounds N       interleaved rounds; medians and min-max over them (default 3)
  --warmup D       unmeasured run before each measured one (default 1s; 0 for none)
  --scenarios L    comma-separated subset of: h1-small,h1-large,h1-close,h2-tls,grpc,
                   grpc-h2load,mem-keepalive,mem-websocket (default: all)
  --targets L      comma-separated subset of: ours,nginx,haproxy,direct (default: all)
  --quick          --duration 3s --rounds 1 --warmup 1s, and 2,000 connections for the
                   memory measurements
  --conns N        connections for the memory measurements (default 10000; WebSocket
                   sessions are capped so that both sides fit in the open-files limit)
  --out FILE       JSON results (default ./bench-results.json)
  --profile DIR    also capture a CPU and an allocation profile of our data plane under
                   h1-small (10 s each) into DIR and print `go tool pprof -top` of them
                   (our data plane then runs with --pprof)
  --nginx-keepalive N  idle upstream connections nginx keeps (its `keepalive`; default 1024,
                   enough for the 1,000 streams of h2-tls; with 64 nginx closes and reopens
                   upstream connections there, as HAProxy and ours do not)
  --max-other-load P  repeat a run when other processes kept the proxy's core more than
                   P percent busy during it (default 20): this machine may be shared
  --attempts N     runs at most per measurement, the least disturbed one kept (default 3)
  --port-base N    first of the loopback ports used (default 18400; ports N to N+59)
  --keep-work      keep the temporary directory (binaries, configs, logs, raw outputs)
  -h, --help       this help

Examples:
  scripts/bench.sh --quick
  scripts/bench.sh > bench.md                      # the full run, 20-30 minutes
  scripts/bench.sh --scenarios h1-small --targets ours,nginx --rounds 5
EOF
}

die() {
	echo "bench: $*" >&2
	exit 1
}
log() { echo "bench: $*" >&2; }

# The exact command line, quoted so that it can be pasted back.
CMDLINE="scripts/bench.sh"
for a in "$@"; do
	if [[ $a =~ ^[A-Za-z0-9_./,:=@+-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done

DURATION=10
ROUNDS=3
WARMUP=1
SCENARIOS="h1-small,h1-large,h1-close,h2-tls,grpc,grpc-h2load,mem-keepalive,mem-websocket"
TARGETS="ours,nginx,haproxy,direct"
OUT="./bench-results.json"
CONNS=10000
PROFILE_DIR=""
PORT_BASE="${BENCH_PORT_BASE:-18400}"
KEEP_WORK=0
PROXY_CPU=0
LOAD_CPU=1
GHZ_VERSION=v0.93.0
NGINX_KEEPALIVE=1024
MAX_OTHER=20
ATTEMPTS=3

# seconds D: "10", "10s" -> 10.
seconds() {
	local v="${1%s}"
	[[ $v =~ ^[0-9]+$ ]] || die "invalid duration \"$1\": want whole seconds, e.g. 10s"
	echo "$v"
}

while (($#)); do
	opt="$1"
	val=""
	if [[ $opt == --*=* ]]; then
		val="${opt#*=}"
		opt="${opt%%=*}"
	elif [[ $opt =~ ^--(duration|rounds|warmup|scenarios|targets|out|conns|profile|port-base|nginx-keepalive|max-other-load|attempts)$ ]]; then
		(($# >= 2)) || die "$opt needs a value (see --help)"
		val="$2"
		shift
	fi
	case "$opt" in
	--duration) DURATION="$(seconds "$val")" ;;
	--rounds) ROUNDS="$val" ;;
	--warmup) WARMUP="$(seconds "$val")" ;;
	--scenarios) SCENARIOS="$val" ;;
	--targets) TARGETS="$val" ;;
	--out) OUT="$val" ;;
	--conns)
		CONNS="$val"
		CONNS_SET=1
		;;
	--profile) PROFILE_DIR="$val" ;;
	--port-base) PORT_BASE="$val" ;;
	--nginx-keepalive) NGINX_KEEPALIVE="$val" ;;
	--max-other-load) MAX_OTHER="$val" ;;
	--attempts) ATTEMPTS="$val" ;;
	--quick)
		DURATION=3
		ROUNDS=1
		WARMUP=1
		((${CONNS_SET:-0})) || CONNS=2000
		;;
	--keep-work) KEEP_WORK=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "bench: unknown option $opt" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "--conns must be a positive number"
[[ $NGINX_KEEPALIVE =~ ^[1-9][0-9]*$ ]] || die "--nginx-keepalive must be a positive number"
[[ $MAX_OTHER =~ ^[0-9]+$ ]] || die "--max-other-load must be a percentage"
[[ $ATTEMPTS =~ ^[1-9][0-9]*$ ]] || die "--attempts must be a positive number"
if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || ((PORT_BASE < 1024 || PORT_BASE > 65000)); then die "--port-base must be 1024-65000"; fi
((DURATION >= 1)) || die "--duration must be at least 1s"
for s in ${SCENARIOS//,/ }; do
	[[ $s =~ ^(h1-small|h1-large|h1-close|h2-tls|grpc|grpc-h2load|mem-keepalive|mem-websocket)$ ]] || die "unknown scenario \"$s\" (see --help)"
done
for t in ${TARGETS//,/ }; do
	[[ $t =~ ^(ours|nginx|haproxy|direct)$ ]] || die "unknown target \"$t\" (see --help)"
done
want_scenario() { [[ ",$SCENARIOS," == *",$1,"* ]]; }
want_target() { [[ ",$TARGETS," == *",$1,"* ]]; }
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
if [[ -n $PROFILE_DIR ]]; then
	mkdir -p "$PROFILE_DIR"
	PROFILE_DIR="$(cd "$PROFILE_DIR" && pwd)"
fi
(($(nproc) >= 2)) || die "needs at least 2 CPUs (one for the proxy, one for the load): nproc is $(nproc)"

# ---------------------------------------------------------------- installing

install_tools() {
	local missing=() pair
	for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client taskset:util-linux \
		pgrep:procps ps:procps openssl:openssl curl:curl jq:jq timeout:coreutils; do
		command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
	done
	if ((${#missing[@]})); then
		log "installing with apt-get: ${missing[*]}"
		((EUID == 0)) || die "run as root to install ${missing[*]}, or install them first"
		# Keep Debian's maintainer scripts from starting nginx/haproxy as
		# system services: this benchmark starts its own.
		local policy=/usr/sbin/policy-rc.d made_policy=0
		if [[ ! -e $policy ]]; then
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod +x "$policy"
			made_policy=1
		fi
		local rc=0
		timeout 600 apt-get update -qq >&2 || rc=$?
		((rc == 0)) && { DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?; }
		((made_policy)) && rm -f "$policy"
		((rc == 0)) || die "apt-get install ${missing[*]} failed"
	fi
	CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/lb-bench"
	GHZ="$CACHE/bin/ghz"
	if [[ ! -x $GHZ ]]; then
		log "installing ghz $GHZ_VERSION with go install into $CACHE/bin"
		mkdir -p "$CACHE/bin"
		(cd "$CACHE" && GOBIN="$CACHE/bin" GOFLAGS='' timeout 600 go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION" >&2) ||
			die "go install github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION failed"
	fi
}
install_tools

# ---------------------------------------------------------------- work area, processes

WORK="$(mktemp -d -t lb-bench-XXXXXX)"
BIN="$WORK/bin"
mkdir -p "$BIN" "$WORK/raw"
declare -a PIDS=()
declare -A PID=()

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
	[[ -n $st && $st != Z* ]]
}

# stop_pids PID...: SIGTERM, up to 10 s for them to go, then SIGKILL; reaps
# them. Only pids this script started and has not stopped yet are touched.
stop_pids() {
	local p deadline=$((SECONDS + 10)) left ours=()
	for p in "$@"; do [[ " ${PIDS[*]} " == *" $p "* ]] && ours+=("$p"); done
	((${#ours[@]})) || return 0
	set -- "${ours[@]}"
	kill -TERM "$@" 2>/dev/null || true
	while ((SECONDS < deadline)); do
		left=0
		for p in "$@"; do alive "$p" && left=1; done
		((left)) || break
		sleep 0.1
	done
	for p in "$@"; do
		if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
	done
	for p in "$@"; do wait "$p" 2>/dev/null || true; done
	local keep=() q
	for q in "${PIDS[@]}"; do [[ " $* " == *" $q "* ]] || keep+=("$q"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local code=$?
	trap - EXIT INT TERM
	if ((${#PIDS[@]})); then
		log "stopping ${#PIDS[@]} processes"
		stop_pids "${PIDS[@]}"
	fi
	if ((KEEP_WORK)); then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Open files: as many as the hard limit allows (10,000 connections need it).
ulimit -n "$(ulimit -Hn)"
NOFILE="$(ulimit -n)"
[[ $NOFILE == unlimited ]] && NOFILE=1048576

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, output in
# $WORK/NAME.log; its pid goes to PID[NAME].
start() {
	local name="$1" cpu="$2"
	shift 2
	taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
	PID[$name]=$!
	PIDS+=("$!")
}

# wait_port ADDR [SECONDS]: until something accepts connections on ADDR.
wait_port() {
	local host="${1%:*}" port="${1##*:}" deadline=$((SECONDS + ${2:-20}))
	while ((SECONDS < deadline)); do
		if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	die "nothing listens on $1 after ${2:-20}s; logs are in $WORK (use --keep-work to keep them)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- addresses

H=127.0.0.1
CP="$H:$((PORT_BASE + 0))"
DP="$H:$((PORT_BASE + 1))"
DP_TLS="$H:$((PORT_BASE + 2))"
DP_ADMIN="$H:$((PORT_BASE + 3))"
NGX="$H:$((PORT_BASE + 11))"
NGX_TLS="$H:$((PORT_BASE + 12))"
NGX_GRPC="$H:$((PORT_BASE + 13))"
HAP="$H:$((PORT_BASE + 21))"
HAP_TLS="$H:$((PORT_BASE + 22))"
HAP_GRPC="$H:$((PORT_BASE + 23))"
BA="$H:$((PORT_BASE + 31))"
BA_GRPC="$H:$((PORT_BASE + 32))"
BA_WS="$H:$((PORT_BASE + 33))"
BB="$H:$((PORT_BASE + 41))"
BB_GRPC="$H:$((PORT_BASE + 42))"
BB_WS="$H:$((PORT_BASE + 43))"
for a in "$CP" "$DP" "$DP_TLS" "$DP_ADMIN" "$NGX" "$NGX_TLS" "$NGX_GRPC" "$HAP" "$HAP_TLS" "$HAP_GRPC" \
	"$BA" "$BA_GRPC" "$BA_WS" "$BB" "$BB_GRPC" "$BB_WS"; do
	port_free "${a##*:}" || die "port ${a##*:} is in use; choose other ports with --port-base"
done

# ---------------------------------------------------------------- build, certificate, configs

# What was measured: the commit, and whether the working tree differed from it.
GIT_STATE="$(git rev-parse --short HEAD 2>/dev/null || echo "unknown commit")"
if [[ -n "$(git status --porcelain --untracked-files=no -- . 2>/dev/null)" ]]; then
	GIT_STATE+=" with uncommitted changes"
fi
log "building into $BIN"
go build -o "$BIN/" ./cmd/lb-controlplane ./cmd/lb-dataplane ./cmd/lbctl ./scripts/benchbackend ./scripts/benchconns

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	-keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"

# grpc.health.v1, for ghz (so that it needs no reflection through the proxies).
cat >"$WORK/health.proto" <<'EOF'
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
EOF
# The same call for h2load: one gRPC frame (uncompressed, length 0) holding
# an empty HealthCheckRequest.
printf '\0\0\0\0\0' >"$WORK/grpc-request.bin"

mkdir -p "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
# nginx closes connections waiting for a request once fewer than 1/16 of
# worker_connections are free; size it so that the open-files limit, not that
# rule, bounds the WebSocket measurement.
events { worker_connections $((NOFILE * 17 / 16)); }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    upstream web {
        server $BA;
        server $BB;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000000;
    }
    upstream grpcs {
        server $BA_GRPC;
        server $BB_GRPC;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000000;
    }
    upstream wss {
        server $BA_WS;
        server $BB_WS;
    }
    server {
        listen $NGX;
        listen $NGX_TLS ssl http2;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
        location /ws/ {
            proxy_pass http://wss;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
    server {
        listen $NGX_GRPC http2;
        location / {
            grpc_pass grpc://grpcs;
        }
    }
}
EOF

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((CONNS + 200))
    # maxconn counts two sockets per connection, which idle keep-alive
    # connections do not need: start even when that exceeds the open-files limit.
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout tunnel 3600s
    http-reuse always
frontend web
    bind $HAP
    bind $HAP_TLS ssl crt $WORK/haproxy.pem alpn h2,http/1.1
    use_backend wss if { path_beg /ws/ }
    default_backend web
frontend grpc
    bind $HAP_GRPC proto h2
    default_backend grpcs
backend web
    balance roundrobin
    server a $BA
    server b $BB
backend grpcs
    balance roundrobin
    server a $BA_GRPC proto h2
    server b $BB_GRPC proto h2
backend wss
    balance roundrobin
    server a $BA_WS
    server b $BB_WS
EOF

# ---------------------------------------------------------------- start everything

# start_proxy TARGET: starts one proxy on the proxy CPU and waits for its listeners.
start_proxy() {
	local a
	case "$1" in
	ours)
		start dataplane "$PROXY_CPU" env GOMAXPROCS=1 "$BIN/lb-dataplane" --controlplane "$CP" --node-id bench \
			--listen "$DP" --tls-listen "$DP_TLS" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --admin-listen "$DP_ADMIN" \
			${PROFILE_DIR:+--pprof}
		for a in "$DP" "$DP_TLS" "$DP_ADMIN"; do wait_port "$a"; done
		;;
	nginx)
		start nginx "$PROXY_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;'
		for a in "$NGX" "$NGX_TLS" "$NGX_GRPC"; do wait_port "$a"; done
		;;
	haproxy)
		start haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
		for a in "$HAP" "$HAP_TLS" "$HAP_GRPC"; do wait_port "$a"; done
		;;
	esac
}

# restart_proxy TARGET: a fresh process, for the memory measurements.
restart_proxy() {
	local name="$1" a deadline=$((SECONDS + 20))
	[[ $1 == ours ]] && name=dataplane
	stop_pids "${PID[$name]}"
	for a in $(case "$1" in ours) echo "$DP $DP_TLS $DP_ADMIN" ;; nginx) echo "$NGX $NGX_TLS $NGX_GRPC" ;; haproxy) echo "$HAP $HAP_TLS $HAP_GRPC" ;; esac); do
		while ! port_free "${a##*:}" && ((SECONDS < deadline)); do sleep 0.1; done
	done
	start_proxy "$1"
	[[ $1 == ours ]] && wait_version "$DP_ADMIN" "$CONFIG_VERSION"
	return 0
}

nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" -g 'daemon off;' 2>"$WORK/nginx-check.log" ||
	die "nginx refuses its configuration: $(cat "$WORK/nginx-check.log")"
haproxy -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
	die "haproxy refuses its configuration: $(cat "$WORK/haproxy-check.log")"
log "starting backends and control plane on CPU $LOAD_CPU, proxies on CPU $PROXY_CPU"
start backend-a "$LOAD_CPU" env GOMAXPROCS=1 "$BIN/benchbackend" --http "$BA" --grpc "$BA_GRPC" --ws "$BA_WS"
start backend-b "$LOAD_CPU" env GOMAXPROCS=1 "$BIN/benchbackend" --http "$BB" --grpc "$BB_GRPC" --ws "$BB_WS"
start controlplane "$LOAD_CPU" "$BIN/lb-controlplane" --listen "$CP" --data-dir "$WORK/controlplane"
for a in "$BA" "$BA_GRPC" "$BA_WS" "$BB" "$BB_GRPC" "$BB_WS" "$CP"; do wait_port "$a"; done
for t in ours nginx haproxy; do start_proxy "$t"; done

lbctl() { "$BIN/lbctl" --controlplane "$CP" "$@"; }
version_of() { sed -n 's/.*configuration version \([0-9]*\).*/\1/p' | tail -1; }

# wait_version ADMIN V: until the data plane behind ADMIN serves version V or later.
wait_version() {
	local deadline=$((SECONDS + 30)) ready
	while ((SECONDS < deadline)); do
		ready="$(curl -s --max-time 2 "http://$1/readyz" || true)"
		if [[ $ready =~ version\ ([0-9]+) ]] && ((BASH_REMATCH[1] >= $2)); then return 0; fi
		sleep 0.05
	done
	die "the data plane at $1 did not apply version $2 within 30s; logs are in $WORK"
}

log "configuring our data plane with lbctl"
{
	lbctl pool create web --backend "$BA" --backend "$BB"
	lbctl pool create grpc --path-prefix /grpc.health.v1.Health/ --upstream-protocol h2c --backend "$BA_GRPC" --backend "$BB_GRPC"
	lbctl pool create ws --path-prefix /ws/ --backend "$BA_WS" --backend "$BB_WS"
} >"$WORK/lbctl.log" 2>&1 || die "lbctl failed: $(cat "$WORK/lbctl.log")"
CONFIG_VERSION="$(version_of <"$WORK/lbctl.log")"
wait_version "$DP_ADMIN" "$CONFIG_VERSION"

# pids_of TARGET: the processes whose CPU and memory count for TARGET.
pids_of() {
	case "$1" in
	ours) echo "${PID[dataplane]}" ;;
	nginx) echo "${PID[nginx]} $(pgrep -P "${PID[nginx]}" | tr '\n' ' ')" ;;
	haproxy) echo "${PID[haproxy]}" ;;
	esac
}

# addr_of TARGET KIND: KIND is h1 (plain HTTP/1.1), tls or grpc.
addr_of() {
	case "$1:$2" in
	ours:h1 | ours:grpc) echo "$DP" ;;
	ours:tls) echo "$DP_TLS" ;;
	nginx:h1) echo "$NGX" ;;
	nginx:tls) echo "$NGX_TLS" ;;
	nginx:grpc) echo "$NGX_GRPC" ;;
	haproxy:h1) echo "$HAP" ;;
	haproxy:tls) echo "$HAP_TLS" ;;
	haproxy:grpc) echo "$HAP_GRPC" ;;
	direct:h1) echo "$BA" ;;
	direct:grpc) echo "$BA_GRPC" ;;
	*) echo "" ;;
	esac
}

# Check every target once before measuring; a broken one is reported and skipped.
declare -A BROKEN=()
check_target() {
	local t="$1" a out
	a="$(addr_of "$t" h1)"
	out="$(curl -sS --max-time 5 "http://$a/small" 2>&1)" || true
	if [[ $out != 0123456789abcdef* ]]; then
		BROKEN[$t]="GET http://$a/small: ${out:0:200}"
		return
	fi
	a="$(addr_of "$t" tls)"
	if [[ -n $a ]]; then
		out="$(curl -sS -k --http2 --max-time 5 -o /dev/null -w '%{http_version} %{http_code}' "https://$a/small" 2>&1)"
		[[ $out == "2 200" ]] || BROKEN[$t]="HTTP/2 GET https://$a/small: $out"
	fi
	a="$(addr_of "$t" grpc)"
	out="$(timeout 20 taskset -c "$LOAD_CPU" "$GHZ" --insecure --proto "$WORK/health.proto" --import-paths "$WORK" \
		--call grpc.health.v1.Health.Check -d '{}' -n 20 -c 2 -O json "$a" 2>&1)" || true
	[[ "$(jq -r '.statusCodeDistribution.OK // 0' <<<"$out" 2>/dev/null)" == 20 ]] || BROKEN[$t]="gRPC Health/Check via $a: ${out:0:300}"
}
for t in ours nginx haproxy direct; do
	want_target "$t" && check_target "$t"
done
for t in "${!BROKEN[@]}"; do log "WARNING: $t does not work and is skipped: ${BROKEN[$t]}"; done

# ---------------------------------------------------------------- measuring helpers

CLK_TCK="$(getconf CLK_TCK)"

# cpu_ticks PID...: utime+stime summed, in clock ticks.
cpu_ticks() {
	local p sum=0 f
	for p in "$@"; do
		f="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null)" || continue
		# After "pid (comm) ", utime and stime are fields 12 and 13.
		sum=$((sum + $(awk '{print $12 + $13}' <<<"$f")))
	done
	echo "$sum"
}

# status_kib FIELD PID...: a /proc/PID/status field (VmRSS, VmHWM) summed, in KiB.
status_kib() {
	local field="$1" p sum=0 v
	shift
	for p in "$@"; do
		v="$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)" || v=0
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

reset_peak_rss() {
	local p
	for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}

# core_ticks CPU: "busy total" jiffies of one core from /proc/stat.
core_ticks() {
	awk -v c="cpu$1" '$1 == c {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat
}

# backend_counts KIND: requests and connections both backends saw, KIND http or grpc.
backend_counts() {
	local a r=0 c=0 s
	for a in "$BA_WS" "$BB_WS"; do
		s="$(curl -s --max-time 2 "http://$a/stats")" || return 0
		r=$((r + $(jq -r ".$1_requests" <<<"$s")))
		c=$((c + $(jq -r ".$1_connections" <<<"$s")))
	done
	echo "$r $c"
}

# backend_a_requests: requests backend a answered, HTTP and gRPC.
backend_a_requests() {
	curl -s --max-time 2 "http://$BA_WS/stats" | jq -r '.http_requests + .grpc_requests'
}

# dp_metric ADMIN NAME: the sum of a Prometheus counter over its label sets; empty if absent.
dp_metric() {
	curl -s --max-time 2 "http://$1/metrics" 2>/dev/null |
		awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF; found = 1} END {if (found) printf "%.0f\n", s}'
}

# to_us VALUE: wrk's "612.00us", "1.23ms", "2.00s" -> microseconds.
to_us() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
		else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
		else print "" }'
}

RUNS="$WORK/runs.jsonl"
MEMS="$WORK/mem.jsonl"
: >"$RUNS"
: >"$MEMS"
: >"$WORK/attempts.jsonl"
TIMEOUT_PAD=60

# loadgen SCENARIO TARGET SECONDS OUTFILE: runs the scenario's load generator
# on the load CPU; prints "rps requests errors p50_us p99_us" (empty fields as -).
loadgen() {
	local sc="$1" t="$2" secs="$3" out="$4" a rc=0
	case "$sc" in
	h1-small | h1-large | h1-close)
		a="$(addr_of "$t" h1)"
		local path=/small extra=()
		[[ $sc == h1-large ]] && path=/large
		[[ $sc == h1-close ]] && extra=(-H 'Connection: close')
		timeout -k 5 $((secs + TIMEOUT_PAD)) taskset -c "$LOAD_CPU" \
			wrk -t1 -c50 -d"${secs}s" --latency "${extra[@]}" "http://$a$path" >"$out" 2>&1 || rc=$?
		((rc == 0)) || { echo "- - - - -"; return; }
		local rps req err p50 p99
		rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
		req="$(awk '/ requests in / {print $1}' "$out")"
		err="$(awk '/Socket errors:/ {gsub(",", ""); s += $4 + $6 + $8 + $10} /Non-2xx or 3xx responses:/ {s += $NF} END {print s + 0}' "$out")"
		p50="$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")"
		p99="$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")"
		echo "${rps:--} ${req:--} ${err:--} ${p50:--} ${p99:--}"
		;;
	h2-tls)
		a="$(addr_of "$t" tls)"
		[[ -n $a ]] || { echo "- - - - -"; return; }
		h2load_run "$secs" "$out" -c10 -m100 "https://$a/small"
		;;
	grpc-h2load)
		# A unary grpc.health.v1.Health/Check with an empty request: a 5-byte
		# gRPC frame. h2load checks only the HTTP status; the backends' request
		# count is compared with h2load's in measure.
		a="$(addr_of "$t" grpc)"
		h2load_run "$secs" "$out" -c10 -m10 -d "$WORK/grpc-request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
			"http://$a/grpc.health.v1.Health/Check"
		;;
	grpc)
		a="$(addr_of "$t" grpc)"
		timeout -k 5 $((secs + TIMEOUT_PAD)) taskset -c "$LOAD_CPU" \
			"$GHZ" --insecure --proto "$WORK/health.proto" --import-paths "$WORK" --call grpc.health.v1.Health.Check \
			-d '{}' -c 50 --connections 5 -z "${secs}s" -O json "$a" >"$out" 2>"$out.err" || rc=$?
		if ((rc != 0)) || ! jq -e .rps "$out" >/dev/null 2>&1; then
			echo "- - - - -"
			return
		fi
		# Calls still in flight when ghz stops end in "transport is closing",
		# "context canceled" or "the client connection is closing" (ghz closing
		# its own connections): not errors of the proxy.
		jq -r '[.rps, .count,
			([.count - (.statusCodeDistribution.OK // 0)
				- ((.errorDistribution // {}) | to_entries | map(select(.key | test("transport is closing|context canceled|the client connection is closing"))) | map(.value) | add // 0), 0] | max),
			((.latencyDistribution // []) | map(select(.percentage == 50))[0].latency // null | if . then . / 1000 else "-" end),
			((.latencyDistribution // []) | map(select(.percentage == 99))[0].latency // null | if . then . / 1000 else "-" end)]
			| map(tostring) | join(" ")' "$out"
		;;
	esac
}

# h2load_run SECONDS OUTFILE ARGS...: h2load on the load CPU; prints
# "rps requests errors p50_us p99_us" (percentiles from its --log-file).
h2load_run() {
	local secs="$1" out="$2" rc=0
	shift 2
	timeout -k 5 $((secs + TIMEOUT_PAD)) taskset -c "$LOAD_CPU" \
		h2load -t1 -D "$secs" --log-file="$out.log" "$@" >"$out" 2>&1 || rc=$?
	if ((rc != 0)); then
		echo "- - - - -"
		return
	fi
	local rps req err pct
	rps="$(awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) {v = $i; sub(",", "", v); print v}}' "$out")"
	req="$(awk '/^requests:/ {print $2}' "$out")"
	# failed + errored + timeout, and answers other than 2xx.
	err="$(awk '/^requests:/ {s += $10 + $12 + $14} /^status codes:/ {s += $5 + $7 + $9} END {print s + 0}' "$out")"
	pct="$(awk -F'\t' '{print $3}' "$out.log" | sort -n | awk '{v[NR] = $1} END {if (NR) print v[int(NR * 0.5 + 0.5)], v[int(NR * 0.99 + 0.5)]; else print "- -"}')"
	rm -f "$out.log"
	echo "${rps:--} ${req:--} ${err:--} $pct"
}

# measure SCENARIO TARGET ROUND: one measured run, appended to $RUNS.
# measure_once SCENARIO TARGET ROUND ATTEMPT: one measured run; prints it as JSON.
measure_once() {
	local sc="$1" t="$2" round="$3" pids=() out="$WORK/raw/$1-$2-r$3-a$4.txt" kind=http
	[[ $sc == grpc* ]] && kind=grpc
	if [[ $t != direct ]]; then read -ra pids <<<"$(pids_of "$t")"; fi
	((WARMUP > 0)) && loadgen "$sc" "$t" "$WARMUP" "$out.warmup" >/dev/null
	local cpu0 c0b c0t c1b c1t b_req0 b_conn0 a_req0 m_req0="" m_conn0=""
	((${#pids[@]})) && reset_peak_rss "${pids[@]}"
	read -r b_req0 b_conn0 <<<"$(backend_counts "$kind")"
	a_req0="$(backend_a_requests)"
	if [[ $t == ours ]]; then
		m_req0="$(dp_metric "$DP_ADMIN" lb_dataplane_upstream_requests_total)"
		m_conn0="$(dp_metric "$DP_ADMIN" lb_dataplane_upstream_connections_total)"
	fi
	cpu0=0
	((${#pids[@]})) && cpu0="$(cpu_ticks "${pids[@]}")"
	read -r c0b c0t <<<"$(core_ticks "$PROXY_CPU")"
	read -r c1b c1t <<<"$(core_ticks "$LOAD_CPU")"

	local res
	res="$(loadgen "$sc" "$t" "$DURATION" "$out")"

	local cpu1 d0b d0t d1b d1t b_req1 b_conn1 a_req1 m_req1="" m_conn1="" rss="null"
	cpu1=0
	((${#pids[@]})) && cpu1="$(cpu_ticks "${pids[@]}")"
	read -r d0b d0t <<<"$(core_ticks "$PROXY_CPU")"
	read -r d1b d1t <<<"$(core_ticks "$LOAD_CPU")"
	((${#pids[@]})) && rss="$(status_kib VmHWM "${pids[@]}")"
	read -r b_req1 b_conn1 <<<"$(backend_counts "$kind")"
	a_req1="$(backend_a_requests)"
	if [[ $t == ours ]]; then
		m_req1="$(dp_metric "$DP_ADMIN" lb_dataplane_upstream_requests_total)"
		m_conn1="$(dp_metric "$DP_ADMIN" lb_dataplane_upstream_connections_total)"
	fi

	local rps req err p50 p99
	read -r rps req err p50 p99 <<<"$res"
	# h2load cannot see grpc-status: calls that never reached a backend
	# (beyond the 100 that may straddle the start and end) are errors.
	if [[ $sc == grpc-h2load && $req =~ ^[0-9]+$ && $err =~ ^[0-9]+$ ]]; then
		local lost=$((req - (b_req1 - b_req0) - 100))
		((lost > 0)) && err=$((err + lost))
	fi
	jq -cn --arg sc "$sc" --arg t "$t" --argjson round "$round" --argjson attempt "$4" --argjson dur "$DURATION" \
		--arg rps "$rps" --arg req "$req" --arg err "$err" --arg p50 "$p50" --arg p99 "$p99" \
		--argjson has_proc "$([[ ${#pids[@]} -gt 0 ]] && echo true || echo false)" \
		--argjson cpu "$((cpu1 - cpu0))" --argjson tck "$CLK_TCK" --argjson rss "$rss" \
		--argjson c0 "$((d0b - c0b))" --argjson c0t "$((d0t - c0t))" --argjson c1 "$((d1b - c1b))" --argjson c1t "$((d1t - c1t))" \
		--argjson breq "$((b_req1 - b_req0))" --argjson bconn "$((b_conn1 - b_conn0))" --argjson areq "$((a_req1 - a_req0))" \
		--arg mreq0 "$m_req0" --arg mreq1 "$m_req1" --arg mconn0 "$m_conn0" --arg mconn1 "$m_conn1" '
		def num: if . == "-" or . == "" then null else tonumber end;
		($rps | num) as $rps | ($req | num) as $req |
		(if $has_proc then $cpu / $tck else null end) as $cpus |
		{scenario: $sc, target: $t, round: $round, attempt: $attempt, duration_s: $dur,
		 ok: ($rps != null), rps: $rps, requests: $req, errors: ($err | num),
		 p50_us: ($p50 | num), p99_us: ($p99 | num),
		 proxy_cpu_s: $cpus,
		 cpu_s_per_100k: (if $cpus != null and ($req // 0) > 0 then $cpus / $req * 100000 else null end),
		 peak_rss_kib: $rss,
		 proxy_core_busy_pct: (if $c0t > 0 then $c0 / $c0t * 100 else null end),
		 proxy_core_other_pct: (if $c0t > 0 and $cpus != null then ([$c0 / $c0t * 100 - $cpus * $tck / $c0t * 100, 0] | max) else null end),
		 load_core_busy_pct: (if $c1t > 0 then $c1 / $c1t * 100 else null end),
		 upstream_requests: $breq, upstream_connections: $bconn,
		 upstream_reuse_pct: (if $breq > 0 and $t != "direct" then ([1 - $bconn / $breq, 0] | max) * 100 else null end),
		 backend_a_share_pct: (if $breq > 0 then $areq / $breq * 100 else null end),
		 metrics_reuse_pct: (if $mreq0 != "" and $mreq1 != "" and $mconn0 != "" and $mconn1 != "" and (($mreq1 | tonumber) - ($mreq0 | tonumber)) > 0
			then (1 - (($mconn1 | tonumber) - ($mconn0 | tonumber)) / (($mreq1 | tonumber) - ($mreq0 | tonumber))) * 100 else null end)}'
}

# measure SCENARIO TARGET ROUND: one measured run, appended to $RUNS. A run
# during which other processes kept the proxy's core more than MAX_OTHER
# percent busy is repeated, up to ATTEMPTS times in all; the least disturbed
# attempt is kept (each attempt is in the JSON's "attempts").
measure() {
	local attempt run best="" other best_other=1000
	for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
		run="$(measure_once "$1" "$2" "$3" "$attempt")" || true
		if ! jq -e . >/dev/null 2>&1 <<<"$run"; then
			log "round $3 $1 $2: measuring failed: ${run:0:200}"
			continue
		fi
		echo "$run" >>"$WORK/attempts.jsonl"
		other="$(jq -r '.proxy_core_other_pct // 0 | floor' <<<"$run")"
		if ((other < best_other)); then
			best="$run"
			best_other=$other
		fi
		((other <= MAX_OTHER)) && break
		((attempt < ATTEMPTS)) && log "round $3 $1 $2: other processes kept the proxy core ${other}% busy; running it again"
	done
	[[ -n $best ]] || return 0
	echo "$best" >>"$RUNS"
	tail -1 "$RUNS" | jq -r '"bench: round \(.round) \(.scenario) \(.target): " +
		(if .ok then "\(.rps | floor) req/s, p50 \(.p50_us // "-") us, p99 \(.p99_us // "-") us, errors \(.errors)" +
			(if .cpu_s_per_100k then ", \(.cpu_s_per_100k * 10 | . * 10 | round / 10) us CPU/request" else "" end) +
			(if .upstream_reuse_pct then ", upstream reuse \(.upstream_reuse_pct * 1000 | round / 1000)%" else "" end)
		else "FAILED (raw output in \($ENV.WORK)/raw with --keep-work)" end)' >&2
}
export WORK

# mem_test MODE TARGET: RSS growth of TARGET holding connections, appended to $MEMS.
mem_test() {
	local mode="$1" t="$2" n="$CONNS" path=/small
	if [[ $mode == websocket ]]; then
		path=/ws/bench
		# Each session is two sockets in the proxy: keep both, and some
		# headroom (nginx warns and starts closing connections near its
		# worker_connections), under the open-files limit.
		local cap=$(((NOFILE - 600) / 2))
		((n > cap)) && n=$cap
	fi
	local pids a
	read -ra pids <<<"$(pids_of "$t")"
	a="$(addr_of "$t" h1)"
	curl -s --max-time 5 -o /dev/null "http://$a/small" || true
	sleep 1
	local rss0 fds0=0 p
	rss0="$(status_kib VmRSS "${pids[@]}")"
	for p in "${pids[@]}"; do fds0=$((fds0 + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l))); done
	local out="$WORK/raw/mem-$mode-$t.txt"
	taskset -c "$LOAD_CPU" "$BIN/benchconns" --addr "$a" --n "$n" --mode "$mode" --path "$path" --hold 300s >"$out" 2>&1 &
	local cpid=$!
	PIDS+=("$cpid")
	local deadline=$((SECONDS + 180))
	while ((SECONDS < deadline)) && alive "$cpid" && ! grep -q '^ready' "$out"; do sleep 0.2; done
	local open=0 failed=0
	if grep -q '^ready' "$out"; then
		open="$(sed -n 's/^ready open=\([0-9]*\).*/\1/p' "$out")"
		failed="$(sed -n 's/^ready .*failed=\([0-9]*\).*/\1/p' "$out")"
	fi
	sleep 2
	local rss1 fds1=0
	rss1="$(status_kib VmRSS "${pids[@]}")"
	for p in "${pids[@]}"; do fds1=$((fds1 + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l))); done
	stop_pids "$cpid"
	jq -cn --arg mode "$mode" --arg t "$t" --argjson want "$n" --argjson open "${open:-0}" --argjson failed "${failed:-0}" \
		--argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson fds0 "$fds0" --argjson fds1 "$fds1" --arg err "$(grep -v '^ready' "$out" | head -3)" '
		{mode: $mode, target: $t, connections_wanted: $want, connections_open: $open, failed: $failed,
		 rss_before_kib: $rss0, rss_with_kib: $rss1, proxy_fds_before: $fds0, proxy_fds_with: $fds1,
		 kib_per_connection: (if $open > 0 then ($rss1 - $rss0) / $open else null end),
		 note: (if $err != "" then $err else null end)}' >>"$MEMS"
	tail -1 "$MEMS" | jq -r '"bench: memory \(.mode) \(.target): \(.connections_open) open, \(.failed) failed, " +
		"RSS \(.rss_before_kib) -> \(.rss_with_kib) KiB, \(.kib_per_connection // "n/a" | tostring | .[0:5]) KiB per connection"' >&2
	sleep 2 # let the proxy close its side
}

# ---------------------------------------------------------------- run

START_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
PINNING="proxy under test on CPU $PROXY_CPU (taskset -c $PROXY_CPU; our data plane GOMAXPROCS=1, nginx worker_processes 1, HAProxy nbthread 1); load generators (wrk -t1, h2load -t1, ghz), both backends (GOMAXPROCS=1 each), benchconns and our control plane on CPU $LOAD_CPU (taskset -c $LOAD_CPU)"
log "pinning: $PINNING"

THROUGHPUT=()
for sc in h1-small h1-large h1-close h2-tls grpc grpc-h2load; do want_scenario "$sc" && THROUGHPUT+=("$sc"); done
for ((round = 1; round <= ROUNDS; round++)); do
	for sc in "${THROUGHPUT[@]}"; do
		for t in ours nginx haproxy direct; do
			if ! want_target "$t" || [[ -n ${BROKEN[$t]:-} ]]; then continue; fi
			[[ $sc == h2-tls && $t == direct ]] && continue
			measure "$sc" "$t" "$round"
		done
	done
done

# Optional profiles of our data plane under h1-small.
PROFILE_NOTE=""
profile() {
	# Our data plane runs with --pprof when --profile is given.
	local target=ours http="$DP_ADMIN"
	PROFILE_NOTE="the data plane's own /debug/pprof (--pprof) on its admin listener"
	local a secs=10
	a="$(addr_of "$target" h1)"
	cp "$BIN/lb-dataplane" "$PROFILE_DIR/lb-dataplane"
	for kind in cpu allocs; do
		log "profiling our data plane under h1-small: $kind, ${secs}s"
		timeout -k 5 $((secs + TIMEOUT_PAD)) taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"$((secs + 3))s" "http://$a/small" >"$PROFILE_DIR/wrk-$kind.txt" 2>&1 &
		local wpid=$!
		PIDS+=("$wpid")
		sleep 1
		if [[ $kind == cpu ]]; then
			curl -s --max-time $((secs + 20)) -o "$PROFILE_DIR/cpu.pprof" "http://$http/debug/pprof/profile?seconds=$secs"
		else
			curl -s --max-time $((secs + 20)) -o "$PROFILE_DIR/allocs.pprof" "http://$http/debug/pprof/allocs?seconds=$secs"
		fi
		stop_pids "$wpid"
	done
	go tool pprof -top -nodecount=40 "$PROFILE_DIR/lb-dataplane" "$PROFILE_DIR/cpu.pprof" >"$PROFILE_DIR/cpu-top.txt" 2>&1 || true
	go tool pprof -top -nodecount=40 -sample_index=alloc_space "$PROFILE_DIR/lb-dataplane" "$PROFILE_DIR/allocs.pprof" >"$PROFILE_DIR/allocs-top.txt" 2>&1 || true
	go tool pprof -top -nodecount=40 -sample_index=alloc_objects "$PROFILE_DIR/lb-dataplane" "$PROFILE_DIR/allocs.pprof" >"$PROFILE_DIR/allocs-objects-top.txt" 2>&1 || true
}
if [[ -n $PROFILE_DIR ]] && want_target ours && [[ -z ${BROKEN[ours]:-} ]]; then profile; fi

# Memory at scale, last, each proxy restarted before each measurement so
# that it starts fresh.
[[ -n ${PID[dataplane-pprof]:-} ]] && stop_pids "${PID[dataplane-pprof]}"
for mode in keepalive websocket; do
	want_scenario "mem-$mode" || continue
	for t in ours nginx haproxy; do
		if ! want_target "$t" || [[ -n ${BROKEN[$t]:-} ]]; then continue; fi
		restart_proxy "$t"
		mem_test "$mode" "$t"
	done
done

# ---------------------------------------------------------------- report

VERSIONS="$(jq -n \
	--arg go "$(go version | awk '{print $3}')" \
	--arg nginx "$(nginx -v 2>&1 | sed 's/.*nginx\///')" \
	--arg haproxy "$(haproxy -v | awk 'NR == 1 {print $3}')" \
	--arg wrk "$(wrk -v 2>&1 | awk 'NR == 1 {print $2}')" \
	--arg h2load "$(h2load --version 2>&1 | awk '{print $NF}')" \
	--arg ghz "$GHZ_VERSION" \
	'{go: $go, nginx: $nginx, haproxy: $haproxy, wrk: $wrk, h2load: $h2load, ghz: $ghz}')"
BROKEN_JSON="$(for t in "${!BROKEN[@]}"; do jq -n --arg t "$t" --arg e "${BROKEN[$t]}" '{($t): $e}'; done | jq -s 'add // {}')"

jq -n --slurpfile runs "$RUNS" --slurpfile mem "$MEMS" --slurpfile attempts "$WORK/attempts.jsonl" \
	--arg date "$START_DATE" --arg nproc "$(nproc)" --arg kernel "$(uname -srm)" \
	--arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
	--arg cmd "$CMDLINE" --arg pinning "$PINNING" --argjson versions "$VERSIONS" --argjson broken "$BROKEN_JSON" \
	--argjson duration "$DURATION" --argjson rounds "$ROUNDS" --argjson warmup "$WARMUP" --argjson maxother "$MAX_OTHER" --argjson attemptsmax "$ATTEMPTS" \
	--arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg profile "$PROFILE_NOTE" --arg git "$GIT_STATE" '
	def median: sort | length as $n | if $n == 0 then null elif $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end;
	def vals(f): map(f) | map(select(. != null));
	($runs | group_by([.scenario, .target]) | map(
		(map(select(.ok))) as $ok |
		{scenario: .[0].scenario, target: .[0].target, runs: length, failed_runs: (length - ($ok | length)),
		 rps_median: ($ok | vals(.rps) | median), rps_min: ($ok | vals(.rps) | min), rps_max: ($ok | vals(.rps) | max),
		 p50_us_median: ($ok | vals(.p50_us) | median), p99_us_median: ($ok | vals(.p99_us) | median),
		 cpu_s_per_100k_median: ($ok | vals(.cpu_s_per_100k) | median),
		 peak_rss_kib_max: ($ok | vals(.peak_rss_kib) | max),
		 errors: ($ok | vals(.errors) | add),
		 upstream_reuse_pct_median: ($ok | vals(.upstream_reuse_pct) | median),
		 metrics_reuse_pct_median: ($ok | vals(.metrics_reuse_pct) | median),
		 backend_a_share_pct_median: ($ok | vals(.backend_a_share_pct) | median),
		 proxy_core_other_pct_median: ($ok | vals(.proxy_core_other_pct) | median),
		 load_core_busy_pct_median: ($ok | vals(.load_core_busy_pct) | median)})) as $summary |
	([$summary[] | .scenario] | unique) as $scenarios |
	{date: $date, nproc: ($nproc | tonumber), kernel: $kernel, cpu_model: $cpu, command: $cmd, git: $git, pinning: $pinning,
	 duration_s: $duration, rounds: $rounds, warmup_s: $warmup, loadavg_at_end: $load, versions: $versions,
	 broken_targets: $broken, profile: (if $profile == "" then null else $profile end),
	 summary: $summary,
	 ratios: [$scenarios[] as $s |
		($summary | map(select(.scenario == $s)) | map({(.target): .}) | add) as $by |
		{scenario: $s} + ([["nginx", "haproxy"][] as $o |
			if $by.ours and $by[$o] then
				{("rps_vs_" + $o): (if $by.ours.rps_median and $by[$o].rps_median then $by.ours.rps_median / $by[$o].rps_median else null end),
				 ("cpu_per_request_vs_" + $o): (if $by.ours.cpu_s_per_100k_median and $by[$o].cpu_s_per_100k_median then $by.ours.cpu_s_per_100k_median / $by[$o].cpu_s_per_100k_median else null end),
				 ("p99_vs_" + $o): (if $by.ours.p99_us_median and $by[$o].p99_us_median then $by.ours.p99_us_median / $by[$o].p99_us_median else null end)}
			else {} end] | add // {})],
	 max_other_load_pct: $maxother, attempts_max: $attemptsmax, memory: $mem, runs: $runs, all_attempts: $attempts}' >"$OUT"

# Markdown, from the JSON.
jq -r '
	def f(d): if . == null then "n/a" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
	def ms: if . == null then "n/a" else (. / 1000 | f(2)) end;
	def names: {"h1-small": "HTTP/1.1 keep-alive, 64 B", "h1-large": "HTTP/1.1 keep-alive, 64 KiB",
		"h1-close": "new connection per request, 64 B", "h2-tls": "HTTP/2 over TLS, 10 conns x 100 streams",
		"grpc": "gRPC unary (h2c), ghz", "grpc-h2load": "gRPC unary (h2c), h2load"};
	def order: {"h1-small": 1, "h1-large": 2, "h1-close": 3, "h2-tls": 4, "grpc": 5, "grpc-h2load": 6};
	def torder: {"ours": 1, "nginx": 2, "haproxy": 3, "direct": 4};
	"# Benchmark: our data plane, nginx and HAProxy (issue 7)",
	"",
	"- date: \(.date); \(.nproc) cores (\(.cpu_model)); kernel \(.kernel); load average at the end \(.loadavg_at_end)",
	"- command: `\(.command)` at \(.git)",
	"- pinning: \(.pinning)",
	"- each run \(.duration_s) s after a \(.warmup_s) s warm-up; \(.rounds) interleaved round(s) (ours, nginx, HAProxy, direct per scenario); medians, min-max in brackets",
	"- a run during which other processes kept the proxy core more than \(.max_other_load_pct)% busy was run again (up to \(.attempts_max) times, the least disturbed kept): \((.all_attempts | length) - (.runs | length)) extra run(s)",
	"- versions: Go \(.versions.go), nginx \(.versions.nginx), HAProxy \(.versions.haproxy), wrk \(.versions.wrk), h2load \(.versions.h2load), ghz \(.versions.ghz)",
	(if (.broken_targets | length) > 0 then "- skipped, not working: \(.broken_targets | to_entries | map("\(.key) (\(.value | .[0:120]))") | join("; "))" else empty end),
	"",
	"## Throughput",
	"",
	"| scenario | proxy | req/s (min-max) | p50 ms | p99 ms | proxy CPU s per 100k req | proxy peak RSS MiB | upstream reuse | other load on proxy core | load core busy | errors |",
	"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
	(.summary | sort_by([order[.scenario], torder[.target]])[] |
		"| \(names[.scenario]) | \(.target) | \(.rps_median | f(0)) (\(.rps_min | f(0))-\(.rps_max | f(0))) | \(.p50_us_median | ms) | \(.p99_us_median | ms) | \(.cpu_s_per_100k_median | f(2)) | \(if .peak_rss_kib_max then (.peak_rss_kib_max / 1024 | f(1)) else "n/a" end) | \(if .upstream_reuse_pct_median then (.upstream_reuse_pct_median | f(2)) + "%" else "n/a" end)\(if .target == "ours" then " (metrics: " + (if .metrics_reuse_pct_median then (.metrics_reuse_pct_median | f(2)) + "%" else "n/a" end) + ")" else "" end) | \(if .proxy_core_other_pct_median then (.proxy_core_other_pct_median | f(0)) + "%" else "n/a" end) | \(.load_core_busy_pct_median | f(0))% | \(.errors // "n/a")\(if .failed_runs > 0 then ", \(.failed_runs) run(s) failed" else "" end) |"),
	"",
	"CPU s per 100k requests: proxy process CPU time (user+system) divided by requests; 1 s per 100k = 10 us per request. Upstream reuse: 1 - connections the backends accepted / requests they answered. Other load on proxy core: how busy the core of the proxy was beyond the proxy itself (other processes on the machine). Load core busy: the load generator and backends core; near 100% means the load generator, not the proxy, set the pace. nginx RSS is master + worker.",
	"",
	"## Ours against nginx and HAProxy",
	"",
	"Ratios of the medians. req/s: above 1 is better; CPU per request and p99: below 1 is better.",
	"",
	"| scenario | req/s vs nginx | CPU/req vs nginx | p99 vs nginx | req/s vs HAProxy | CPU/req vs HAProxy | p99 vs HAProxy |",
	"|---|---:|---:|---:|---:|---:|---:|",
	(.ratios | sort_by(order[.scenario])[] |
		"| \(names[.scenario]) | \(.rps_vs_nginx | f(2)) | \(.cpu_per_request_vs_nginx | f(2)) | \(.p99_vs_nginx | f(2)) | \(.rps_vs_haproxy | f(2)) | \(.cpu_per_request_vs_haproxy | f(2)) | \(.p99_vs_haproxy | f(2)) |"),
	"",
	(if (.memory | length) > 0 then
		"## Memory at scale",
		"",
		"RSS of the proxy process(es) before and while holding idle connections (benchconns: one request, or one WebSocket message echoed, on each, then idle).",
		"",
		"| proxy | connections | open (failed) | RSS before MiB | RSS with them MiB | KiB per connection |",
		"|---|---|---:|---:|---:|---:|",
		(.memory[] | "| \(.target) | \(if .mode == "keepalive" then "idle HTTP/1.1 keep-alive" else "WebSocket sessions" end) | \(.connections_open) (\(.failed)) | \(.rss_before_kib / 1024 | f(1)) | \(.rss_with_kib / 1024 | f(1)) | \(.kib_per_connection | f(1)) |"),
		""
	else empty end),
	(if .profile then "Profiles of our data plane under h1-small were taken with \(.profile)." else empty end)
' "$OUT"
if [[ -n $PROFILE_DIR && -s $PROFILE_DIR/cpu-top.txt ]]; then
	echo
	echo "## CPU profile of our data plane, HTTP/1.1 keep-alive 64 B (go tool pprof -top)"
	echo
	echo '```'
	head -50 "$PROFILE_DIR/cpu-top.txt"
	echo '```'
	echo
	echo "## Allocations of our data plane, same load (go tool pprof -top -sample_index=alloc_space)"
	echo
	echo '```'
	head -30 "$PROFILE_DIR/allocs-top.txt"
	echo '```'
fi
log "results written to $OUT"
