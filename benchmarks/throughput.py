"""gymhttp throughput benchmark: every figure measured in one run, on this machine.

    python benchmarks/throughput.py           # the full run (about 80 seconds)
    python benchmarks/throughput.py --quick   # a smoke run (the tests use it)

It starts the server as a separate process (with --import bench_envs for the
Atari-sized and the sleepy env), and a second one with busy-polling off for
comparison, and prints a Markdown table with the ratios that the performance
targets are stated in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

import bench_envs  # noqa: E402  (registers Atari here too, for the in-process rows)
import client  # noqa: E402
import gymhttp  # noqa: E402

# The floor: an echo server in another process.  With "poll" it busy-polls
# for the next message instead of blocking, as gymhttp does by default.
ECHO_SERVER = r"""
import select, socket, sys
spin = sys.argv[1:] == ["poll"]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    while True:
        while spin and not poller.poll(0):
            pass
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.close()
"""


# The step floor: the leanest Python HTTP server that steps CartPole.  One
# keep-alive connection; it reads the request line, the headers and a
# Content-Length body, steps, and writes one JSON reply.  No routing, no
# checks.  With "poll" it busy-polls for the next request, as gymhttp does.
STEP_FLOOR_SERVER = r"""
import json, os, select, socket, sys, gymnasium
spin, relay, handoff = "poll" in sys.argv, "relay" in sys.argv, "handoff" in sys.argv
env = gymnasium.make("CartPole-v1")
env.reset(seed=0)


def step(body):
    action = json.loads(body)["action"]
    obs, reward, terminated, truncated, info = env.step(action)
    if terminated or truncated:
        obs, info = env.reset()
    return json.dumps({"observation": obs.tolist(), "reward": float(reward), "done": terminated or truncated,
                       "terminated": terminated, "truncated": truncated, "info": info}).encode()


