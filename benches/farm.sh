#!/usr/bin/env bash
# The farm's registry build cache, measured against a loopback registry (Debian's
# docker-registry), every peer in the same run:
#
#   (a) a build on a fresh store with a warm registry cache (--cache-from; it must run 0 RUN
#       steps)  vs  just downloading the same layers: skopeo copy of the image it yields
#       (target <= 1.5x)
#   (b) a cold build with --cache-to type=registry  vs  the same cold build without it
#       (target <= 1.10x): the build of (a), 96 MiB of layers from well under a second of
#       work, and (b') the seed (examples/redis), ~10 s of apt-get for a 30 MB layer
#   (c) apt-get install behind RUN --mount=type=cache on a fresh store: with the cache mounts
#       restored from a cache exported with mounts=true  vs  with no cache (target >= 3x
#       faster; needs the network: the step runs with --network=host)
#
# usage: benches/farm.sh [RUNS]   (needs hyperfine, skopeo, docker-registry; root)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
RUNS=${1:-3}
bench_require hyperfine skopeo docker-registry python3 curl
bench_debian_tarball
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-bench-farm.XXXXXX)
REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
RESULTS=$WORK/results.txt
: > "$RESULTS"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
  delete:
    enabled: true
http:
  addr: $REG
  secret: bench
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

# The base comes from the registry, as a farm's replicas get it (its mirror).
export KILN_ROOT=$WORK/seed
"$KILN" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$TARBALL" "$REG/base/debian:bookworm" >/dev/null
"$KILN" push -q "$REG/base/debian:bookworm" >/dev/null

# (a) A six-step build: 64 MiB a native step makes, text a WASI stage makes, the context.
CTX=$WORK/ctx
mkdir -p "$CTX"
python3 - "$CTX/words.txt" <<'PY'
import sys
words = b"the quick brown fox jumps over a lazy dog while kiln builds layers".split()
with open(sys.argv[1], "wb") as f:
    i = 0
    while f.tell() < 32 << 20:
        f.write(b" ".join(words[(i + k) % len(words)] for k in range(12)) + b" %d\n" % i)
        i += 1
