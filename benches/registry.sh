#!/usr/bin/env bash
# Registry benchmarks against skopeo, measured in the same run against the same loopback
# registry (Debian's docker-registry) on the same image: about 300 MB in four layers (text that
# gzip shrinks, and random bytes it cannot).
#
#   (a) pull into the store   vs  skopeo copy docker://... oci:DIR          (target <= 1.0x)
#   (b) push to an empty registry (layers already compressed)
#                             vs  skopeo copy oci:DIR docker://...          (target <= 1.0x)
#   (c) re-push of an unchanged image: uploads counted in the registry's access log (target 0)
#   (d) compression, gzip:  kiln save --format oci  vs  skopeo copy docker-archive: oci-archive:
#       (the same layers, uncompressed in both inputs; target <= 1.0x); and what zstd gives
#
# usage: benches/registry.sh [RUNS]   (needs hyperfine, skopeo, docker-registry)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
RUNS=${1:-5}
bench_require hyperfine skopeo docker-registry python3
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-bench-registry.XXXXXX)
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
  level: info
  accesslog:
    disabled: false
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

# The image: FROM scratch, four layers.
CTX=$WORK/ctx
mkdir -p "$CTX"
python3 - "$CTX" <<'PY'
import os, sys
root = sys.argv[1]
words = [w.encode() for w in "the quick brown fox jumps over a lazy dog while kiln pushes layers".split()]
def text(path, n):
    with open(path, "wb") as f:
        i = 0
        while f.tell() < n:
            f.write(b" ".join(words[(i + k) % len(words)] for k in range(12)) + b" %d\n" % i)
            i += 1
text(os.path.join(root, "text1"), 100 << 20)
text(os.path.join(root, "text2"), 60 << 20)
for name, n in (("rand1", 80 << 20), ("rand2", 60 << 20)):
    with open(os.path.join(root, name), "wb") as f:
        for _ in range(n >> 20):
            f.write(os.urandom(1 << 20))
PY
printf 'FROM scratch\nCOPY text1 /text1\nCOPY rand1 /rand1\nCOPY text2 /text2\nCOPY rand2 /rand2\n' > "$CTX/Dockerfile"
export KILN_ROOT=$WORK/src
# bench/local:1 is never pushed: its layers stay uncompressed in the store, for (d).
"$KILN" build -q -t "$REG/bench/src:1" -t bench/local:1 "$CTX" >/dev/null
"$KILN" push -q "$REG/bench/src:1" >/dev/null

ratio() { # name kiln.json peer.json
    python3 - "$@" <<'PY' | tee -a "$RESULTS"
import json, sys
name, k, p = sys.argv[1], *(json.load(open(f))["results"][0]["median"] for f in sys.argv[2:4])
print(f"{name:<34} kiln {k*1000:9.1f} ms   skopeo {p*1000:9.1f} ms   ratio {k/p:6.3f}")
PY
}

# (a) pull.
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -rf $WORK/pull" --export-json "$WORK/a-k.json" \
    "env KILN_ROOT=$WORK/pull $KILN pull -q $REG/bench/src:1" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -rf $WORK/oci" --export-json "$WORK/a-s.json" \
    "skopeo copy -q --src-tls-verify=false docker://$REG/bench/src:1 oci:$WORK/oci:x" >/dev/null
ratio "(a) pull ~300 MB, 4 layers" "$WORK/a-k.json" "$WORK/a-s.json"

# (b) push into an empty repository of an empty registry (the blob files are removed between
# runs; distribution keeps no cache of them here), layers as pulled: nothing to compress.
env KILN_ROOT=$WORK/pull "$KILN" pull -q "$REG/bench/src:1" >/dev/null
env KILN_ROOT=$WORK/pull "$KILN" tag "$REG/bench/src:1" "$REG/bench/dst:1"
skopeo copy -q --src-tls-verify=false "docker://$REG/bench/src:1" "oci:$WORK/oci:x"
wipe="rm -rf $WORK/registry/docker"
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "$wipe" --export-json "$WORK/b-k.json" \
    "env KILN_ROOT=$WORK/pull $KILN push -q $REG/bench/dst:1" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "$wipe" --export-json "$WORK/b-s.json" \
    "skopeo copy -q --dest-tls-verify=false oci:$WORK/oci:x docker://$REG/bench/dst:1" >/dev/null
ratio "(b) push ~300 MB, 4 layers" "$WORK/b-k.json" "$WORK/b-s.json"

# (c) re-push of the unchanged image: count upload requests in the access log.
env KILN_ROOT=$WORK/pull "$KILN" push -q "$REG/bench/dst:1" >/dev/null
before=$(grep -c 'PATCH /v2/bench/dst/blobs/uploads\|PUT /v2/bench/dst/blobs/uploads' "$WORK/registry.log" || true)
env KILN_ROOT=$WORK/pull "$KILN" push -q "$REG/bench/dst:1" >/dev/null
after=$(grep -c 'PATCH /v2/bench/dst/blobs/uploads\|PUT /v2/bench/dst/blobs/uploads' "$WORK/registry.log" || true)
echo "(c) re-push uploads                 $((after - before)) upload requests (0 layer bytes when 0)" | tee -a "$RESULTS"

# (d) compression of the locally built image (uncompressed layers in the store; a pushed
# image's layers are already compressed and would be copied as they are).
"$KILN" save -o "$WORK/src.tar" bench/local:1
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/d-k.json" \
    "$KILN save --format oci -o $WORK/out.tar bench/local:1" >/dev/null
hyperfine -N --runs "$RUNS" --warmup 1 --prepare "rm -f $WORK/out-s.tar" --export-json "$WORK/d-s.json" \
    "skopeo copy -q docker-archive:$WORK/src.tar oci-archive:$WORK/out-s.tar" >/dev/null
ratio "(d) gzip: save --format oci" "$WORK/d-k.json" "$WORK/d-s.json"
hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$WORK/z-k.json" \
    "$KILN save --format oci --compression zstd -o $WORK/out-z.tar bench/local:1" >/dev/null
ratio "(d) zstd: save --format oci" "$WORK/z-k.json" "$WORK/d-s.json"
ls -l "$WORK/out.tar" "$WORK/out-s.tar" "$WORK/out-z.tar" | awk '{print "    " $5 " bytes  " $9}' | tee -a "$RESULTS"

echo
cat "$RESULTS"
