# Shared by the benchmark scripts (sourced, not run).

# bench_require TOOL...: fails with one line when a tool is missing.
bench_require() {
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "bench: $t is not installed" >&2; exit 1; }
    done
}

# bench_build_kiln: builds kiln in release and prints its executable's path (cargo says where:
# .cargo/config.toml names the target, so it is not target/release).
bench_build_kiln() {
    cargo build --release --quiet --message-format=json | python3 -c '
import json, sys
exes = [m["executable"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kiln"]
print(exes[-1])'
}

# median FILE: the median seconds of hyperfine's --export-json FILE.
median() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$1"
}

# bench_dockerd WORK: starts a private dockerd (no bridge, no iptables) with its state in WORK
# and points DOCKER_HOST at it; bench_dockerd_stop WORK stops it.
bench_dockerd() {
    dockerd --data-root "$1/docker" --exec-root "$1/docker-exec" --pidfile "$1/docker.pid" \
        -H "unix://$1/docker.sock" --bridge=none --iptables=false --ip-masq=false >"$1/dockerd.log" 2>&1 &
    export DOCKER_HOST=unix://$1/docker.sock
    for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
    docker version >/dev/null
}
bench_dockerd_stop() {
    [ -f "$1/docker.pid" ] && kill "$(cat "$1/docker.pid")" 2>/dev/null && sleep 2
    umount "$1/docker-exec/netns/default" 2>/dev/null || true
}

# bench_debian_tarball: sets TARBALL to the Debian base that scripts/make-debian-base caches.
bench_debian_tarball() {
    TARBALL=${XDG_CACHE_HOME:-$HOME/.cache}/kiln/debian-bookworm-minbase-v2.tar.gz
    [ -f "$TARBALL" ] || { echo "bench: $TARBALL is missing: run scripts/make-debian-base --tarball" >&2; exit 1; }
}

# bench_buildah WORK: sets BUILDAH, a buildah command line with its storage in WORK (runc: crun
# cannot run on the hybrid cgroup layout of these hosts); bench_buildah_clean WORK empties it.
bench_buildah() {
    export BUILDAH_RUNTIME=/usr/bin/runc
    BUILDAH=(buildah --root "$1/buildah" --runroot "$1/buildah-run" --storage-driver overlay)
}
bench_buildah_clean() {
    buildah --root "$1/buildah" --runroot "$1/buildah-run" rmi -af >/dev/null 2>&1 || true
}