PY
cat > "$CTX/Dockerfile" <<EOF
FROM scratch AS wasi
RUN echo made in wasi > /w.txt
FROM $REG/base/debian:bookworm
COPY words.txt /data/words.txt
RUN head -c 67108864 /dev/urandom > /data/random.bin
COPY --from=wasi /w.txt /w.txt
RUN sha256sum /data/* > /sums.txt
EOF
"$KILN" build -q -t "$REG/bench/app:1" --cache-to "type=registry,ref=$REG/cache/app:1" "$CTX" >/dev/null
"$KILN" push -q "$REG/bench/app:1" >/dev/null
# A fresh store must run no step.
out=$(env KILN_ROOT=$WORK/check "$KILN" build -t app --cache-from "$REG/cache/app:1" "$CTX" 2>&1)
steps=$(grep -c ' ---> Running in' <<<"$out" || true)
[ "$steps" = 0 ] || { echo "bench: the warm-cache build ran $steps steps" >&2; exit 1; }
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -rf $WORK/fresh" --export-json "$WORK/a-k.json" \
    "env KILN_ROOT=$WORK/fresh $KILN build -q -t app --cache-from $REG/cache/app:1 $CTX" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -rf $WORK/oci" --export-json "$WORK/a-s.json" \
    "skopeo copy -q --src-tls-verify=false docker://$REG/bench/app:1 oci:$WORK/oci:x" >/dev/null
python3 - "$WORK/a-k.json" "$WORK/a-s.json" <<'PY' | tee -a "$RESULTS"
import json, sys
k, s = (json.load(open(f))["results"][0]["median"] for f in sys.argv[1:3])
print(f"(a) fresh store, warm cache, 0 steps  kiln build {k*1000:8.1f} ms   skopeo copy of its layers {s*1000:8.1f} ms   ratio {k/s:5.2f} (target <= 1.5)")
PY

# (b) Cold builds (nothing cached, the random layer new every time) with and without the
# registry cache export.
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/b-with.json" \
    "env KILN_ROOT=$WORK/seed $KILN build -q --no-cache --cache-to type=registry,ref=$REG/cache/cold:1 $CTX" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/b-without.json" \
    "env KILN_ROOT=$WORK/seed $KILN build -q --no-cache $CTX" >/dev/null
python3 - "$WORK/b-with.json" "$WORK/b-without.json" <<'PY' | tee -a "$RESULTS"
import json, sys
w, o = (json.load(open(f))["results"][0]["median"] for f in sys.argv[1:3])
print(f"(b) cold build + --cache-to         {w*1000:8.1f} ms   without {o*1000:8.1f} ms   ratio {w/o:5.2f} (target <= 1.10)")
PY

# (b') The same for the seed (examples/redis: apt-get install redis-server, ~10 s of work and
# a 30 MB layer), a cold build as users run them.
SEED=$WORK/seed-ctx
mkdir -p "$SEED"
sed "s|^FROM debian:bookworm|FROM $REG/base/debian:bookworm|" examples/redis/Dockerfile > "$SEED/Dockerfile"
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/b2-with.json" \
    "env KILN_ROOT=$WORK/seed $KILN build -q --no-cache --network=host --cache-to type=registry,ref=$REG/cache/redis:1 $SEED" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/b2-without.json" \
    "env KILN_ROOT=$WORK/seed $KILN build -q --no-cache --network=host $SEED" >/dev/null
python3 - "$WORK/b2-with.json" "$WORK/b2-without.json" <<'PY' | tee -a "$RESULTS"
import json, sys
w, o = (json.load(open(f))["results"][0]["median"] for f in sys.argv[1:3])
print(f"(b') seed cold build + --cache-to   {w*1000:8.1f} ms   without {o*1000:8.1f} ms   ratio {w/o:5.2f} (target <= 1.10)")
PY

# (c) apt-get install behind cache mounts; BUMP makes the step run again on the fresh store.
APT=$WORK/apt
mkdir -p "$APT"
cat > "$APT/Dockerfile" <<EOF
FROM $REG/base/debian:bookworm
ARG BUMP=0
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\
    --mount=type=cache,target=/var/lib/apt/lists,sharing=locked \\
    rm -f /etc/apt/apt.conf.d/docker-clean && \\
    apt-get update -qq && apt-get install -y -qq --no-install-recommends \\
        python3 perl-modules-5.36 libicu72 >/dev/null
EOF
env KILN_ROOT=$WORK/apt-seed "$KILN" build -q --network=host \
    --cache-to "type=registry,ref=$REG/cache/apt:1,mounts=true" "$APT" >/dev/null
hyperfine -N --runs "$RUNS" --prepare "rm -rf $WORK/apt-fresh" --export-json "$WORK/c-with.json" \
    "env KILN_ROOT=$WORK/apt-fresh $KILN build -q --network=host --build-arg BUMP=1 --cache-from type=registry,ref=$REG/cache/apt:1 $APT" >/dev/null
hyperfine -N --runs "$RUNS" --prepare "rm -rf $WORK/apt-fresh" --export-json "$WORK/c-without.json" \
    "env KILN_ROOT=$WORK/apt-fresh $KILN build -q --network=host --build-arg BUMP=1 $APT" >/dev/null
python3 - "$WORK/c-with.json" "$WORK/c-without.json" <<'PY' | tee -a "$RESULTS"
import json, sys
w, o = (json.load(open(f))["results"][0]["median"] for f in sys.argv[1:3])
print(f"(c) apt-get install, fresh store    restored mounts {w*1000:8.1f} ms   no cache {o*1000:8.1f} ms   speed-up {o/w:5.2f}x (target >= 3)")
PY

echo
cat "$RESULTS"
