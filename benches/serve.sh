#!/usr/bin/env bash
# Build-server benchmark (issue 6): 50 concurrent small builds (5 tenants x 10) sent to
# `kiln serve`, through the docker CLI and as raw HTTP, against Debian's dockerd (classic
# builder, runc) serving the same 50 builds, measured in the same run. Each build is
# `FROM debian:bookworm` + COPY of a unique file + one RUN, so nothing comes from the cache.
# Reports, per server and client: throughput (builds/s, median of ROUNDS), p50/p99 latency over
# all builds, and the server's peak RSS (VmHWM; for docker, dockerd's own, containerd and the
# runc shims not counted).
# usage: benches/serve.sh [ROUNDS]   (root; docker.io)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
. benches/lib.sh
bench_require dockerd docker python3
bench_debian_tarball
KILN=$(bench_build_kiln)
WORK=$(mktemp -d /var/tmp/kiln-servebench.XXXXXX)
KILN_PID=
cleanup() {
    [ -n "$KILN_PID" ] && kill "$KILN_PID" 2>/dev/null && wait "$KILN_PID" 2>/dev/null
    bench_dockerd_stop "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

# Five tenants, each store provisioned with the Debian base.
CONFIG=$WORK/kiln-server.toml
echo "root = \"$WORK/tenants\"" >"$CONFIG"
for t in 0 1 2 3 4; do
    printf '[[tenants]]\nname = "t%s"\ntoken = "bench-token-of-tenant-%s-0123456789"\nconcurrent_builds = 10\n' "$t" "$t" >>"$CONFIG"
    "$KILN" --root "$WORK/tenants/t$t" import --change 'CMD ["bash"]' "$TARBALL" debian:bookworm >/dev/null
done
"$KILN" --root "$WORK/tenants/t0" save -o "$WORK/base.tar" debian:bookworm
"$KILN" --root "$WORK/kiln" serve --config "$CONFIG" -H "unix://$WORK/kiln.sock" 2>"$WORK/kiln.log" &
KILN_PID=$!
for _ in $(seq 100); do [ -S "$WORK/kiln.sock" ] && break; sleep 0.1; done

bench_dockerd "$WORK"
docker load -q -i "$WORK/base.tar" >/dev/null
DOCKERD_PID=$(cat "$WORK/docker.pid")

python3 - "$WORK" "$ROUNDS" "$KILN_PID" "$DOCKERD_PID" <<'PY'
import io, json, os, socket, statistics, subprocess, sys, tarfile, threading, time

work, rounds, kiln_pid, dockerd_pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tokens = [f"bench-token-of-tenant-{t}-0123456789" for t in range(5)]
N = 50

def context(tag, i):
    d = os.path.join(work, "ctx", tag, str(i))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "Dockerfile"), "w") as f:
        f.write("FROM debian:bookworm\nCOPY mark /mark\nRUN echo built > /built\n")
    with open(os.path.join(d, "mark"), "w") as f:
        f.write(f"{tag}-{i}\n")
    return d

def tar_of(d):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        for name in ("Dockerfile", "mark"):
            t.add(os.path.join(d, name), arcname=name)
    return b.getvalue()

def raw_build(sock, token, body, tag):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    head = (f"POST /build?t={tag}&q=1 HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n"
            f"Content-Type: application/x-tar\r\nContent-Length: {len(body)}\r\n")
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    s.sendall((head + "\r\n").encode() + body)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    if b"errorDetail" in data or b" 200 OK" not in data.split(b"\r\n", 1)[0]:
        raise SystemExit(f"build failed: {data[-500:]!r}")

def docker_config(token):
    cfg = os.path.join(work, "cfg", token[:24] if token else "none")
    os.makedirs(cfg, exist_ok=True)
    with open(os.path.join(cfg, "config.json"), "w") as f:
        json.dump({"HttpHeaders": {"Authorization": f"Bearer {token}"}} if token else {}, f)
    return cfg

configs = {t: docker_config(t) for t in tokens + [None]}

def cli_build(sock, token, d, tag):
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_BUILDKIT="0",
               DOCKER_CONFIG=configs[token])
    r = subprocess.run(["docker", "build", "-q", "-t", tag, d], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(r.stderr.decode(errors="replace")[-500:])

def round_(server, client, r):
    sock = os.path.join(work, "kiln.sock" if server == "kiln" else "docker.sock")
    tag = f"{server}-{client}-{r}"
    jobs = []
    for i in range(N):
        d = context(tag, i)
        token = tokens[i % 5] if server == "kiln" else None
        jobs.append((d, token, tar_of(d), f"bench/{tag}:{i}"))
    lat = [0.0] * N
    errors = []
    def one(i):
        d, token, body, t = jobs[i]
        t0 = time.monotonic()
        try:
            if client == "raw":
                raw_build(sock, token, body, t)
            else:
                cli_build(sock, token, d, t)
        except BaseException as e:
            errors.append(f"{t}: {e}")
        lat[i] = time.monotonic() - t0
    t0 = time.monotonic()
    th = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in th: t.start()
    for t in th: t.join()
    wall = time.monotonic() - t0
    if errors:
        raise SystemExit(f"{server}/{client}: {errors[:3]}")
    return N / wall, lat

def hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

# Warm-up, not measured: each store unpacks the Debian base once.
for t in range(5):
    d = context("warm", t)
    raw_build(os.path.join(work, "kiln.sock"), tokens[t], tar_of(d), f"warm:{t}")
raw_build(os.path.join(work, "docker.sock"), None, tar_of(context("warm", 9)), "warm:9")

results = {}
for server in ("kiln", "docker"):
    for client in ("raw", "cli"):
        tps, lats = [], []
        for r in range(rounds):
            t, l = round_(server, client, r)
            tps.append(t)
            lats += l
        results[(server, client)] = (statistics.median(tps), pct(lats, 50), pct(lats, 99))
rss = {"kiln": hwm(kiln_pid), "docker": hwm(dockerd_pid)}
print(f"{N} concurrent builds (5 tenants for kiln), {rounds} rounds; FROM debian + COPY + RUN, no cache")
for client in ("raw", "cli"):
    k, d = results[("kiln", client)], results[("docker", client)]
    print(f"{client:>3}: kiln {k[0]:6.2f} builds/s  p50 {k[1]*1000:7.0f} ms  p99 {k[2]*1000:7.0f} ms | "
          f"dockerd {d[0]:6.2f} builds/s  p50 {d[1]*1000:7.0f} ms  p99 {d[2]*1000:7.0f} ms | "
          f"throughput kiln/dockerd {k[0]/d[0]:5.2f}x")
print(f"peak RSS: kiln serve {rss['kiln']:.0f} MiB, dockerd {rss['docker']:.0f} MiB")
PY
