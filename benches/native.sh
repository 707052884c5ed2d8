#!/usr/bin/env bash
# Native-sandbox benchmark (issue 4), kiln against buildah and docker's classic builder, all
# on the same Debian bookworm base (kiln's `scripts/make-debian-base` tarball, loaded into each
# tool), measured in the same run:
#   (a) 20 x `RUN true` FROM debian:bookworm: cold (no build cache; the base image stays) and
#       fully cached. Target: <= 15 ms per step.
#   (b) the seed (examples/redis: apt-get update && apt-get install -y redis-server) cold,
#       against the same apt-get commands in a bare `unshare` namespace over a fresh overlay
#       of the same rootfs. Target: kiln <= 1.1 x bare.
#   (c) the seed fully cached. Target: <= 10 ms.
# The seed needs the network (Debian's mirrors); its runs vary with the mirror, so (b) uses
# medians of RUNS_SEED runs.
# usage: benches/native.sh [RUNS] [RUNS_SEED]   (root; hyperfine, buildah, docker.io)
#        PEERS=0 benches/native.sh ...   kiln and the bare unshare only (no buildah, docker)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10}
RUNS_SEED=${2:-5}
PEERS=${PEERS:-1}
. benches/lib.sh
bench_require hyperfine buildah dockerd docker unshare
bench_debian_tarball
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-nativebench.XXXXXX)
cleanup() {
    umount "$WORK/bare/merged/dev" "$WORK/bare/merged" 2>/dev/null || true
    bench_dockerd_stop "$WORK"
    bench_buildah_clean "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_ROOT=$WORK/kiln
bench_buildah "$WORK"
B="${BUILDAH[*]}"

bench_dockerd "$WORK"
export DOCKER_BUILDKIT=0

# One base for all: kiln imports the tarball, the peers load kiln's export of it.
"$KILN" import --change 'CMD ["bash"]' "$TARBALL" debian:bookworm >/dev/null
"$KILN" save -o "$WORK/base.tar" debian:bookworm
docker load -q -i "$WORK/base.tar" >/dev/null
"${BUILDAH[@]}" pull -q "docker-archive:$WORK/base.tar" >/dev/null
"${BUILDAH[@]}" tag "$("${BUILDAH[@]}" images -q | head -1)" debian:bookworm

R20=$WORK/r20; mkdir -p "$R20"
{ echo "FROM debian:bookworm"; for i in $(seq 1 20); do echo "RUN true # $i"; done; } > "$R20/Dockerfile"
SEED=$PWD/examples/redis

measure() { # runs prepare command -> median seconds
    hyperfine -N --warmup 1 --runs "$1" --prepare "$2" --export-json "$WORK/m.json" "$3" >/dev/null
    median "$WORK/m.json"
}
script() { # name body -> path of an executable script
    printf '#!/bin/sh\n%s\n' "$2" > "$WORK/$1"; chmod +x "$WORK/$1"; echo "$WORK/$1"
}

K_CLEAN=$(script k-clean "$KILN rmi bench/run me/redis >/dev/null 2>&1; $KILN prune --all -f >/dev/null 2>&1; true")
B_CLEAN=$(script b-clean "$B rmi -f bench/run me/redis >/dev/null 2>&1; $B rmi --prune >/dev/null 2>&1; true")
D_CLEAN=$(script d-clean "docker rmi -f bench/run me/redis >/dev/null 2>&1; docker image prune -f >/dev/null 2>&1; true")

# (a) 20 x RUN true.
kc=$(measure "$RUNS" "$K_CLEAN" "$KILN build -q -t bench/run $R20")
bc=nan dc=nan bw=nan dw=nan sb=nan sd=nan wb=nan wd=nan
if [ "$PEERS" = 1 ]; then
bc=$(measure "$RUNS" "$B_CLEAN" "$B bud --layers -q -t bench/run $R20")
dc=$(measure "$RUNS" "$D_CLEAN" "docker build -q -t bench/run $R20")
fi
kw=$(measure "$RUNS" true "$KILN build -q -t bench/run $R20")
if [ "$PEERS" = 1 ]; then
bw=$(measure "$RUNS" true "$B bud --layers -q -t bench/run $R20")
dw=$(measure "$RUNS" true "docker build -q -t bench/run $R20")
fi

# (b) the seed, cold; the bare baseline runs the same commands with unshare + chroot over a
# fresh overlay of the unpacked base.
mkdir -p "$WORK/bare/rootfs" "$WORK/bare/merged"
tar -xzf "$TARBALL" -C "$WORK/bare/rootfs"
# The peers' builds and this unpacking wrote a few hundred MiB: measure after it reached the
# disk, not while writeback competes with the first engine measured (see README.md).
sync
BARE_PREP=$(script bare-prep "
umount $WORK/bare/merged/dev $WORK/bare/merged 2>/dev/null
rm -rf $WORK/bare/upper $WORK/bare/work; mkdir -p $WORK/bare/upper $WORK/bare/work
mount -t overlay overlay -o lowerdir=$WORK/bare/rootfs,upperdir=$WORK/bare/upper,workdir=$WORK/bare/work $WORK/bare/merged
mount --bind /dev $WORK/bare/merged/dev
cp /etc/resolv.conf $WORK/bare/merged/etc/resolv.conf")
BARE_RUN=$(script bare-run "exec unshare --mount --pid --ipc --uts --fork --mount-proc=$WORK/bare/merged/proc \
chroot $WORK/bare/merged /bin/sh -c 'apt-get update && apt-get install -y redis-server' >/dev/null")
sk=$(measure "$RUNS_SEED" "$K_CLEAN" "$KILN build -q --network=host -t me/redis $SEED")
su=$(measure "$RUNS_SEED" "$BARE_PREP" "$BARE_RUN")
if [ "$PEERS" = 1 ]; then
sb=$(measure "$RUNS_SEED" "$B_CLEAN" "$B bud --layers -q --network=host -t me/redis $SEED")
sd=$(measure "$RUNS_SEED" "$D_CLEAN" "docker build -q --network=host -t me/redis $SEED")
fi

# (c) the seed, fully cached.
"$KILN" build -q --network=host -t me/redis "$SEED" >/dev/null
wk=$(measure "$RUNS" true "$KILN build -q --network=host -t me/redis $SEED")
if [ "$PEERS" = 1 ]; then
"${BUILDAH[@]}" bud --layers -q --network=host -t me/redis "$SEED" >/dev/null
docker build -q --network=host -t me/redis "$SEED" >/dev/null
wb=$(measure "$RUNS" true "$B bud --layers -q --network=host -t me/redis $SEED")
wd=$(measure "$RUNS" true "docker build -q --network=host -t me/redis $SEED")
fi

python3 - "$kc" "$bc" "$dc" "$kw" "$bw" "$dw" "$sk" "$su" "$sb" "$sd" "$wk" "$wb" "$wd" <<'PY'
import sys
kc, bc, dc, kw, bw, dw, sk, su, sb, sd, wk, wb, wd = map(float, sys.argv[1:])
def row(name, k, b, d):
    r = lambda x, y: f"{x/y:7.4f}" if y == y else "    n/a"
    print(f"{name:<28} kiln {k*1000:9.1f} ms   buildah {b*1000:9.1f} ms   docker {d*1000:9.1f} ms   "
          f"kiln/buildah {r(k, b)}   kiln/docker {r(k, d)}")
row("20 x RUN true, cold", kc, bc, dc)
row("  per RUN step", kc / 20, bc / 20, dc / 20)
row("20 x RUN true, cached", kw, bw, dw)
row("seed, cold", sk, sb, sd)
print(f"{'seed, cold vs bare unshare':<28} kiln {sk*1000:9.1f} ms   unshare {su*1000:9.1f} ms   kiln/unshare {sk/su:7.4f}")
row("seed, cached", wk, wb, wd)
PY
