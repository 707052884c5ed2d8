#!/usr/bin/env bash
# Container start-up benchmark (issue 5): `kiln run --rm IMAGE true` for a WASI image (FROM
# scratch: kiln's guest tools) and for debian:bookworm (the native sandbox), against
# `docker run --rm` (Debian's docker.io, runc) on the same Debian base, measured in the same run.
# Targets: WASI <= 5 ms, native <= 20 ms.
# usage: benches/containers.sh [RUNS]   (root; hyperfine, docker.io)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
. benches/lib.sh
bench_require hyperfine dockerd docker
bench_debian_tarball
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-runbench.XXXXXX)
cleanup() {
    bench_dockerd_stop "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_ROOT=$WORK/kiln

"$KILN" import --change 'CMD ["bash"]' "$TARBALL" debian:bookworm >/dev/null
mkdir -p "$WORK/wasi"
printf 'FROM scratch\nCMD ["true"]\n' > "$WORK/wasi/Dockerfile"
"$KILN" build -q -t bench/wasi "$WORK/wasi" >/dev/null
# The set-up wrote a few hundred MiB (the import, docker's load): measure after it reached the
# disk, not while writeback competes with the runs (see README.md).
sync

measure() {
    hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/m.json" "$1" >/dev/null
    median "$WORK/m.json"
}
# Each engine is measured alone: kiln before dockerd starts (kiln has no daemon), docker
# with its daemon, on the same base image.
kw=$(measure "$KILN run --rm bench/wasi true")
kn=$(measure "$KILN run --rm debian:bookworm true")

bench_dockerd "$WORK"
"$KILN" save -o "$WORK/base.tar" debian:bookworm
docker load -q -i "$WORK/base.tar" >/dev/null
sync
dn=$(measure "docker run --rm --network=none debian:bookworm true")

python3 - "$kw" "$kn" "$dn" <<'PY'
import sys
kw, kn, dn = map(float, sys.argv[1:])
print(f"run --rm true, WASI image      kiln {kw*1000:8.1f} ms   docker (debian) {dn*1000:8.1f} ms   kiln/docker {kw/dn:7.4f}")
print(f"run --rm true, debian:bookworm kiln {kn*1000:8.1f} ms   docker          {dn*1000:8.1f} ms   kiln/docker {kn/dn:7.4f}")
PY
