#!/usr/bin/env bash
# Regenerates the Go code in api/ from proto/ with buf and the protoc-gen-go /
# protoc-gen-go-grpc plugins pinned in go.mod (buf itself is pinned in
# tools/go.mod). Everything comes from the Go module proxy; no protoc needed.
#
#   scripts/gen-proto.sh          regenerate api/
#   scripts/gen-proto.sh --check  fail if api/ differs from what proto/ generates
set -euo pipefail
cd "$(dirname "$0")/.."

buf() { go tool -modfile=tools/go.mod buf "$@"; }

if [[ "${1:-}" == "--check" ]]; then
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	# Generate into a scratch copy of the template's output directory.
	sed "s#out: api#out: $tmp/api#" buf.gen.yaml >"$tmp/buf.gen.yaml"
	buf generate --template "$tmp/buf.gen.yaml"
	if ! diff -r api "$tmp/api" >"$tmp/diff"; then
		echo "gen-proto: api/ is out of date with proto/; run scripts/gen-proto.sh and commit" >&2
		cat "$tmp/diff" >&2
		exit 1
	fi
	echo "gen-proto: api/ is up to date"
	exit 0
fi

buf generate
echo "gen-proto: regenerated api/"