if relay or handoff:  # the step in a child process, over a socket pair: the least that process isolation costs
    ours, theirs = socket.socketpair()
    if os.fork() == 0:
        ours.close()
        client = None
        while True:
            if not handoff:
                body = theirs.recv(65536)
                if not body:
                    os._exit(0)
                theirs.sendall(step(body))
                continue
            # With "handoff" the child also writes the reply, to the client's socket (passed once, SCM_RIGHTS).
            body, fds, _, _ = socket.recv_fds(theirs, 65536, 1)
            if not body:
                os._exit(0)
            if fds:
                client = socket.socket(fileno=fds[0])
            body = step(body)
            client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            theirs.sendall(b"done")
    theirs.close()
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    rfile = conn.makefile("rb")
    passed = False  # the child has this connection's socket
    while True:
        while spin and not poller.poll(0):
            pass
        if not rfile.readline():
            break
        length = 0
        while True:
            line = rfile.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = rfile.read(length)
        if handoff:
            socket.send_fds(ours, [body], [] if passed else [conn.fileno()])
            passed = True
            ours.recv(65536)  # the child's "done": the reply has gone
            continue
        if relay:
            ours.sendall(body)
            body = ours.recv(65536)
        else:
            body = step(body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    conn.close()
"""


def rate(step, seconds: float) -> float:
    """Calls of ``step`` per second, over about ``seconds``."""
    step()  # warm up
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            step()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def start_server(extra=(), port: int = 0) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "gymhttp.py"), "-p", str(port), "--import", "bench_envs", "--max-envs", "4096", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    line = proc.stdout.readline()
    url = line.split(" serving on ")[1].split()[0].rstrip("/")
    return proc, url


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- the measurements ---------------------------------------------------------


def alternating_steps(env: Any) -> Callable[[], None]:
    """One step of ``env`` (a gymnasium.Env, reset already) per call, actions
    0 and 1 in turn, resetting where an episode ends."""
    state = {"t": 0}

    def step():
        state["t"] += 1
        _, _, terminated, truncated, _ = env.step(state["t"] & 1)
        if terminated or truncated:
            env.reset()

    return step


def cycling_steps(env: Any, actions: int) -> Callable[[], None]:
    """One step of ``env`` per call, its actions 0..actions-1 in turn,
    resetting where an episode ends."""
    state = {"t": 0}

    def step():
        state["t"] += 1
        _, _, terminated, truncated, _ = env.step(state["t"] % actions)
        if terminated or truncated:
            env.reset()

    return step


PONG_WRAPPERS = [{"name": "AtariPreprocessing"}, {"name": "FrameStackObservation", "kwargs": {"stack_size": 4}}]


def pong(url: str | None, seconds: float, preprocessed: bool) -> float:
    """Steps/s of Pong, raw or preprocessed (AtariPreprocessing and a stack of
    4 frames, applied where the env is): in-process, or through
    client.RemoteEnv from the server at ``url``."""
    kwargs = {"frameskip": 1} if preprocessed else {}
    wrappers = PONG_WRAPPERS if preprocessed else []
    if url is None:
        env = gymnasium.make("ALE/Pong-v5", **kwargs)
        for wrapper in wrappers:
            env = getattr(gymnasium.wrappers, wrapper["name"])(env, **wrapper.get("kwargs", {}))
    else:
        env = client.RemoteEnv(url, "ALE/Pong-v5", wrappers=wrappers, **kwargs)
    env.reset(seed=0)
    try:
        return rate(cycling_steps(env, 6), seconds)
    finally:
        env.close()


def in_process(seconds: float) -> float:
    env = gymnasium.make("CartPole-v1")
    env.reset(seed=0)
    return rate(alternating_steps(env), seconds)


def start_echo(poll: bool) -> tuple[subprocess.Popen, int]:
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, *(["poll"] if poll else [])], stdout=subprocess.PIPE, text=True)
    return echo, int(echo.stdout.readline())


def tcp_floor(port: int, seconds: float, poll: bool = False) -> float:
    """Round trips/s of 64 bytes to the echo server; with ``poll`` this end busy-polls too."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    message = b"x" * 64
    poller = select.poll()
    poller.register(sock, select.POLLIN)

    def roundtrip():
        sock.sendall(message)
        while poll and not poller.poll(0):
            pass
        sock.recv(65536)

    try:
        return rate(roundtrip, seconds)
    finally:
        sock.close()


def start_step_floor(poll: bool, relay: bool = False, handoff: bool = False) -> tuple[subprocess.Popen, int]:
    flags = (["poll"] if poll else []) + (["relay"] if relay else []) + (["handoff"] if handoff else [])
    proc = subprocess.Popen([sys.executable, "-c", STEP_FLOOR_SERVER, *flags], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def step_floor(port: int, seconds: float, poll: bool) -> float:
    """Steps/s of the leanest client of the step floor: it writes the request,
    reads the reply (busy-polling for it with ``poll``) and parses its JSON."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rfile = sock.makefile("rb")
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    state = {"t": 0}

    def step():
        state["t"] += 1
        body = b'{"action": %d}' % (state["t"] & 1)
        sock.sendall(b"POST /v1/envs/floor/step/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        while poll and not poller.poll(0):
            pass
        rfile.readline()
        length = 0
        while True:
            line = rfile.readline()
            if line == b"\r\n":
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        json.loads(rfile.read(length))

    try:
        return rate(step, seconds)
    finally:
        rfile.close()
        sock.close()


def single_client(url: str, seconds: float, spin_us: int = 1000) -> float:
    with client.Client(url, spin_us=spin_us) as c:
        iid = c.env_create("CartPole-v1", seed=0)
        c.reset(iid)
        state = {"t": 0}

        def step():
            state["t"] += 1
            _, _, terminated, truncated, _ = c.step(iid, state["t"] & 1)
            if terminated or truncated:
                c.reset(iid)

        try:
            return rate(step, seconds)
        finally:
            c.env_close(iid)


def vector(url: str, num_envs: int, encoding: str, seconds: float, spin_us: int = 1000) -> float:
    """Env-steps per second of a CartPole vector instance over HTTP."""
    rng = np.random.default_rng(0)
    with client.Client(url, spin_us=spin_us) as c:
        iid = c.env_create("CartPole-v1", num_envs=num_envs, encoding=encoding, seed=0)
        c.reset(iid)

        def step():
            actions = rng.integers(0, 2, num_envs)
            c.step(iid, client.encode_array(actions) if encoding == "base64" else actions.tolist())

        try:
            return rate(step, seconds) * num_envs
        finally:
            c.env_close(iid)


def atari(url: str, encoding: str, seconds: float) -> float:
    with client.Client(url) as c:
        iid = c.env_create("Bench/AtariSized-v0", encoding=encoding)
        c.reset(iid)
        try:
            return rate(lambda: c.step(iid, 0), seconds)
        finally:
            c.env_close(iid)


def parallel(url: str, env_id: str, clients: int, seconds: float) -> float:
    """Aggregate steps/s of ``clients`` threads, each with its own instance."""
    counts = [0] * clients
    ready = threading.Barrier(clients + 1)
    stop = threading.Event()

    def worker(k):
        with client.Client(url) as c:
            iid = c.env_create(env_id, seed=k)
            c.reset(iid)
            ready.wait()
            while not stop.is_set():
                _, _, terminated, truncated, _ = c.step(iid, 0)
                counts[k] += 1
                if terminated or truncated:
                    c.reset(iid)
            c.env_close(iid)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    total = sum(counts)
    elapsed = time.perf_counter() - started
    for t in threads:
        t.join()
    return total / elapsed


# One actor in a process of its own, as a lab's actors are: it makes its
# instance, says its pid, steps for the seconds it is told, says how many.
CLIENT_PROCESS = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import client
c = client.Client(sys.argv[2], spin_us=int(sys.argv[5]))
iid = c.env_create(sys.argv[3], seed=int(sys.argv[4]))
c.reset(iid)
print(c.env_details(iid)["pid"], flush=True)
seconds = float(sys.stdin.readline())
count, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    for _ in range(10):
        _, _, terminated, truncated, _ = c.step(iid, count & 1)
        count += 1
        if terminated or truncated:
            c.reset(iid)
print(count, flush=True)
sys.stdin.read()  # the parent reads the processes' CPU first
c.env_close(iid)
"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_processes(url: str, server_pid: int, env_id: str, clients: int, seconds: float,
                     spin_us: int = 1000) -> tuple[float, float, float]:
    """``clients`` client processes, each stepping an instance of its own:
    (aggregate steps/s, the server process's CPU seconds a step, the
    instance processes' CPU seconds a step, all of them together)."""
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT_PROCESS, ROOT, url, env_id, str(k), str(spin_us)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for k in range(clients)]
    try:
        pids = [int(proc.stdout.readline()) for proc in procs]
        server_before, instances_before = cpu_seconds(server_pid), sum(cpu_seconds(pid) for pid in pids if pid)
        for proc in procs:
            proc.stdin.write(f"{seconds}\n")
            proc.stdin.flush()
        steps = sum(int(proc.stdout.readline()) for proc in procs)
        server_cpu = cpu_seconds(server_pid) - server_before
        instances_cpu = sum(cpu_seconds(pid) for pid in pids if pid) - instances_before
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(30)
    return steps / seconds, server_cpu / steps, instances_cpu / steps


def sequential(url: str, env_id: str, instances: int, seconds: float) -> float:
    """Steps/s of one client stepping ``instances`` instances in turn."""
    with client.Client(url) as c:
        ids = [c.env_create(env_id) for _ in range(instances)]
        for iid in ids:
            c.reset(iid)

        def round_robin():
            for iid in ids:
                c.step(iid, 0)

        try:
            return rate(round_robin, seconds) * instances
        finally:
            for iid in ids:
                c.env_close(iid)


def private_bytes(pid: int) -> int:
    """A process's own memory: resident pages it shares with no other process."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def memory_per_instance(url: str, pid: int, count: int) -> tuple[float, float, float]:
    """Per idle CartPole instance: (the server's growth, its process's private
    memory, its process's resident memory); both 0 without instance processes."""
    with client.Client(url) as c:
        warm = [c.env_create("CartPole-v1") for _ in range(5)]
        for iid in warm:
            c.reset(iid)
        before = rss_bytes(pid)
        ids = [c.env_create("CartPole-v1") for _ in range(count)]
        for iid in ids:
            c.reset(iid)
        after = rss_bytes(pid)
        pids = [c.env_details(iid)["pid"] for iid in ids]
        own = [private_bytes(p) for p in pids if p]
        resident = [rss_bytes(p) for p in pids if p]
        for iid in ids + warm:
            c.env_close(iid)
    mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
    return (after - before) / count, mean(own), mean(resident)


def create_latency(url: str, count: int) -> float:
    """Median seconds of one create (with its first reset) and close, done one after another."""
    times = []
    with client.Client(url) as c:
        for _ in range(count):
            started = time.perf_counter()
            iid = c.env_create("CartPole-v1")
            times.append(time.perf_counter() - started)
            c.env_close(iid)
    return sorted(times)[len(times) // 2]


def remote_env(url: str, seconds: float) -> float:
    """Steps/s of a client.RemoteEnv (a gymnasium.Env) stepping CartPole."""
    env = client.RemoteEnv(url, "CartPole-v1")
    env.reset(seed=0)
    try:
        return rate(alternating_steps(env), seconds)
    finally:
        env.close()


def remote_vector_env(url: str, num_envs: int, seconds: float) -> float:
    """Env-steps/s of a client.RemoteVectorEnv (a gymnasium VectorEnv) of CartPole."""
    envs = client.RemoteVectorEnv(url, "CartPole-v1", num_envs)
    envs.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, (64, num_envs))
    state = {"t": 0}

    def step():
        state["t"] += 1
        envs.step(actions[state["t"] % 64])

    try:
        return rate(step, seconds) * num_envs
    finally:
        envs.close()


def start_cluster(work: str) -> tuple[list, str] | None:
    """Two thread-mode nodes behind nginx (deploy/nginx_conf.py), as README
    says; None without nginx."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.path.exists(p)), None)
    if nginx is None:
        return None
    ports = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    procs = []
    for name, port, peer in (("a", ports[1], ports[2]), ("b", ports[2], ports[1])):
        node, _ = start_server(["--isolation", "thread", "--node-id", name, "--peers", f"http://127.0.0.1:{peer}"], port=port)
        procs.append(node)
    conf = os.path.join(work, "gymhttp.conf")
    with open(conf, "w") as f:
        subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "nginx_conf.py"), "--listen", f"127.0.0.1:{ports[0]}",
                        "--node", f"a=127.0.0.1:{ports[1]}", "--node", f"b=127.0.0.1:{ports[2]}"], stdout=f, check=True)
    os.chmod(work, 0o755)
    gateway = subprocess.Popen([nginx, "-p", work, "-c", conf, "-e", os.path.join(work, "error.log"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(gateway)
    url = f"http://127.0.0.1:{ports[0]}"
    for _ in range(200):
        try:
            with client.Client(url) as c:
                c.env_list_all()
            break
        except (ConnectionError, client.ServerError):
            time.sleep(0.05)
    return procs, url


def heavy_in_process(seconds: float) -> float:
    import bench_envs

    return rate(bench_envs.heavy_work, seconds)


# -- the run --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and print the table; returns 0, or 1 if a target is missed (with --check)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny durations, for a smoke test (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each measurement (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed (default: %(default)s)")
    args = parser.parse_args(argv)
    seconds = 0.05 if args.quick else args.seconds
    sizes = (64,) if args.quick else (64, 256, 1024)
    gymhttp.pick_headless_gl()  # once here: the servers started below inherit MUJOCO_GL instead of each probing

    echo, echo_port = start_echo(poll=False)
    polling_echo, polling_echo_port = start_echo(poll=True)
    step_floor_proc, step_floor_port = start_step_floor(poll=False)
    polling_step_floor_proc, polling_step_floor_port = start_step_floor(poll=True)
    relay_floor_proc, relay_floor_port = start_step_floor(poll=True, relay=True)
    handoff_floor_proc, handoff_floor_port = start_step_floor(poll=True, handoff=True)
    server, url = start_server()  # the defaults: --isolation process, connections handed off
    relay, relay_url = start_server(["--handoff", "off"])  # every request relayed through the server process
    threads, threads_url = start_server(["--isolation", "thread"])
    still, still_url = start_server(["--spin-us", "0"])  # busy-polling off, for comparison
    rows: list[tuple[str, str, str]] = []
    checks: list[tuple[str, float, str, bool]] = []

    def check(name: str, value: float, wanted: str, ok: bool) -> None:
        checks.append((name, value, wanted, ok))

    try:
        # Best of three everywhere, alternating the things compared, so that
        # both sides of a ratio see the same machine (this VM's speed wanders).
        rounds = 1 if args.quick else 3
        best: dict[str, float] = {}

        def measure(name: str, function, *a, **kw) -> None:
            best[name] = max(best.get(name, 0.0), function(*a, **kw))

        for _ in range(rounds):
            measure("local", in_process, seconds)
            measure("floor", tcp_floor, echo_port, seconds)
            measure("step floor", step_floor, step_floor_port, seconds, poll=False)
            measure("single", single_client, url, seconds)
            measure("polling floor", tcp_floor, polling_echo_port, seconds, poll=True)
            measure("polling step floor", step_floor, polling_step_floor_port, seconds, poll=True)
            measure("relay floor", step_floor, relay_floor_port, seconds, poll=True)
            measure("handoff floor", step_floor, handoff_floor_port, seconds, poll=True)
            measure("single thread", single_client, threads_url, seconds)
            measure("single relay", single_client, relay_url, seconds)
            measure("single still", single_client, still_url, seconds, spin_us=0)
        local, floor, polling_floor = best["local"], best["floor"], best["polling floor"]
        single, single_thread, step_floor_ = best["single"], best["single thread"], best["polling step floor"]
        rows += [
            ("CartPole in-process, one env", f"{local:,.0f} steps/s", ""),
            ("bare TCP round trips between two processes (the floor)", f"{floor:,.0f} round trips/s", ""),
            ("the same, both ends busy-polling", f"{polling_floor:,.0f} round trips/s", f"{polling_floor / floor:.2f} x floor"),
            ("the leanest Python HTTP server and client stepping CartPole (the step floor)", f"{best['step floor']:,.0f} steps/s", ""),
            ("the same, both ends busy-polling (the polling step floor)", f"{step_floor_:,.0f} steps/s",
             f"{step_floor_ / best['step floor']:.2f} x step floor"),
            ("the same, the step done in a child process (the least a process per instance costs)",
             f"{best['relay floor']:,.0f} steps/s", f"{best['relay floor'] / step_floor_:.2f} x polling step floor"),
            ("the same, the child also writing the reply to the client's socket itself (one hop fewer)",
             f"{best['handoff floor']:,.0f} steps/s", f"{best['handoff floor'] / step_floor_:.2f} x polling step floor"),
            ("CartPole through client.Client, one client, --isolation process", f"{single:,.0f} steps/s",
             f"{single / step_floor_:.2f} x polling step floor, {single / floor:.2f} x floor"),
            ("the same, --isolation thread", f"{single_thread:,.0f} steps/s",
             f"{single_thread / step_floor_:.2f} x polling step floor, {single_thread / floor:.2f} x floor"),
            ("the same, process, --handoff off (every request relayed by the server process)", f"{best['single relay']:,.0f} steps/s",
             f"{best['single relay'] / step_floor_:.2f} x polling step floor, {best['single relay'] / single_thread:.2f} x thread"),
            ("the same, process, busy-polling off (--spin-us 0, spin_us=0)", f"{best['single still']:,.0f} steps/s",
             f"{best['single still'] / best['step floor']:.2f} x step floor"),
        ]
        check("single client / TCP floor", single / floor, ">= 0.25", single / floor >= 0.25)
        check("one client, process / polling step floor", single / step_floor_, ">= 0.6", single / step_floor_ >= 0.6)
        check("one client, thread / polling step floor", single_thread / step_floor_, ">= 0.8", single_thread / step_floor_ >= 0.8)
        check("one client, process (handoff) / thread", single / single_thread, ">= 0.9", single / single_thread >= 0.9)
        check("one client, process (handoff) / polling step floor", single / step_floor_, ">= 0.55", single / step_floor_ >= 0.55)
        vec = {}
        vec_local = 0.0  # the vector rows' baseline, measured between them, as each ratio's two sides are
        for n in sizes:
            for _ in range(rounds):
                vec_local = max(vec_local, in_process(seconds))
                for encoding in ("list", "base64"):
                    vec[n, encoding] = max(vec.get((n, encoding), 0.0), vector(url, n, encoding, seconds))
                if n == 256:
                    vec[n, "thread"] = max(vec.get((n, "thread"), 0.0), vector(threads_url, n, "base64", seconds))
                    vec[n, "relay"] = max(vec.get((n, "relay"), 0.0), vector(relay_url, n, "base64", seconds))
                    vec[n, "still"] = max(vec.get((n, "still"), 0.0), vector(still_url, n, "base64", seconds, spin_us=0))
        rows.append(("CartPole in-process, one env, measured between the vector rows (their baseline)", f"{vec_local:,.0f} steps/s", ""))
        for n in sizes:
            for encoding in ("list", "base64"):
                rows.append((f"CartPole vector, {n} envs, {encoding}", f"{vec[n, encoding]:,.0f} env-steps/s",
                             f"{vec[n, encoding] / vec_local:.2f} x in-process"))
            for key, what in (("thread", "base64, --isolation thread"), ("relay", "base64, --handoff off"),
                              ("still", "base64, busy-polling off")):
                if (n, key) in vec:
                    rows.append((f"CartPole vector, {n} envs, {what}", f"{vec[n, key]:,.0f} env-steps/s",
                                 f"{vec[n, key] / vec_local:.2f} x in-process"))
        if (256, "base64") in vec:
            ratio = vec[256, "base64"] / vec_local
            check("256-env vector base64 / in-process", ratio, ">= 4", ratio >= 4)
            check("256-env vector base64 / in-process, handoff (issue 19)", ratio, ">= 6", ratio >= 6)
        remote = max(remote_env(url, seconds) for _ in range(rounds))
        rows.append(("client.RemoteEnv (a gymnasium.Env), CartPole", f"{remote:,.0f} steps/s", f"{remote / local:.2f} x in-process"))
        for n in (8, 64):
            remote_vec = max(remote_vector_env(url, n, seconds) for _ in range(rounds))
            rows.append((f"client.RemoteVectorEnv (a VectorEnv), {n} CartPole envs", f"{remote_vec:,.0f} env-steps/s",
                         f"{remote_vec / remote:.1f} x RemoteEnv"))
        frames = {enc: max(atari(url, enc, seconds) for _ in range(rounds)) for enc in ("list", "base64")}
        rows.append(("210x160x3 uint8 frames, list", f"{frames['list']:,.1f} steps/s", ""))
        rows.append(("210x160x3 uint8 frames, base64", f"{frames['base64']:,.1f} steps/s", f"{frames['base64'] / frames['list']:.1f} x list"))
        check("frames base64 / list", frames["base64"] / frames["list"], ">= 10", frames["base64"] / frames["list"] >= 10)
        if bench_envs.ale_py is None:
            rows.append(("Pong (ALE/Pong-v5)", "ale-py not installed", ""))
        else:  # real Atari frames: raw, and preprocessed on the server
            for preprocessed in (False, True):
                if preprocessed and importlib.util.find_spec("cv2") is None:
                    rows.append(("Pong preprocessed", "opencv-python-headless not installed", ""))
                    continue
                atari_best: dict[str, float] = {}
                for _ in range(rounds):
                    for name, address in (("local", None), ("process", url), ("thread", threads_url)):
                        atari_best[name] = max(atari_best.get(name, 0.0), pong(address, seconds, preprocessed))
                what = "Pong, AtariPreprocessing + 4-frame stack" if preprocessed else "Pong (ALE/Pong-v5), raw 210x160x3 frames"
                where = "wrappers on the server" if preprocessed else "base64"
                rows.append((f"{what}, in-process", f"{atari_best['local']:,.0f} steps/s", ""))
                for name in ("process", "thread"):
                    ratio = atari_best[name] / atari_best["local"]
                    rows.append((f"the same through client.RemoteEnv ({where}), --isolation {name}",
                                 f"{atari_best[name]:,.0f} steps/s", f"{ratio:.2f} x in-process"))
                if preprocessed:
                    ratio = atari_best["process"] / atari_best["local"]
                    check("preprocessed Pong, RemoteEnv / in-process", ratio, ">= 0.5", ratio >= 0.5)
        cart8 = parallel(url, "CartPole-v1", 8, seconds)
        rows.append(("8 client threads (one process) on 8 CartPole instances, aggregate", f"{cart8:,.0f} steps/s",
                     f"{cart8 / single:.2f} x one client"))
        # Actors in processes of their own: where the server process's CPU per step caps a node.
        actors: dict[tuple[str, int], tuple[float, float, float]] = {}
        for _ in range(rounds):
            for name, address, pid in (("handoff", url, server.pid), ("relay", relay_url, relay.pid)):
                for clients in (1, 8):
                    # Long enough for /proc's CPU ticks (10 ms) to count the server's share.
                    got = client_processes(address, pid, "CartPole-v1", clients, 0.5 if args.quick else max(seconds, 3.0))
                    if got[0] > actors.get((name, clients), (0.0,))[0]:
                        actors[name, clients] = got
        for name, what in (("handoff", "--isolation process"), ("relay", "--handoff off")):
            for clients in (1, 8):
                rate_, server_cpu, instance_cpu = actors[name, clients]
                rows.append((f"{clients} client process{'es' if clients > 1 else ''} on {clients} CartPole instance{'s' if clients > 1 else ''}, "
                             f"{what}: server CPU {server_cpu * 1e6:,.1f} us a step, instance processes {instance_cpu * 1e6:,.1f} us",
                             f"{rate_:,.0f} steps/s", f"server CPU {server_cpu / max(instance_cpu, 1e-9):.3f} x instances'"))
        server_cpu, instance_cpu = actors["handoff", 8][1:]
        share = server_cpu / max(instance_cpu, 1e-9)
        check("8 client processes: server CPU / instance CPU a step", share, "<= 0.1", share <= 0.1)
        # An old-style binding: one connection, several instances in turn (it stays with the server, relayed).
        robin: dict[str, float] = {}
        for _ in range(rounds):  # alternating, as everywhere
            for name, address in (("handoff", url), ("relay", relay_url)):
                robin[name] = max(robin.get(name, 0.0), sequential(address, "CartPole-v1", 4, seconds))
        rows.append(("one client stepping 4 CartPole instances round-robin over one connection", f"{robin['handoff']:,.0f} steps/s",
                     f"{robin['handoff'] / robin['relay']:.2f} x the same with --handoff off"))
        sleepy_seconds = 0.2 if args.quick else max(seconds, 0.5)  # a few rounds of 20 ms steps at least
        sleepy_seq = sequential(url, "Bench/Sleepy-v0", 8, sleepy_seconds)
        sleepy_par = parallel(url, "Bench/Sleepy-v0", 8, sleepy_seconds)
        rows.append(("8 instances of a 20 ms env, one after the other", f"{sleepy_seq:,.1f} steps/s", ""))
        rows.append(("8 clients on 8 instances of a 20 ms env", f"{sleepy_par:,.1f} steps/s", f"{sleepy_par / sleepy_seq:.1f} x sequential"))
        check("8 sleepy clients / sequential", sleepy_par / sleepy_seq, ">= 6", sleepy_par / sleepy_seq >= 6)
        # CPU-bound Python envs: one GIL (threads) against one process per instance.
        heavy = {}
        for _ in range(rounds):
            heavy["local"] = max(heavy.get("local", 0.0), heavy_in_process(seconds))
            for name, address in (("process", url), ("thread", threads_url)):
                for clients in (1, 2):
                    heavy[name, clients] = max(heavy.get((name, clients), 0.0), parallel(address, "Bench/Heavy-v0", clients, seconds))
        rows.append(("a CPU-heavy env in-process (Python, holding the GIL)", f"{heavy['local']:,.0f} steps/s",
                     f"{1000 / heavy['local']:.2f} ms a step"))
        for name in ("process", "thread"):
            one, two = heavy[name, 1], heavy[name, 2]
            rows.append((f"the same over HTTP, one client, --isolation {name}", f"{one:,.0f} steps/s", ""))
            rows.append((f"the same, 2 clients on 2 instances, --isolation {name}", f"{two:,.0f} steps/s", f"{two / one:.2f} x one client"))
        check("CPU-heavy env, 2 clients / 1, process", heavy["process", 2] / heavy["process", 1], ">= 1.7",
              heavy["process", 2] / heavy["process", 1] >= 1.7)
        # Many machines: 4 clients of the CPU-heavy env through nginx and 2 nodes, against the same on 1 node.
        work = tempfile.mkdtemp(prefix="gymhttp-bench-")
        cluster = start_cluster(work)
        if cluster is None:
            rows.append(("4 clients of the CPU-heavy env, 2 nodes behind nginx", "nginx not installed", ""))
        else:
            procs, gateway = cluster
            try:
                one = max(parallel(threads_url, "Bench/Heavy-v0", 4, seconds) for _ in range(rounds))
                two = max(parallel(gateway, "Bench/Heavy-v0", 4, seconds) for _ in range(rounds))
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(30)
                shutil.rmtree(work, True)
            rows.append(("4 clients of the CPU-heavy env, one node (--isolation thread)", f"{one:,.0f} steps/s", ""))
            rows.append(("the same through nginx, 2 nodes (--isolation thread)", f"{two:,.0f} steps/s", f"{two / one:.2f} x one node"))
            check("CPU-heavy env, 4 clients, 2 nodes / 1 node", two / one, ">= 1.6", two / one >= 1.6)
        creates = {name: create_latency(address, 5 if args.quick else 30) for name, address in (("process", url), ("thread", threads_url))}
        for name, latency in creates.items():
            rows.append((f"create a CartPole instance, --isolation {name} (median)", f"{latency * 1000:,.1f} ms", ""))
        # On servers of their own, so that memory freed by the runs above can't hide the cost.
        for name in ("thread", "process"):
            fresh, fresh_url = start_server(["--isolation", name])
            try:
                grown, own, resident = memory_per_instance(fresh_url, fresh.pid, 20 if args.quick else (500 if name == "thread" else 100))
            finally:
                with client.Client(fresh_url) as c:
                    c.shutdown_server()
                fresh.wait(30)
            rows.append((f"memory per idle CartPole instance, --isolation {name}: the server's", f"{grown / 1024:,.0f} KiB", ""))
            if name == "thread":
                check("KiB per idle instance, thread", grown / 1024, "< 1024", grown < 1024 * 1024)
            else:
                rows.append(("  and its instance process's own (private) memory", f"{own / 2**20:,.1f} MiB",
                             f"{resident / 2**20:,.0f} MiB resident, the rest shared with the starter"))
    finally:
        for proc, address in ((server, url), (relay, relay_url), (threads, threads_url), (still, still_url)):
            with client.Client(address) as c:
                c.shutdown_server()
            proc.wait(30)
        for proc in (echo, polling_echo, step_floor_proc, polling_step_floor_proc, relay_floor_proc, handoff_floor_proc):
            proc.kill()
            proc.wait()

    cpu = platform.processor() or platform.machine()
    print(f"gymhttp throughput, Python {platform.python_version()}, {os.cpu_count()} cores ({cpu}), "
          f"gymnasium {gymnasium.__version__}, numpy {np.__version__}{', QUICK run' if args.quick else ''}\n")
    print("| measurement | result | ratio |")
    print("|---|---:|---:|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")
    print("\n| target | measured | wanted | met |")
    print("|---|---:|---:|:---:|")
    for name, value, wanted, ok in checks:
        print(f"| {name} | {value:,.2f} | {wanted} | {'yes' if ok else 'NO'} |")
    return 1 if args.check and not all(ok for *_, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
