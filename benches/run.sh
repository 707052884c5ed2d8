#!/usr/bin/env bash
# RUN-step benchmark (issue 3): a Dockerfile with 20 x `RUN echo N > /fN`, cold and fully
# cached, kiln against buildah and docker's classic builder, measured in the same run.
#
# kiln builds it FROM scratch: the RUN lines run in kiln's guest sh (WASI). The peers need a
# shell in the image, so they build FROM a one-file base whose /bin/sh is Debian's static
# busybox (built once, before measuring). Cold = empty store/cache for the build under test
# (kiln's compiled-module cache in ~/.cache/kiln stays warm, as it does on a real host).
# Targets: cold <= 0.1 s (<= 5 ms per step), fully cached <= 10 ms.
# usage: benches/run.sh [RUNS]   (root; needs hyperfine, buildah, docker.io, busybox-static)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
. benches/lib.sh
bench_require hyperfine buildah dockerd docker
[ -x /bin/busybox ] || { echo "bench: /bin/busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-runbench.XXXXXX)
cleanup() {
    bench_dockerd_stop "$WORK"
    bench_buildah_clean "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_ROOT=$WORK/kiln
bench_buildah "$WORK"
RESULTS=$WORK/results.txt
: > "$RESULTS"

bench_dockerd "$WORK"
export DOCKER_BUILDKIT=0

# The peers' base: /bin/sh is a static busybox.
BASE=$WORK/base; mkdir -p "$BASE"
cp /bin/busybox "$BASE/sh"
printf 'FROM scratch\nCOPY sh /bin/sh\n' > "$BASE/Dockerfile"
"${BUILDAH[@]}" bud -q -t bench/base "$BASE" >/dev/null
docker build -q -t bench/base "$BASE" >/dev/null

K=$WORK/k; P=$WORK/p; mkdir -p "$K" "$P"
{ echo "FROM scratch"; for i in $(seq 1 20); do echo "RUN echo $i > /f$i"; done; } > "$K/Dockerfile"
{ echo "FROM bench/base"; for i in $(seq 1 20); do echo "RUN echo $i > /f$i"; done; } > "$P/Dockerfile"


measure() { # label prepare command -> median seconds
    hyperfine -N --warmup 1 --runs "$RUNS" --prepare "sh -c '$2'" --export-json "$WORK/m.json" "$3" >/dev/null
    median "$WORK/m.json"
}

mkdir -p "$WORK/trash"
kc=$(measure kiln "mv $KILN_ROOT $WORK/trash/k\$\$ 2>/dev/null; true" "$KILN build -q -t bench/run $K")
bc=$(measure buildah "${BUILDAH[*]} rmi -f bench/run >/dev/null 2>&1; ${BUILDAH[*]} rmi --prune >/dev/null 2>&1; true" "${BUILDAH[*]} bud --layers -q -t bench/run $P")
dc=$(measure docker "docker rmi -f bench/run >/dev/null 2>&1; docker image prune -f >/dev/null 2>&1; true" "docker build -q -t bench/run $P")
"$KILN" build -q -t bench/run "$K" >/dev/null
"${BUILDAH[@]}" bud --layers -q -t bench/run "$P" >/dev/null
docker build -q -t bench/run "$P" >/dev/null
kw=$(measure kiln true "$KILN build -q -t bench/run $K")
bw=$(measure buildah true "${BUILDAH[*]} bud --layers -q -t bench/run $P")
dw=$(measure docker true "docker build -q -t bench/run $P")

python3 - "$kc" "$bc" "$dc" "$kw" "$bw" "$dw" <<'PY' | tee "$RESULTS"
import sys
kc, bc, dc, kw, bw, dw = map(float, sys.argv[1:])
def row(name, k, b, d):
    print(f"{name:<24} kiln {k*1000:9.1f} ms   buildah {b*1000:9.1f} ms   docker {d*1000:9.1f} ms   "
          f"kiln/buildah {k/b:7.4f}   kiln/docker {k/d:7.4f}")
row("20 x RUN, cold", kc, bc, dc)
row("  per RUN step", kc / 20, bc / 20, dc / 20)
row("20 x RUN, fully cached", kw, bw, dw)
PY
