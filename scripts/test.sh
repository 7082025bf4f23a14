#!/usr/bin/env bash
# The one test command (CI runs exactly this through .ci/run): formatting,
# vet, buf lint, generated code in sync, go.mod tidy, then every test with
# the race detector, end-to-end tests included. Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
go version
# The race detector needs cgo, hence a C compiler; curl drives end-to-end
# tests and the quickstart; the etcd store's tests start a real etcd.
missing=()
command -v gcc >/dev/null || missing+=(gcc)
command -v curl >/dev/null || missing+=(curl)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]})); then
	step "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# h2spec, the HTTP/2 conformance suite, checks dataplane/h2server; with
# H2SPEC set its test fails rather than skips if the binary is missing.
step "h2spec"
toolbin="${XDG_CACHE_HOME:-$HOME/.cache}/lb-tools/bin"
if [[ ! -x "$toolbin/h2spec" ]]; then
	GOBIN="$toolbin" go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
fi
export H2SPEC="$toolbin/h2spec"
"$H2SPEC" --version

step "gofmt"
unformatted="$(gofmt -l $(git ls-files '*.go'))"
if [[ -n "$unformatted" ]]; then
	echo "these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "go mod tidy"
go mod tidy -diff

step "go vet"
go vet ./...

step "buf lint and format"
go tool -modfile=tools/go.mod buf lint
go tool -modfile=tools/go.mod buf format --diff --exit-code

step "generated code"
scripts/gen-proto.sh --check

step "go test -race"
go test -race -count=1 -timeout 20m ./...
