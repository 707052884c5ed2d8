#!/usr/bin/env bash
# kiln build benchmarks against buildah, measured in the same run on the same inputs.
#
#   (a) fully cached rebuild of a 20-step Dockerfile
#   (b) COPY . /ctx of 10,000 x 1 KiB files + one 200 MiB file:
#       cold, cached, after `touch` of one file, after a 1 KiB edit of one file
#
# Prints medians (hyperfine) and the kiln/buildah ratio. Targets (issue 2): (a) <= 10 ms;
# (b) cold <= 1.5 s, cached <= 50 ms, touch <= 50 ms, edit <= 0.5 s.
# usage: benches/build.sh [RUNS]   (needs hyperfine and buildah; run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
for t in hyperfine buildah; do
    command -v "$t" >/dev/null || { echo "bench: $t is not installed (apt-get install $t)" >&2; exit 1; }
done
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-bench.XXXXXX)
trap 'buildah --root "$WORK/buildah" --runroot "$WORK/buildah-run" rmi -af >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
export KILN_ROOT=$WORK/kiln
BUILDAH=(buildah --root "$WORK/buildah" --runroot "$WORK/buildah-run" --storage-driver overlay)
RESULTS=$WORK/results.txt
: > "$RESULTS"

median() { # hyperfine json -> median seconds
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"
}

bench() { # name prepare-cmd kiln-cmd buildah-cmd
    local name=$1 prep=$2 k=$3 b=$4
    # -N: no shell around the measured command; the preparation runs through sh.
    hyperfine -N --warmup 1 --runs "$RUNS" --prepare "sh -c '$prep'" --export-json "$WORK/k.json" "$k" >/dev/null
    hyperfine -N --warmup 1 --runs "$RUNS" --prepare "sh -c '$prep'" --export-json "$WORK/b.json" "$b" >/dev/null
    local km bm
    km=$(median "$WORK/k.json"); bm=$(median "$WORK/b.json")
    python3 -c 'import sys; n,k,b=sys.argv[1],float(sys.argv[2]),float(sys.argv[3]); print(f"{n:<28} kiln {k*1000:9.1f} ms   buildah {b*1000:9.1f} ms   ratio {k/b:7.4f}")' "$name" "$km" "$bm" | tee -a "$RESULTS"
}

# (a) 20 steps, fully cached.
A=$WORK/a; mkdir -p "$A"
{
    echo "FROM scratch"
    for i in $(seq 1 6); do echo "COPY f$i /f$i"; echo "f$i" > "$A/f$i"; done
    for i in $(seq 1 13); do echo "ENV V$i=value$i"; done
} > "$A/Dockerfile"
"$KILN" build -q -t bench/a "$A" >/dev/null
"${BUILDAH[@]}" bud --layers -q -t bench/a "$A" >/dev/null
bench "(a) 20-step cached" "true" "$KILN build -q -t bench/a $A" "${BUILDAH[*]} bud --layers -q -t bench/a $A"

# (b) the big context.
B=$WORK/b; mkdir -p "$B/small"
python3 - "$B" <<'PY'
import os, sys
root = sys.argv[1]
blob = os.urandom(1024)
for i in range(10000):
    d = os.path.join(root, "small", f"{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(blob[:1000] + str(i).encode().rjust(24, b"0"))
with open(os.path.join(root, "big.bin"), "wb") as f:
    for _ in range(200):
        f.write(os.urandom(1 << 20))
PY
printf 'FROM scratch\nCOPY . /ctx\n' > "$B/Dockerfile"

KB="$KILN build -q -t bench/b $B"
BB="${BUILDAH[*]} bud --layers -q -t bench/b $B"
# Cold runs move the previous store aside instead of deleting it: deleting ~10,000 inodes makes
# ext4's allocator crawl for the next seconds (recently_deleted) and would measure that instead.
mkdir -p "$WORK/trash"
bench "(b) cold" "mv $KILN_ROOT $WORK/trash/k\$\$ 2>/dev/null; mv $WORK/buildah $WORK/trash/b\$\$ 2>/dev/null; mv $WORK/buildah-run $WORK/trash/r\$\$ 2>/dev/null; true" "$KB" "$BB"
$KB >/dev/null; $BB >/dev/null
bench "(b) cached" "true" "$KB" "$BB"
bench "(b) after touch" "touch $B/small/07/f7" "$KB" "$BB"
bench "(b) after 1 KiB edit" "head -c 1024 /dev/urandom > $B/small/42/f42" "$KB" "$BB"
echo
cat "$RESULTS"
