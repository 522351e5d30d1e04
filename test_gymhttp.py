"""Tests for gymhttp: everything goes over real HTTP to a server on a free port.

Run with ``python -m unittest``.
"""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import unittest.mock
import warnings
from typing import Callable

import gymnasium
import numpy as np
from gymnasium import spaces

import client
import gymhttp

HERE = os.path.dirname(os.path.abspath(__file__))
logging.getLogger("gymhttp").setLevel(logging.CRITICAL)  # env tracebacks are expected here
warnings.filterwarnings("ignore", module="gymnasium")

# ---------------------------------------------------------------------------
# Small environments, one per kind of space or behaviour
# ---------------------------------------------------------------------------


def kinds(value):
    """The types of a value, nested as it is: what an env was given, told over the wire."""
    if isinstance(value, dict):
        return {k: kinds(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [kinds(v) for v in value]
    if isinstance(value, np.ndarray):
        return f"ndarray[{value.dtype}]"
    return type(value).__name__


class SpaceEnv(gymnasium.Env):
    """Observations and actions from given spaces; the observation is a fixed
    sample so tests can compare it; it terminates after ``length`` steps."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    def __init__(self, observation_space, action_space, length=5, render_mode=None):
        self.observation_space = observation_space
        self.action_space = action_space
        self.length = length
        self.render_mode = render_mode
        self.t = 0
        self.actions = []

    def _obs(self):
        self.observation_space.seed(self.t)
        return self.observation_space.sample()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"seed": seed, "options": options}

    def step(self, action):
        self.actions.append(action)
        self.t += 1
        info = {"t": self.t, "action_kinds": kinds(action), "action_in_space": bool(self.action_space.contains(action))}
        return self._obs(), 1, self.t >= self.length, False, info

    def render(self):
        if self.render_mode == "rgb_array":
            return np.full((4, 6, 3), self.t, dtype=np.uint8)
        if self.render_mode == "ansi":
            return f"t={self.t}\n"
        return None


DICT_OBS = spaces.Dict({"position": spaces.Box(-1.0, 1.0, (2,), np.float32), "mode": spaces.Discrete(3)})
DICT_ACT = spaces.Dict({"move": spaces.Box(-1.0, 1.0, (2,), np.float32), "jump": spaces.MultiBinary(1)})
TUPLE_OBS = spaces.Tuple((spaces.Discrete(4, start=1), spaces.Box(0, 10, (3,), np.int64)))
TUPLE_ACT = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))
MULTI_OBS = spaces.MultiBinary(4)
MULTI_ACT = spaces.MultiDiscrete([3, 4])
TEXT_SPACE = spaces.Text(max_length=8, min_length=1, charset="abc")
IMAGE_OBS = spaces.Box(0, 255, (8, 6, 3), np.uint8)

gymnasium.register("GymHTTPTest/Dict-v0", entry_point=lambda **kw: SpaceEnv(DICT_OBS, DICT_ACT, **kw))
gymnasium.register("GymHTTPTest/Tuple-v0", entry_point=lambda **kw: SpaceEnv(TUPLE_OBS, TUPLE_ACT, **kw))
gymnasium.register("GymHTTPTest/Multi-v0", entry_point=lambda **kw: SpaceEnv(MULTI_OBS, MULTI_ACT, **kw))
gymnasium.register("GymHTTPTest/Text-v0", entry_point=lambda **kw: SpaceEnv(TEXT_SPACE, TEXT_SPACE, **kw))
gymnasium.register(
    "GymHTTPTest/Image-v0", entry_point=lambda **kw: SpaceEnv(IMAGE_OBS, spaces.Discrete(2), **kw),
    disable_env_checker=True,
)


class NonFiniteEnv(gymnasium.Env):
    """Returns NaN and infinities, numpy scalar types and objects in info."""

    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([np.nan, np.inf, -np.inf]), {"nan": float("nan"), "np": np.float32(0.5)}

    def step(self, action):
        info = {
            "nan": np.float64("nan"),
            "inf": float("inf"),
            "array": np.array([1.0, np.nan]),
            "int": np.int64(7),
            "flag": np.bool_(True),
            "object": object(),
            "set": {3},
            5: "int key",
        }
        return np.array([np.nan, 1.0, -np.inf]), np.float32(1), np.bool_(False), np.bool_(False), info


class RaisingEnv(gymnasium.Env):
    """Raises on the second step."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        self.t += 1
        if self.t >= 2:
            raise RuntimeError("the reactor is on fire")
        return 0, 0.0, False, False, {}


class CounterEnv(gymnasium.Env):
    """The observation counts steps since creation; it never ends.  A lost
    or doubled step shows up as a gap or a repeat."""

    observation_space = spaces.Discrete(1_000_000)
    action_space = spaces.Discrete(2)

    def __init__(self):
        self.count = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.count, {}

    def step(self, action):
        value = self.count + 1
        time.sleep(0.0005)  # widen any race
        self.count = value
        return value, 0.0, False, False, {}


gymnasium.register("GymHTTPTest/NonFinite-v0", entry_point=NonFiniteEnv, disable_env_checker=True)
gymnasium.register("GymHTTPTest/Raising-v0", entry_point=RaisingEnv, disable_env_checker=True)
gymnasium.register("GymHTTPTest/Counter-v0", entry_point=CounterEnv, disable_env_checker=True)


class SleepyEnv(gymnasium.Env):
    """Each step sleeps, the way a slow simulator would."""

    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(2)

    def __init__(self, delay=0.02):
        self.delay = delay

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        time.sleep(self.delay)
        return 0, 0.0, False, False, {}


gymnasium.register("GymHTTPTest/Sleepy-v0", entry_point=SleepyEnv, disable_env_checker=True)


RELEASE = threading.Event()  # lets envs stuck in a thread (--isolation thread) go at a test's end


class MisbehavingEnv(gymnasium.Env):
    """Action 0 steps normally; action 1 misbehaves in the way ``how`` says:
    segfault, abort, exit, hang, spin, leak (50 MB a step), or raise.  With
    ``render_mode="rgb_array"`` and ``how="hang"`` its render hangs too, and
    ``make_hangs`` hangs its constructor."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    observation_space = spaces.Discrete(1000)
    action_space = spaces.Discrete(2)

    def __init__(self, how="raise", render_mode=None, make_hangs=False, balloon_mib=0, make_balloon_mib=0, make_balloon_if=None,
                 make_seconds=0.0):
        self.how, self.render_mode, self.t, self.hog = how, render_mode, 0, []
        time.sleep(make_seconds)
        self.balloon_mib = balloon_mib
        if make_balloon_mib and (make_balloon_if is None or os.path.exists(make_balloon_if)):  # grow while made
            self.hog.append(np.ones(make_balloon_mib << 20, dtype=np.uint8))
            RELEASE.wait(30)
        if make_hangs:
            RELEASE.wait(30)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        self.t += 1
        if action == 1:
            self.misbehave()
        return self.t, 1.0, False, False, {}

    def misbehave(self):
        how = self.how
        if how == "segfault":
            import ctypes
            ctypes.string_at(0)
        elif how == "abort":
            os.abort()
        elif how == "exit":
            os._exit(7)
        elif how == "hang":
            RELEASE.wait(30)
        elif how == "spin":
            end = time.monotonic() + 30
            while time.monotonic() < end and not RELEASE.is_set():
                pass
        elif how == "leak":
            self.hog.append(np.ones(50 << 20, dtype=np.uint8))  # written, so resident
        elif how == "balloon":  # grow, then take a long time to answer
            self.hog.append(np.ones(self.balloon_mib << 20, dtype=np.uint8))
            RELEASE.wait(30)
        else:
            raise RuntimeError("the env misbehaved")

    def render(self):
        if self.how == "hang":
            RELEASE.wait(30)
        return np.zeros((4, 4, 3), dtype=np.uint8)


gymnasium.register("GymHTTPTest/Misbehaving-v0", entry_point=MisbehavingEnv, disable_env_checker=True)


class UnencodableInfoEnv(gymnasium.Env):
    """Steps fine; its info holds what JSON cannot carry: an int past Python's
    4300-digit limit, a dict that holds itself, a list nested 900 deep, and an
    object whose repr raises."""

    observation_space = spaces.Discrete(3)
    action_space = spaces.Discrete(2)

    def _info(self):
        cycle = {}
        cycle["self"] = cycle
        deep = inner = []
        for _ in range(900):
            inner.append([])
            inner = inner[0]

        class Unshowable:
            def __repr__(self):
                raise RuntimeError("no repr")

        return {"huge": 10 ** 5000, "cycle": cycle, "deep": deep, "unshowable": Unshowable(), 10 ** 5000: "key", "fine": 7}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, self._info()

    def step(self, action):
        return 1, 1.0, False, False, self._info()


gymnasium.register("GymHTTPTest/UnencodableInfo-v0", entry_point=UnencodableInfoEnv, disable_env_checker=True)


class EvenNumbers(spaces.Space):
    """A custom space, as suites define them: even Python ints below ``limit``.
    No client can tell a member from its type alone."""

    def __init__(self, limit, seed=None):
        self.limit = limit
        super().__init__((), np.int64, seed)

    def sample(self, mask=None, probability=None):
        return int(self.np_random.integers(0, self.limit // 2)) * 2

    def contains(self, x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and 0 <= x < self.limit and x % 2 == 0

    def __eq__(self, other):
        return isinstance(other, EvenNumbers) and other.limit == self.limit


class Word(spaces.Space):
    """A custom space of strings from a list, like MiniGrid's MissionSpace."""

    def __init__(self, words, seed=None):
        self.words = list(words)
        self.picker = lambda k: self.words[k]  # not JSON: left out of the description
        super().__init__(None, None, seed)

    def sample(self, mask=None, probability=None):
        return self.picker(int(self.np_random.integers(len(self.words))))

    def contains(self, x):
        return x in self.words

    def __eq__(self, other):
        return isinstance(other, Word) and other.words == self.words


class Pixels(spaces.Box):
    """A subclass of one of Gymnasium's own kinds."""


class CustomSpaceEnv(gymnasium.Env):
    """Observations and actions in custom spaces; the observation follows the
    env's seeded generator and the actions taken."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = spaces.Dict({"even": EvenNumbers(10), "word": Word(["red", "green", "blue"]),
                                              "pixels": Pixels(0, 255, (2, 2), np.uint8)})
        self.action_space = EvenNumbers(6)

    def _obs(self):
        return {"even": int(self.np_random.integers(0, 5)) * 2, "word": ["red", "green", "blue"][int(self.np_random.integers(3))],
                "pixels": self.np_random.integers(0, 256, (2, 2), dtype=np.uint8)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {"kinds": "custom"}

    def step(self, action):
        assert self.action_space.contains(action), action
        return self._obs(), float(action), False, False, {"action": action}


gymnasium.register("GymHTTPTest/Custom-v0", entry_point=CustomSpaceEnv)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def serve_in_thread(test: unittest.TestCase, handler: type) -> str:
    """A plain http.server with ``handler`` on a free port, served in a thread
    until the test ends; its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    test.addCleanup(server.server_close)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    test.addCleanup(server.shutdown)  # cleanups run last first: shut down, then close
    return f"http://127.0.0.1:{server.server_address[1]}"


def strict_loads(data: bytes):
    """json.loads that refuses NaN/Infinity, as Go, JavaScript and Java do."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(data, parse_constant=refuse)


def threads_blocked_on_closed_sockets() -> list[str]:
    """Threads blocked in a socket call (accept, or a read through makefile)
    on a socket another thread has closed.

    Such a thread is a hazard to every later test: closing the socket does
    not wake it, and when its call is restarted (a signal that arrives while
    subprocess has signals blocked, a SIGSTOP) the kernel looks its number up
    again, and by then it may name a new server's listening socket, whose
    connections the thread would take and drop.
    """
    found = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if frame.f_code.co_filename == socket.__file__ and frame.f_code.co_name in ("accept", "readinto"):
            sock = frame.f_locals.get("self")
            sock = getattr(sock, "_sock", sock)  # SocketIO.readinto: the socket under the file
            if isinstance(sock, socket.socket) and sock.fileno() == -1:
                found.append(f"{names.get(ident, ident)} in socket.{frame.f_code.co_name}() "
                             f"(called from {frame.f_back.f_code.co_name}, line {frame.f_back.f_lineno})")
    return found


class ServerTestCase(unittest.TestCase):
    """Starts a server on a free port in a thread; stops it via /v1/shutdown/."""

    server_options: dict = {}

    def setUp(self):
        # An earlier test's thread left on a closed socket could take this server's connections.
        self.assertEqual(threads_blocked_on_closed_sockets(), [])
        # Busy-polling on, as `python gymhttp.py` runs by default.
        self.server = gymhttp.make_server("127.0.0.1", 0, **{"spin_us": gymhttp.DEFAULT_SPIN_US, **self.server_options})
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.client = client.Client(self.base)

    def tearDown(self):
        self.client.close()
        if self.server._shutdown_started.is_set():  # the test stopped it already: its port takes connections no one serves
            self.server.shutdown()
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("POST", "/v1/shutdown/", headers=self.auth_headers())
                conn.getresponse().read()
            except OSError:
                self.server.shutdown()
            finally:
                conn.close()
        self.thread.join(10)
        self.assertFalse(self.thread.is_alive(), "server did not stop")
        self.server.server_close()

    def auth_headers(self) -> dict:
        token = self.server_options.get("token")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method, path, body=None, headers=None):
        """One request on a fresh connection: (status, headers, decoded JSON or raw)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        if isinstance(body, (dict, list)) or body is None and method == "POST" and False:
            body = json.dumps(body)
        all_headers = self.auth_headers()
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type") or ""
        if data and ctype.startswith("application/json"):
            return resp.status, resp, strict_loads(data)
        return resp.status, resp, data

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is None or isinstance(body, (bytes, str)) else json.dumps(body), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def create(self, env_id="CartPole-v1", **params):
        status, _, reply = self.post("/v1/envs/", {"env_id": env_id, **params})
        self.assertEqual(status, 200, reply)
        return reply["instance_id"]

    def assertError(self, status_reply, status, *fragments):
        """A JSON error with the status whose message holds every fragment."""
        got, resp, reply = status_reply
        self.assertEqual(got, status, reply)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertIsInstance(reply, dict, reply)
        self.assertEqual(set(reply), {"message"})
        for fragment in fragments:
            self.assertIn(fragment, reply["message"])
        self.assertNotIn("Traceback", reply["message"])
        return reply["message"]

    def assertServing(self):
        status, _, reply = self.get("/v1/envs/")
        self.assertEqual(status, 200)
        self.assertIn("all_envs", reply)


def children_of(pid: int) -> list[int]:
    """The pids of a process's children, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            pass
    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# ---------------------------------------------------------------------------
# The module itself
# ---------------------------------------------------------------------------


class TestModule(unittest.TestCase):
    def test_all_names_exist_and_are_public_api(self):
        self.assertEqual(set(gymhttp.__all__), {"GymHTTPServer", "HTTPError", "make_server", "serve", "run", "main", "__version__"})
        for name in gymhttp.__all__:
            self.assertTrue(hasattr(gymhttp, name), name)
        self.assertRegex(gymhttp.__version__, r"^\d+\.\d+\.\d+$")

    def test_server_imports_only_stdlib_gymnasium_numpy(self):
        code = (
            "import sys, gymhttp\n"
            "std = set(sys.stdlib_module_names)\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} - std - {'gymhttp', 'gymnasium', 'numpy', '__main__'})\n"
            "print(bad)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=60)
        # What gymnasium and numpy pull in themselves is theirs, not ours.
        theirs = {"cloudpickle", "farama_notifications", "typing_extensions", "_distutils_hack", "__mp_main__", "cython_runtime"}
        third_party = [m for m in eval(out.stdout) if m not in theirs and not m.startswith("_cython")]
        self.assertEqual(third_party, [], out.stderr)

    def test_client_imports_only_stdlib(self):
        code = "import sys, client\nstd = set(sys.stdlib_module_names)\nprint(sorted({m.split('.')[0] for m in sys.modules} - std - {'client', '__main__', '_distutils_hack'}))"
        out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "[]", out.stderr)

    def test_routes_are_data(self):
        for method, pattern, handler in gymhttp.ROUTES:
            self.assertIn(method, ("GET", "POST"))
            self.assertTrue(pattern.startswith("/v1/") or pattern == "/", pattern)
            self.assertTrue(callable(handler))


# ---------------------------------------------------------------------------
# Every route
# ---------------------------------------------------------------------------


class TestRoutes(ServerTestCase):
    def test_create_list_close(self):
        a = self.create("CartPole-v1")
        b = self.create("FrozenLake-v1", kwargs={"is_slippery": False})
        status, _, reply = self.get("/v1/envs/")
        self.assertEqual(status, 200)
        self.assertEqual(reply, {"all_envs": {a: "CartPole-v1", b: "FrozenLake-v1"}})
        status, resp, body = self.post(f"/v1/envs/{a}/close/")
        self.assertEqual(status, 204)
        self.assertEqual(body, b"")
        self.assertEqual(self.get("/v1/envs")[2], {"all_envs": {b: "FrozenLake-v1"}})
        self.assertError(self.post(f"/v1/envs/{a}/step/", {"action": 0}), 400, f"Instance_id {a} unknown")

    def test_every_route_with_and_without_trailing_slash(self):
        iid = self.create()
        for slash in ("", "/"):
            self.assertEqual(self.get("/v1/envs" + slash)[0], 200)
            self.assertEqual(self.post(f"/v1/envs/{iid}/reset" + slash)[0], 200)
            self.assertEqual(self.post(f"/v1/envs/{iid}/step" + slash, {"action": 0})[0], 200)
            self.assertEqual(self.get(f"/v1/envs/{iid}/action_space" + slash)[0], 200)
            self.assertEqual(self.get(f"/v1/envs/{iid}/observation_space" + slash)[0], 200)
            self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/sample" + slash)[0], 200)
            self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/contains/1" + slash)[0], 200)
            self.assertEqual(self.post(f"/v1/envs/{iid}/observation_space/contains" + slash, {"name": "Box"})[0], 200)
            self.assertEqual(self.post("/v1/upload" + slash, {"training_dir": "/tmp", "api_key": "k"})[0], 410)
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start", {"directory": d})[0], 204)
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close")[0], 204)
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": d, "resume": True})[0], 204)
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        self.assertEqual(self.post(f"/v1/envs/{iid}/close")[0], 204)

    def test_parameterless_posts_take_empty_brace_and_null_bodies(self):
        for body in (None, b"", b"{}", b"null", b" null \n"):
            iid = self.create()
            status, _, reply = self.post(f"/v1/envs/{iid}/reset/", body)
            self.assertEqual(status, 200, (body, reply))
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/", body)[0], 204)
            self.assertEqual(self.post(f"/v1/envs/{iid}/close/", body)[0], 204, body)

    def test_content_type_never_required(self):
        iid = self.create()
        for headers in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/json"}):
            status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": 1}, headers=headers)
            self.assertEqual(status, 200, reply)
            self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/", headers=headers)[0], 200)

    def test_reset_returns_observation_and_info_and_seed_zero_is_a_seed(self):
        iid = self.create()
        _, _, first = self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})
        self.assertEqual(set(first), {"observation", "info"})
        _, _, again = self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})
        self.assertEqual(first["observation"], again["observation"])
        local = gymnasium.make("CartPole-v1")
        obs, _ = local.reset(seed=0)
        np.testing.assert_allclose(first["observation"], obs, rtol=1e-6)
        _, _, other = self.post(f"/v1/envs/{iid}/reset/", {"seed": 1})
        self.assertNotEqual(first["observation"], other["observation"])

    def test_reset_options_reach_the_env(self):
        iid = self.create("GymHTTPTest/Dict-v0")
        _, _, reply = self.post(f"/v1/envs/{iid}/reset/", {"seed": 3, "options": {"level": 2}})
        self.assertEqual(reply["info"], {"seed": 3, "options": {"level": 2}})

    def test_create_seed_seeds_the_first_reset(self):
        iid = self.create(seed=42)
        _, _, reply = self.post(f"/v1/envs/{iid}/reset/")
        obs, _ = gymnasium.make("CartPole-v1").reset(seed=42)
        np.testing.assert_allclose(reply["observation"], obs, rtol=1e-6)

    def test_step_before_reset_resets_first_with_the_create_seed(self):
        iid = self.create(seed=7)
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": 1})
        self.assertEqual(status, 200, reply)
        local = gymnasium.make("CartPole-v1")
        local.reset(seed=7)
        obs, *_ = local.step(1)
        np.testing.assert_allclose(reply["observation"], obs, rtol=1e-6)

    def test_step_fields_and_done_is_terminated_or_truncated(self):
        iid = self.create(seed=0, kwargs={"max_episode_steps": 3})
        self.post(f"/v1/envs/{iid}/reset/")
        replies = [self.post(f"/v1/envs/{iid}/step/", {"action": 0})[2] for _ in range(3)]
        for reply in replies:
            self.assertEqual(set(reply), {"observation", "reward", "done", "terminated", "truncated", "info"})
            self.assertEqual(reply["done"], reply["terminated"] or reply["truncated"])
        self.assertTrue(replies[-1]["truncated"])
        self.assertTrue(replies[-1]["done"])
        self.assertFalse(replies[0]["done"])

    def test_step_trajectory_matches_local_gymnasium(self):
        iid = self.create(seed=5)
        self.post(f"/v1/envs/{iid}/reset/")
        local = gymnasium.make("CartPole-v1")
        local.reset(seed=5)
        for t in range(40):
            action = (t * 7) % 2
            reply = self.post(f"/v1/envs/{iid}/step/", {"action": action})[2]
            obs, reward, terminated, truncated, _ = local.step(action)
            np.testing.assert_allclose(reply["observation"], obs, rtol=1e-6)
            self.assertEqual((reply["reward"], reply["terminated"], reply["truncated"]), (reward, terminated, truncated))
            if terminated or truncated:
                break

    def test_render_true_on_a_headless_server(self):
        for kwargs in ({}, {"render_mode": "rgb_array"}):
            iid = self.create(kwargs=kwargs)
            status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": 0, "render": True})
            self.assertEqual(status, 200, reply)

    def test_space_routes(self):
        iid = self.create()
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/")[2], {"info": {"name": "Discrete", "n": 2, "start": 0, "dtype": "int64"}})
        info = self.get(f"/v1/envs/{iid}/observation_space/")[2]["info"]
        self.assertEqual(info["name"], "Box")
        self.assertEqual(info["shape"], [4])
        self.assertEqual(info["high"][1], 1e100)
        self.assertEqual(info["low"][1], -1e100)
        self.assertAlmostEqual(info["high"][0], 4.8, places=5)

    def test_action_space_sample_and_contains(self):
        iid = self.create()
        for _ in range(5):
            self.assertIn(self.get(f"/v1/envs/{iid}/action_space/sample")[2]["action"], (0, 1))
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/contains/1")[2], {"member": True})
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/contains/2")[2], {"member": False})
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/contains/-1")[2], {"member": False})
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/contains/true")[2], {"member": False})
        self.assertError(self.get(f"/v1/envs/{iid}/action_space/contains/abc"), 400, "abc")
        box = self.create("Pendulum-v1")
        self.assertEqual(self.get(f"/v1/envs/{box}/action_space/contains/%5B1.5%5D")[2], {"member": True})
        self.assertEqual(self.get(f"/v1/envs/{box}/action_space/contains/%5B2.5%5D")[2], {"member": False})

    def test_observation_space_contains(self):
        iid = self.create()
        contains = f"/v1/envs/{iid}/observation_space/contains"
        self.assertEqual(self.post(contains, {"name": "Box", "shape": [4]})[2], {"member": True})
        self.assertEqual(self.post(contains, {"name": "Box", "shape": [5]})[2], {"member": False})
        self.assertEqual(self.post(contains, {"name": "Discrete"})[2], {"member": False})
        self.assertEqual(self.post(contains, {"nonsense": 1})[2], {"member": False})
        self.assertEqual(self.post(contains, {})[2], {"member": True})

    def test_upload_validates_then_answers_gone(self):
        self.assertError(self.post("/v1/upload/", {"api_key": "k"}), 400, "A required request parameter 'training_dir' was not provided")
        self.assertError(self.post("/v1/upload/", {"training_dir": "/tmp/run"}), 400, "'api_key' was not provided")
        self.assertError(self.post("/v1/upload/", {"training_dir": "/tmp/run", "api_key": ""}), 400, "'api_key' was not provided")
        self.assertError(self.post("/v1/upload/", {"training_dir": "/tmp/run", "api_key": "sk"}), 410, "shut down", "/tmp/run")

    def test_shutdown_answers_then_stops(self):
        status, resp, reply = self.post("/v1/shutdown/")
        self.assertEqual(status, 200)
        self.assertEqual(reply, {"message": "Server shutting down"})
        self.thread.join(5)
        self.assertFalse(self.thread.is_alive())

    def test_head_gets_headers_without_body(self):
        iid = self.create()
        raw = raw_exchange(self.port, f"HEAD /v1/envs/{iid}/action_space HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status, headers, body = split_response(raw)
        self.assertEqual(status, 200)
        self.assertGreater(int(headers["content-length"]), 0)
        self.assertEqual(body, b"")


# ---------------------------------------------------------------------------
# Spaces and values on the wire
# ---------------------------------------------------------------------------

ALL_SPACES = {
    "Discrete": spaces.Discrete(5, start=-2),
    "Box": spaces.Box(-np.inf, np.inf, (2, 3), np.float32),
    "BoxInt": spaces.Box(0, 9, (4,), np.int64),
    "BoxUint8": spaces.Box(0, 255, (3, 2, 3), np.uint8),
    "MultiDiscrete": spaces.MultiDiscrete([[2, 3], [4, 5]]),
    "MultiBinary": spaces.MultiBinary([2, 2]),
    "Tuple": TUPLE_OBS,
    "Dict": DICT_OBS,
    "Text": TEXT_SPACE,
    "Sequence": spaces.Sequence(spaces.Discrete(3)),
    "SequenceStacked": spaces.Sequence(spaces.Box(0, 1, (2,), np.float32), stack=True),
    "Graph": spaces.Graph(spaces.Box(0, 1, (2,), np.float32), spaces.Discrete(3)),
    "OneOf": spaces.OneOf((spaces.Discrete(2), spaces.Box(0, 1, (2,), np.float32))),
    "Nested": spaces.Dict({"a": spaces.Tuple((spaces.Dict({"b": spaces.MultiBinary(3)}), spaces.Discrete(2)))}),
}


def values_equal(space, a, b):
    """Compare two values of a space (arrays by content, nested by structure)."""
    if isinstance(space, spaces.Graph):
        return np.array_equal(a.nodes, b.nodes) and np.array_equal(a.edges, b.edges) and np.array_equal(a.edge_links, b.edge_links)
    if isinstance(space, spaces.Dict):
        return all(values_equal(s, a[k], b[k]) for k, s in space.spaces.items())
    if isinstance(space, spaces.Tuple):
        return all(values_equal(s, x, y) for s, x, y in zip(space.spaces, a, b))
    if isinstance(space, spaces.OneOf):
        return a[0] == b[0] and values_equal(space.spaces[a[0]], a[1], b[1])
    if isinstance(space, spaces.Sequence) and not space.stack:
        return len(a) == len(b) and all(values_equal(space.feature_space, x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b))


class TestSpaces(unittest.TestCase):
    """Encode through the space, json.dumps/json.loads, decode through it."""

    def test_every_space_round_trips_through_json(self):
        for name, space in ALL_SPACES.items():
            for encoding in gymhttp.ENCODINGS:
                with self.subTest(space=name, encoding=encoding):
                    codec = gymhttp.Codec(space, encoding)
                    space.seed(1)
                    value = space.sample()
                    wire = strict_loads(gymhttp.encode_json({"v": codec.encode(value)}))["v"]
                    back = codec.decode(wire)
                    self.assertTrue(space.contains(back), (name, wire))
                    self.assertTrue(values_equal(space, value, back), (name, value, back))

    def test_every_space_is_described(self):
        for name, space in ALL_SPACES.items():
            with self.subTest(space=name):
                info = strict_loads(gymhttp.encode_json(gymhttp.describe_space(space)))
                self.assertEqual(info["name"], type(space).__name__)
        d = gymhttp.describe_space(ALL_SPACES["Discrete"])
        self.assertEqual((d["n"], d["start"]), (5, -2))
        self.assertEqual(gymhttp.describe_space(ALL_SPACES["MultiDiscrete"])["nvec"], [[2, 3], [4, 5]])
        self.assertEqual(gymhttp.describe_space(ALL_SPACES["MultiBinary"])["n"], [2, 2])
        self.assertEqual(list(gymhttp.describe_space(DICT_OBS)["spaces"]), ["mode", "position"])
        self.assertEqual(len(gymhttp.describe_space(TUPLE_OBS)["spaces"]), 2)
        self.assertEqual(gymhttp.describe_space(TEXT_SPACE)["charset"], "abc")
        box = gymhttp.describe_space(ALL_SPACES["Box"])
        self.assertEqual((box["low"], box["high"]), ([-1e100] * 6, [1e100] * 6))

    def test_unknown_space_is_described_by_class_shape_dtype_example_and_attributes(self):
        class Odd(spaces.Space):
            pass

        self.assertEqual(gymhttp.describe_space(Odd()), {"name": "Odd", "class": f"{__name__}:{Odd.__qualname__}"})
        even = EvenNumbers(10)
        even.seed(5)
        before = [even.sample() for _ in range(3)]
        even.seed(5)
        info = strict_loads(gymhttp.encode_json(gymhttp.describe_space(even)))
        self.assertEqual([even.sample() for _ in range(3)], before)  # the example came from a copy
        self.assertEqual(info, {"name": "EvenNumbers", "class": f"{__name__}:EvenNumbers", "shape": [], "dtype": "int64",
                                "example": info["example"], "attributes": {"limit": 10}})
        self.assertTrue(even.contains(info["example"]))
        word = gymhttp.describe_space(Word(["a", "b"]))
        self.assertEqual(word["attributes"], {"words": ["a", "b"]})  # the picker function is not plain data
        self.assertIn(word["example"], ["a", "b"])
        self.assertNotIn("shape", word)
        pixels = gymhttp.describe_space(Pixels(0, 255, (2, 2), np.uint8))
        self.assertEqual((pixels["name"], pixels["class"], pixels["low"]), ("Box", f"{__name__}:Pixels", [0, 0, 0, 0]))

    def test_compact_bounds_are_one_number_each_and_expand_back(self):
        pong = spaces.Box(0, 255, (210, 160, 3), np.uint8)
        compact = gymhttp.describe_space(pong, compact=True)
        self.assertEqual((compact["low"], compact["high"]), (0, 255))
        self.assertLess(len(gymhttp.encode_json(compact)), 1000)
        self.assertGreater(len(gymhttp.encode_json(gymhttp.describe_space(pong))), 600_000)
        self.assertEqual(gymhttp.expand_bounds(compact), gymhttp.describe_space(pong))
        nested = spaces.Dict({"a": spaces.Tuple((ALL_SPACES["Box"], spaces.Box(np.array([0, 1]), np.array([2, 3]))))})
        compact = gymhttp.describe_space(nested, compact=True)
        self.assertEqual(compact["spaces"]["a"]["spaces"][0]["low"], -1e100)
        self.assertEqual(compact["spaces"]["a"]["spaces"][1]["low"], [0, 1])  # not all equal: a list still
        self.assertEqual(gymhttp.expand_bounds(compact), gymhttp.describe_space(nested))
        for name, space in ALL_SPACES.items():
            with self.subTest(space=name):
                self.assertEqual(gymhttp.expand_bounds(gymhttp.describe_space(space, compact=True)), gymhttp.describe_space(space))

    def test_sanitize_makes_anything_strict_json(self):
        value = {"a": float("nan"), 3: np.array([np.inf, 1.0]), "o": object(), "t": (np.int8(3), np.bool_(False))}
        out = strict_loads(gymhttp.encode_json(value))
        self.assertEqual(out["a"], "NaN")
        self.assertEqual(out["3"], ["Infinity", 1.0])
        self.assertTrue(out["o"].startswith("<object object"))
        self.assertEqual(out["t"], [3, False])


class TestValuesOverTheWire(ServerTestCase):
    def check_env(self, env_id, space, action_space):
        iid = self.create(env_id)
        info = self.get(f"/v1/envs/{iid}/observation_space/")[2]["info"]
        self.assertEqual(info, strict_loads(json.dumps(gymhttp.describe_space(space))))
        _, _, reply = self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})
        decoded = gymhttp.make_decoder(space)(reply["observation"])
        self.assertTrue(space.contains(decoded), reply)
        sample = self.get(f"/v1/envs/{iid}/action_space/sample")[2]["action"]
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": sample})
        self.assertEqual(status, 200, reply)
        self.assertTrue(space.contains(gymhttp.make_decoder(space)(reply["observation"])))
        self.assertIs(type(reply["reward"]), float)
        return iid, reply

    def test_dict_space_env(self):
        _, reply = self.check_env("GymHTTPTest/Dict-v0", DICT_OBS, DICT_ACT)
        self.assertEqual(set(reply["observation"]), {"position", "mode"})
        self.assertIsInstance(reply["observation"]["mode"], int)

    def test_tuple_space_env(self):
        _, reply = self.check_env("GymHTTPTest/Tuple-v0", TUPLE_OBS, TUPLE_ACT)
        self.assertIsInstance(reply["observation"], list)
        self.assertIsInstance(reply["observation"][0], int)

    def test_multibinary_multidiscrete_env(self):
        iid, reply = self.check_env("GymHTTPTest/Multi-v0", MULTI_OBS, MULTI_ACT)
        self.assertEqual(len(reply["observation"]), 4)
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": [2, 3]})[0], 200)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": [3, 0]}), 400, "[3,0]", "MultiDiscrete")

    def test_text_space_env(self):
        iid, reply = self.check_env("GymHTTPTest/Text-v0", TEXT_SPACE, TEXT_SPACE)
        self.assertIsInstance(reply["observation"], str)
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": "abca"})[0], 200)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": "xyz"}), 400, "xyz", "Text")

    def test_image_env(self):
        _, reply = self.check_env("GymHTTPTest/Image-v0", IMAGE_OBS, spaces.Discrete(2))
        self.assertEqual(np.asarray(reply["observation"]).shape, (8, 6, 3))

    def test_reward_is_always_a_json_float_and_flags_json_booleans(self):
        iid = self.create("GymHTTPTest/Dict-v0")  # its env returns the int 1 as reward
        status, resp, _ = self.post(f"/v1/envs/{iid}/reset/")
        conn = http.client.HTTPConnection("127.0.0.1", self.port)
        conn.request("POST", f"/v1/envs/{iid}/step/", json.dumps({"action": {"move": [0, 0], "jump": [1]}}))
        raw = conn.getresponse().read()
        conn.close()
        self.assertIn(b'"reward":1.0', raw)
        self.assertIn(b'"done":false', raw)
        self.assertIn(b'"terminated":false', raw)
        nf = self.create("GymHTTPTest/NonFinite-v0")  # np.float32 reward, np.bool_ flags
        reply = self.post(f"/v1/envs/{nf}/step/", {"action": 0})[2]
        self.assertIs(type(reply["reward"]), float)
        self.assertIs(reply["terminated"], False)
        self.assertIs(reply["truncated"], False)

    def test_non_finite_values_and_odd_info_are_strict_json(self):
        iid = self.create("GymHTTPTest/NonFinite-v0")
        status, _, reply = self.post(f"/v1/envs/{iid}/reset/")  # strict_loads would raise on NaN
        self.assertEqual(status, 200)
        self.assertEqual(reply["observation"], ["NaN", "Infinity", "-Infinity"])
        self.assertEqual(reply["info"], {"nan": "NaN", "np": 0.5})
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": 1})
        self.assertEqual(status, 200, reply)
        info = reply["info"]
        self.assertEqual(info["nan"], "NaN")
        self.assertEqual(info["inf"], "Infinity")
        self.assertEqual(info["array"], [1.0, "NaN"])
        self.assertEqual(info["int"], 7)
        self.assertIs(info["flag"], True)
        self.assertTrue(info["object"].startswith("<object object"))
        self.assertEqual(info["set"], [3])
        self.assertEqual(info["5"], "int key")
        box = self.get(f"/v1/envs/{iid}/observation_space")[2]["info"]
        self.assertEqual(box["low"], [-1e100] * 3)

    def test_dict_and_tuple_actions_arrive_in_the_space_types(self):
        iid = self.create("GymHTTPTest/Dict-v0")
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": {"move": [0.5, -0.5], "jump": [1]}})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["info"]["action_kinds"], {"move": "ndarray[float32]", "jump": "ndarray[int8]"})
        self.assertIs(reply["info"]["action_in_space"], True)
        tid = self.create("GymHTTPTest/Tuple-v0")
        status, _, reply = self.post(f"/v1/envs/{tid}/step/", {"action": [1, 2]})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["info"]["action_kinds"], ["int", "int"])
        self.assertIs(reply["info"]["action_in_space"], True)

    def test_box_action_takes_nested_flat_or_scalar_for_one_element(self):
        iid = self.create("Pendulum-v1")
        for action in ([0.5], 0.5, [[0.5]]):
            status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": action})
            self.assertEqual(status, 200, (action, reply))
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": [0.5, 0.5]}), 400, "shape")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": ["a"]}), 400, "Box")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": True}), 400, "Box")

    def test_box_actions_out_of_bounds_reach_the_env_as_locally(self):
        iid = self.create("Pendulum-v1", seed=2)
        local = gymnasium.make("Pendulum-v1")
        local.reset(seed=2)
        for action in ([5.0], [-7.5], [1.0], [2.0]):  # Pendulum clips to [-2, 2] itself
            status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": action})
            self.assertEqual(status, 200, reply)
            observation, reward, *_ = local.step(np.array(action, np.float32))
            np.testing.assert_allclose(reply["observation"], observation, rtol=1e-6)
            self.assertAlmostEqual(reply["reward"], float(reward), places=5)
        # Discrete stays strict: a local env would raise on those.
        cart = self.create()
        self.assertError(self.post(f"/v1/envs/{cart}/step/", {"action": 2}), 400, "Discrete")
        # Inside a Dict, the Box part is taken out of bounds too, and the rest is checked.
        dict_env = self.create("GymHTTPTest/Dict-v0")
        status, _, reply = self.post(f"/v1/envs/{dict_env}/step/", {"action": {"move": [9.0, -9.0], "jump": [1]}})
        self.assertEqual(status, 200, reply)
        self.assertError(self.post(f"/v1/envs/{dict_env}/step/", {"action": {"move": [0.0, 0.0], "jump": [2]}}), 400)


class TestBadActions(ServerTestCase):
    def test_wrong_actions_are_400_and_the_env_is_not_stepped(self):
        iid = self.create("GymHTTPTest/Counter-v0")
        self.post(f"/v1/envs/{iid}/reset/")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 0})[2]["observation"], 1)
        for action, fragment in [(True, "true"), (0.5, "0.5"), ("left", "left"), ([0, 1], "[0,1]"), (2, "2"), (-1, "-1"), ({"a": 1}, "a")]:
            with self.subTest(action=action):
                message = self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": action}), 400, fragment, "Discrete(2)")
                self.assertIn("action", message.lower())
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {}), 400, "A required request parameter 'action' was not provided")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 1.0})[2]["observation"], 2)  # an integral float is an int

    def test_tuple_and_dict_action_shape_errors(self):
        tid = self.create("GymHTTPTest/Tuple-v0")
        self.assertError(self.post(f"/v1/envs/{tid}/step/", {"action": [1]}), 400, "Tuple")
        did = self.create("GymHTTPTest/Dict-v0")
        self.assertError(self.post(f"/v1/envs/{did}/step/", {"action": {"move": [0, 0]}}), 400, "jump")


# ---------------------------------------------------------------------------
# The error contract
# ---------------------------------------------------------------------------


class TestErrors(ServerTestCase):
    def test_unknown_instance(self):
        for method, path in [("POST", "reset"), ("POST", "step"), ("GET", "action_space"), ("GET", "observation_space"),
                             ("GET", "action_space/sample"), ("POST", "close"), ("POST", "monitor/close")]:
            with self.subTest(path=path):
                self.assertError(self.request(method, f"/v1/envs/nope/{path}/", b'{"action": 0}'), 400, "Instance_id nope unknown")

    def test_missing_parameters(self):
        self.assertError(self.post("/v1/envs/", {}), 400, "A required request parameter 'env_id' was not provided")
        iid = self.create()
        self.assertError(self.post(f"/v1/envs/{iid}/monitor/start/", {}), 400, "A required request parameter 'directory' was not provided")

    def test_env_ids(self):
        self.assertError(self.post("/v1/envs/", {"env_id": "bad string"}), 400, "Attempted to look up malformed environment ID 'bad string'")
        message = self.assertError(self.post("/v1/envs/", {"env_id": "CartPol-v1"}), 400, "CartPol-v1", "not registered")
        self.assertIn("Did you mean", message)
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v99"}), 400, "CartPole-v99")

    def test_wrong_parameter_types_name_the_parameter(self):
        iid = self.create()
        cases = [
            ("/v1/envs/", {"env_id": 5}, "env_id"),
            ("/v1/envs/", {"env_id": ["CartPole-v1"]}, "env_id"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "seed": -1}, "seed"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "seed": 1.5}, "seed"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "seed": "1"}, "seed"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "seed": True}, "seed"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": [1]}, "kwargs"),
            ("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": {"no_such_argument": 1}}, "no_such_argument"),
            (f"/v1/envs/{iid}/reset/", {"seed": -5}, "seed"),
            (f"/v1/envs/{iid}/reset/", {"options": "fast"}, "options"),
            (f"/v1/envs/{iid}/step/", {"action": 0, "render": "yes"}, "render"),
            (f"/v1/envs/{iid}/monitor/start/", {"directory": 7}, "directory"),
            (f"/v1/envs/{iid}/monitor/start/", {"directory": "/tmp/x", "force": "yes"}, "force"),
        ]
        for path, body, name in cases:
            with self.subTest(body=body):
                self.assertError(self.post(path, body), 400, name)
        self.assertServing()

    def test_long_values_are_cut_in_messages(self):
        message = self.assertError(self.post("/v1/envs/", {"env_id": "x" * 100_000}), 400)
        import re
        longest = max(len(run) for run in re.findall("x+", message))
        self.assertLessEqual(longest, 2 * gymhttp.MAX_ECHO)  # each echo is cut
        self.assertLess(len(message), 1500)

    def test_malformed_json_and_non_object_bodies(self):
        iid = self.create()
        for body in (b"{", b"{'action': 0}", b"[1, 2]", b'"text"', b"\xff\xfe"):
            with self.subTest(body=body):
                self.assertError(self.post(f"/v1/envs/{iid}/step/", body), 400)

    def test_not_found_and_method_not_allowed(self):
        self.assertError(self.get("/v2/envs/"), 404, "/v2/envs")
        self.assertError(self.get("/index.html"), 404)
        status, resp, reply = self.request("DELETE", "/v1/envs/")
        self.assertError((status, resp, reply), 405)
        self.assertEqual(resp.getheader("Allow"), "GET, HEAD, POST")
        iid = self.create()
        status, resp, reply = self.get(f"/v1/envs/{iid}/step/")
        self.assertEqual(status, 405)
        self.assertEqual(resp.getheader("Allow"), "POST")

    def test_exception_inside_the_env_is_500_and_the_server_keeps_serving(self):
        iid = self.create("GymHTTPTest/Raising-v0")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 0})[0], 200)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 0}), 500, "the reactor is on fire", "RuntimeError")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 0}), 409, "broken", "reset")
        self.assertEqual(self.post(f"/v1/envs/{iid}/reset/")[0], 200)
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 0})[0], 200)
        other = self.create()
        self.assertEqual(self.post(f"/v1/envs/{other}/step/", {"action": 0})[0], 200)


# ---------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------


class TestConcurrency(ServerTestCase):
    def test_concurrent_steps_on_one_instance_lose_nothing(self):
        iid = self.create("GymHTTPTest/Counter-v0")
        self.post(f"/v1/envs/{iid}/reset/")
        seen, errors = [], []

        def worker():
            try:
                with client.Client(self.base) as c:
                    for _ in range(50):
                        seen.append(c.step(iid, 0)[0])
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(seen), list(range(1, 201)))

    def test_instances_step_side_by_side(self):
        ids = [self.create("GymHTTPTest/Sleepy-v0") for _ in range(4)]
        for iid in ids:
            self.post(f"/v1/envs/{iid}/reset/")
        done = []

        def worker(iid):
            with client.Client(self.base) as c:
                for _ in range(5):
                    c.step(iid, 0)
            done.append(iid)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - started
        self.assertEqual(sorted(done), sorted(ids))
        # 4 x 5 steps of 20 ms one after another take 0.4 s; a global lock would force that.
        self.assertLess(elapsed, 0.35, "instances did not step in parallel")


# ---------------------------------------------------------------------------
# Monitor
# ---------------------------------------------------------------------------


class TestMonitor(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="gymhttp-monitor-")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def files(self, kind):
        return sorted(f for f in os.listdir(self.dir) if f.startswith("openaigym.") and f.endswith(f".{kind}.json"))

    def load(self, kind):
        names = self.files(kind)
        self.assertEqual(len(names), 1, names)
        with open(os.path.join(self.dir, names[0])) as f:
            return json.load(f)

    def play(self, iid, episodes):
        lengths = []
        for _ in range(episodes):
            self.post(f"/v1/envs/{iid}/reset/")
            n, done = 0, False
            while not done:
                done = self.post(f"/v1/envs/{iid}/step/", {"action": 0})[2]["done"]
                n += 1
            lengths.append(n)
        return lengths

    def test_a_long_run_is_written_in_parts_of_bounded_size(self):
        # gym's loaders (gym.monitoring.load_results) read every manifest's stats file and merge them.
        part = 4
        with unittest.mock.patch.object(gymhttp, "MONITOR_PART", part):
            iid = self.create("GymHTTPTest/Counter-v0", kwargs={"max_episode_steps": 1})
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir})[0], 204)
            monitor = self.server.envs.get(iid).monitor
            for k in range(11):
                self.post(f"/v1/envs/{iid}/reset/")
                self.post(f"/v1/envs/{iid}/step/", {"action": 0})  # a one-step episode
                self.assertLess(monitor.count, part)  # memory: only the part being filled
            monitor.flush()
            self.assertEqual(monitor.sealed, [])  # written, and let go
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        manifests = self.files("manifest")
        self.assertEqual(len(manifests), 3)
        lengths, times, videos = [], [], []
        for name in manifests:
            with open(os.path.join(self.dir, name)) as f:
                manifest = json.load(f)
            videos += manifest["videos"]
            with open(os.path.join(self.dir, manifest["stats"])) as f:
                stats = json.load(f)
            self.assertLessEqual(len(stats["episode_lengths"]), part)
            lengths += stats["episode_lengths"]
            times += stats["timestamps"]
        self.assertEqual(lengths, [1] * 11)
        self.assertEqual(len(self.files("stats")), 3)
        self.assertEqual(sorted(times), sorted(set(times)))  # each episode once

    def test_stats_and_manifest_written_on_close(self):
        iid = self.create(seed=1)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "force": False, "resume": False, "video_callable": False})[0], 204)
        lengths = self.play(iid, 3)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        stats = self.load("stats")
        self.assertEqual(set(stats), {"initial_reset_timestamp", "timestamps", "episode_lengths", "episode_rewards", "episode_types"})
        self.assertEqual(stats["episode_lengths"], lengths)
        self.assertEqual(stats["episode_rewards"], [float(n) for n in lengths])
        self.assertEqual(stats["episode_types"], ["t"] * 3)
        self.assertEqual(len(stats["timestamps"]), 3)
        self.assertLessEqual(stats["initial_reset_timestamp"], stats["timestamps"][0])
        manifest = self.load("manifest")
        self.assertEqual(manifest["stats"], self.files("stats")[0])
        self.assertEqual(manifest["env_info"]["env_id"], "CartPole-v1")

    def test_flushed_on_server_shutdown(self):
        iid = self.create()
        self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir})
        lengths = self.play(iid, 2)
        self.post("/v1/shutdown/")
        self.thread.join(5)
        self.server.server_close()
        self.assertEqual(self.load("stats")["episode_lengths"], lengths)

    def test_flushed_on_instance_close(self):
        iid = self.create()
        self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir})
        lengths = self.play(iid, 1)
        self.post(f"/v1/envs/{iid}/close/")
        self.assertEqual(self.load("stats")["episode_lengths"], lengths)

    def test_force_clears_resume_keeps_and_neither_refuses(self):
        iid = self.create()
        self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir})
        self.play(iid, 1)
        self.post(f"/v1/envs/{iid}/monitor/close/")
        self.assertError(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir}), 400, "force", "resume")
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "resume": True})[0], 204)
        self.post(f"/v1/envs/{iid}/monitor/close/")
        self.assertEqual(len(self.files("stats")), 2)
        with open(os.path.join(self.dir, "keep.txt"), "w") as f:
            f.write("mine")
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "force": True})[0], 204)
        self.assertEqual(len(self.files("stats")), 1)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "keep.txt")))

    @unittest.skipUnless(importlib.util.find_spec("moviepy"), "moviepy is not installed (requirements.txt leaves it out: "
                         "it installs a 165 MB ffmpeg binary); pip install moviepy to run this test")
    def test_videos_are_recorded_and_listed(self):
        iid = self.create(kwargs={"render_mode": "rgb_array"})
        reply = self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "video_callable": 2})
        self.assertEqual(reply[0], 204, reply)
        lengths = self.play(iid, 4)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        videos = sorted(f for f in os.listdir(self.dir) if f.endswith(".mp4"))
        self.assertEqual(len(videos), 2, videos)  # every 2nd episode: the 1st and the 3rd
        self.assertEqual(self.load("manifest")["videos"], [[name, None] for name in videos])
        import imageio_ffmpeg  # what moviepy writes with

        def decode(name):  # (width, height), frames
            path = os.path.join(self.dir, name)
            frames = imageio_ffmpeg.read_frames(path)
            size = tuple(next(frames)["size"])
            frames.close()  # ends its ffmpeg
            return size, imageio_ffmpeg.count_frames_and_secs(path)[0]

        for name, length in zip(videos, lengths[::2]):
            # The reset's frame and one a step (the encoder may drop the last one).
            self.assertIn(decode(name), [((600, 400), length), ((600, 400), length + 1)], name)
        # Closing the instance mid-episode finishes that episode's video, and the manifest lists it.
        shutil.rmtree(self.dir)
        iid = self.create(kwargs={"render_mode": "rgb_array"})
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "video_callable": 1})[0], 204)
        self.post(f"/v1/envs/{iid}/reset/")
        for _ in range(3):
            self.post(f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
        videos = sorted(f for f in os.listdir(self.dir) if f.endswith(".mp4"))
        self.assertEqual(len(videos), 1, videos)
        self.assertEqual(self.load("manifest")["videos"], [[videos[0], None]])
        self.assertIn(decode(videos[0]), [((600, 400), 3), ((600, 400), 4)])
        # A resumed monitor's videos sit beside the last one's (not over them); each manifest lists its own.
        iid = self.create(kwargs={"render_mode": "rgb_array"})
        reply = self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "video_callable": 1, "resume": True})
        self.assertEqual(reply[0], 204, reply)
        self.play(iid, 1)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        videos = sorted(f for f in os.listdir(self.dir) if f.endswith(".mp4"))
        self.assertEqual(len(videos), 2, videos)
        listed = []
        for name in self.files("manifest"):
            with open(os.path.join(self.dir, name)) as f:
                listed.append([video for video, _ in json.load(f)["videos"]])
        self.assertEqual(sorted(listed), [[videos[0]], [videos[1]]])

    @unittest.skipUnless(importlib.util.find_spec("moviepy"), "moviepy is not installed (requirements.txt leaves it out)")
    def test_videos_go_on_after_the_env_process_dies(self):
        iid = self.create("GymHTTPTest/Misbehaving-v0", kwargs={"how": "segfault", "render_mode": "rgb_array"})
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "video_callable": 1})[0], 204)
        self.post(f"/v1/envs/{iid}/reset/")
        self.post(f"/v1/envs/{iid}/step/", {"action": 0})
        self.post(f"/v1/envs/{iid}/reset/")  # the first episode's video is written
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 1})[0], 500)  # its process dies mid-episode
        self.assertEqual(self.post(f"/v1/envs/{iid}/reset/")[0], 200)  # a fresh process, recording again
        self.post(f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        videos = sorted(f for f in os.listdir(self.dir) if f.endswith(".mp4"))
        self.assertEqual(len(videos), 2, videos)  # the episode that died with the process is lost
        self.assertEqual(self.load("manifest")["videos"], [[name, None] for name in videos])
        # A monitor can be closed, and started again, while the env is dead.
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "video_callable": 1, "resume": True})[0], 204)
        self.post(f"/v1/envs/{iid}/reset/")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 1})[0], 500)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": self.dir, "resume": True})[0], 204)

    def test_video_needs_rgb_array_and_moviepy(self):
        plain = self.create()
        self.assertError(self.post(f"/v1/envs/{plain}/monitor/start/", {"directory": self.dir, "video_callable": 1}), 400, "rgb_array")
        rgb = self.create(kwargs={"render_mode": "rgb_array"})
        reply = self.post(f"/v1/envs/{rgb}/monitor/start/", {"directory": self.dir, "video_callable": 2})
        try:
            import moviepy  # noqa: F401
        except ImportError:
            self.assertError(reply, 400, "moviepy")
        else:
            self.assertEqual(reply[0], 204)
        self.assertError(self.post(f"/v1/envs/{plain}/monitor/start/", {"directory": self.dir, "video_callable": "often"}), 400, "video_callable")


# ---------------------------------------------------------------------------
# client.py and example_agent.py
# ---------------------------------------------------------------------------


class TestClient(ServerTestCase):
    def test_original_method_names_and_shapes(self):
        c = self.client
        iid = c.env_create("CartPole-v1")
        self.assertIsInstance(iid, str)
        self.assertEqual(c.env_list_all(), {iid: "CartPole-v1"})
        obs = c.env_reset(iid)
        self.assertEqual(len(obs), 4)
        result = c.env_step(iid, c.env_action_space_sample(iid))
        self.assertIsInstance(result, list)
        self.assertEqual(len(result), 4)
        observation, reward, done, info = result
        self.assertIsInstance(reward, float)
        self.assertIsInstance(done, bool)
        self.assertEqual(c.env_action_space_info(iid)["n"], 2)
        self.assertTrue(c.env_action_space_contains(iid, 1))
        self.assertFalse(c.env_action_space_contains(iid, 5))
        self.assertEqual(c.env_observation_space_info(iid)["name"], "Box")
        self.assertTrue(c.env_observation_space_contains(iid, {"name": "Box", "shape": [4]}))
        with tempfile.TemporaryDirectory() as d:
            c.env_monitor_start(iid, d, force=True)
            c.env_monitor_close(iid)
        c.env_close(iid)
        self.assertEqual(c.env_list_all(), {})

    def test_gymnasium_shapes(self):
        c = self.client
        iid = c.env_create("CartPole-v1", seed=3)
        obs, info = c.reset(iid, seed=3)
        self.assertEqual(info, {})
        obs, reward, terminated, truncated, info = c.step(iid, 0)
        self.assertEqual((reward, terminated, truncated), (1.0, False, False))

    def test_server_error_carries_status_and_message(self):
        with self.assertRaises(client.ServerError) as ctx:
            self.client.env_reset("missing")
        self.assertEqual(ctx.exception.status_code, 400)
        self.assertEqual(ctx.exception.message, "Instance_id missing unknown")
        with self.assertRaises(client.ServerError) as ctx:
            self.client.upload("/tmp/results", api_key="key")
        self.assertEqual(ctx.exception.status_code, 410)

    def test_numpy_actions_are_sent(self):
        iid = self.client.env_create("Pendulum-v1")
        self.client.reset(iid)
        self.client.step(iid, np.array([0.25], dtype=np.float32))
        self.client.step(self.client.env_create("CartPole-v1"), np.int64(1))

    def test_shutdown_server(self):
        self.client.shutdown_server()
        self.thread.join(5)
        self.assertFalse(self.thread.is_alive())

    def test_a_server_that_is_not_gymhttp_is_named_in_one_line(self):
        class Html(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.send_error(501, "Unsupported method")

            def log_message(self, *a):
                pass

        url = serve_in_thread(self, Html)
        with client.Client(url) as c, self.assertRaises(client.ServerError) as ctx:
            c.env_create("CartPole-v1")
        self.assertEqual(ctx.exception.status_code, 501)
        self.assertEqual(ctx.exception.message, f"{url} answered 501 text/html; is this a gymhttp server?")

    def test_no_server_is_a_connection_error(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        with self.assertRaises(ConnectionError):
            client.Client(f"http://127.0.0.1:{port}").env_list_all()


class TestExampleAgent(ServerTestCase):
    def test_runs_episodes_and_writes_monitor(self):
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run(
                [sys.executable, "example_agent.py", "--url", self.base, "--episodes", "3", "--seed", "1", "--monitor", d],
                cwd=HERE, capture_output=True, text=True, timeout=60,
            )
            self.assertEqual(out.returncode, 0, out.stderr)
            lines = out.stdout.strip().splitlines()
            self.assertEqual(len(lines), 4, out.stdout)
            self.assertTrue(lines[0].startswith("episode 1: return "))
            self.assertTrue(lines[-1].startswith("summary: 3 episodes"))
            stats = [f for f in os.listdir(d) if f.endswith(".stats.json")]
            with open(os.path.join(d, stats[0])) as f:
                self.assertEqual(len(json.load(f)["episode_lengths"]), 3)
        self.assertEqual(self.client.env_list_all(), {})

    def test_the_error_that_stopped_it_is_the_one_reported(self):
        import example_agent

        # The env raises on its second step; then close fails too, as when the server has gone away.
        with unittest.mock.patch.object(client.Client, "env_close", side_effect=ConnectionError("server gone")), \
                unittest.mock.patch.object(example_agent.Client, "env_action_space_sample", return_value=0):
            with self.assertRaises(client.ServerError) as ctx:
                example_agent.run(self.base, "GymHTTPTest/Raising-v0", 1)
        self.assertEqual(ctx.exception.status_code, 500)
        self.assertIn("the reactor is on fire", ctx.exception.message)

    def test_render_paces_the_steps_for_watching(self):
        started = time.monotonic()
        out = subprocess.run([sys.executable, "example_agent.py", "--url", self.base, "--episodes", "1", "--seed", "3",
                              "--render", "--fps", "50"], cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        length = int(out.stdout.splitlines()[0].rsplit(" ", 1)[1])
        self.assertGreaterEqual(time.monotonic() - started, length / 50)

    def test_no_server_gives_a_clear_message(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        out = subprocess.run([sys.executable, "example_agent.py", "--url", f"http://127.0.0.1:{port}"],
                             cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 1)
        self.assertIn("no gymhttp server answered", out.stderr)
        self.assertNotIn("Traceback", out.stderr)


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_for_line(proc, timeout=30.0) -> str:
    """First stdout line of a started server (it prints its URL)."""
    result = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result:
        proc.kill()
        raise AssertionError("server printed nothing")
    return result[0]


class TestCommandLine(unittest.TestCase):
    def run_server(self, *args, env=None):
        proc = subprocess.Popen([sys.executable, "gymhttp.py", *args], cwd=HERE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(10), proc.stdout.close(), proc.stderr.close()))
        return proc

    def test_serves_prints_url_and_shuts_down(self):
        port = free_port()
        proc = self.run_server("--port", str(port))
        line = wait_for_line(proc)
        self.assertIn(f"http://127.0.0.1:{port}/", line)
        with client.Client(f"http://127.0.0.1:{port}") as c:
            self.assertEqual(c.env_list_all(), {})
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)

    def test_port_in_use_is_one_line_and_status_2(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        try:
            proc = self.run_server("-p", str(port))
            self.assertEqual(proc.wait(30), 2)
            err = proc.stderr.read()
        finally:
            sock.close()
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(str(port), err)
        self.assertNotIn("Traceback", err)

    def test_bad_import_is_one_line_and_status_2(self):
        proc = self.run_server("--import", "no_such_module_xyz", "-p", "0")
        self.assertEqual(proc.wait(30), 2)
        err = proc.stderr.read()
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("no_such_module_xyz", err)

    def test_import_registers_envs_and_allows_module_ids(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "my_envs_mod.py"), "w") as f:
                f.write("import gymnasium\ngymnasium.register('MyEnvs/Pole-v0', "
                        "entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv')\n")
            env = dict(os.environ, PYTHONPATH=d)
            port = free_port()
            proc = self.run_server("--import", "my_envs_mod", "-p", str(port), env=env)
            wait_for_line(proc)
            with client.Client(f"http://127.0.0.1:{port}") as c:
                c.step(c.env_create("MyEnvs/Pole-v0"), 0)
                c.env_create("my_envs_mod:MyEnvs/Pole-v0")
                with self.assertRaises(client.ServerError) as ctx:
                    c.env_create("os:MyEnvs/Pole-v0")
                self.assertEqual(ctx.exception.status_code, 400)
                self.assertIn("--import os", ctx.exception.message)
                c.shutdown_server()
            self.assertEqual(proc.wait(20), 0)

    def test_node_id_and_peers_are_checked(self):
        for args, fragment in ((["--node-id", "a-b"], "node_id"), (["--peers", "10.0.0.2:5000"], "peer")):
            out = subprocess.run([sys.executable, "gymhttp.py", "-p", "0", *args], cwd=HERE, capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2)
            self.assertIn(fragment, out.stderr)
            self.assertNotIn("Traceback", out.stderr)

    def test_allowing_web_pages_needs_a_token(self):
        env = {k: v for k, v in os.environ.items() if k != "GYMHTTP_TOKEN"}
        out = subprocess.run([sys.executable, "gymhttp.py", "-p", "0", "--allow-origin", "*"], cwd=HERE, capture_output=True,
                             text=True, timeout=30, env=env)
        self.assertEqual(out.returncode, 2)
        self.assertEqual(len(out.stderr.strip().splitlines()[-1:]), 1)
        self.assertIn("needs --token", out.stderr)
        self.assertNotIn("Traceback", out.stderr)
        proc = self.run_server("-p", "0", "--allow-origin", "https://app.example", env=dict(env, GYMHTTP_TOKEN="t0ken"))
        url = wait_for_line(proc).split(" serving on ")[1].split()[0].rstrip("/")
        with client.Client(url, token="t0ken") as c:
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)

    def test_port_out_of_range_and_version(self):
        for port in ("99999", "-1"):
            out = subprocess.run([sys.executable, "gymhttp.py", "-p", port], cwd=HERE, capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2)
            self.assertEqual(len(out.stderr.strip().splitlines()[-1:]), 1)
            self.assertIn("--port must be from 0", out.stderr)
            self.assertNotIn("Traceback", out.stderr)
        out = subprocess.run([sys.executable, "gymhttp.py", "--version"], cwd=HERE, capture_output=True, text=True, timeout=30)
        self.assertEqual((out.returncode, out.stdout.strip()), (0, f"gymhttp {gymhttp.__version__}"))

    def test_help(self):
        out = subprocess.run([sys.executable, "gymhttp.py", "-h"], cwd=HERE, capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0)
        for flag in ("--listen", "--port", "--import", "--spin-us"):
            self.assertIn(flag, out.stdout)

    def test_spin_us(self):
        servers = []
        with unittest.mock.patch.object(gymhttp, "run", servers.append):
            self.assertEqual(gymhttp.main(["-p", "0"]), 0)
            self.assertEqual(gymhttp.main(["-p", "0", "--spin-us", "250"]), 0)
            self.assertEqual(gymhttp.main(["-p", "0", "--spin-us", "0"]), 0)
        for server in servers:
            server.server_close()
        on = gymhttp._PREEMPTIONS is not None  # busy-polling exists only with two cores and getrusage()
        self.assertEqual([s.spin for s in servers], [gymhttp.DEFAULT_SPIN_US / 1e6 * on, 250e-6 * on, 0])
        for bad in ("-1", "100001"):
            err = subprocess.run([sys.executable, "gymhttp.py", "--spin-us", bad], cwd=HERE, capture_output=True, text=True, timeout=30)
            self.assertEqual(err.returncode, 2)
            self.assertIn(f"--spin-us must be from 0 (off) to 100000, not {bad}", err.stderr)
        for bad in (-1, 100_001, 0.5, "500"):
            with self.assertRaises(ValueError) as caught:
                gymhttp.make_server("127.0.0.1", 0, spin_us=bad)
            self.assertIn("spin_us must be an integer from 0 (off) to 100000", str(caught.exception))
            with self.assertRaises(ValueError):
                client.Client("http://127.0.0.1:1", spin_us=bad)



# ---------------------------------------------------------------------------
# The wire: keep-alive, framing, reconnects
# ---------------------------------------------------------------------------


def read_response(sock_file) -> tuple[int, dict, bytes]:
    """One HTTP response from a socket file, framed by Content-Length."""
    status_line = sock_file.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = sock_file.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = sock_file.read(int(headers.get("content-length", 0)))
    return status, headers, body


class TestKeepAlive(ServerTestCase):
    def test_many_requests_on_one_connection(self):
        iid = self.create()
        with socket.create_connection(("127.0.0.1", self.port)) as sock, sock.makefile("rb") as f:
            body = b'{"action": 1}'
            for n in range(100):
                sock.sendall(f"POST /v1/envs/{iid}/step/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                status, headers, reply = read_response(f)
                self.assertEqual(status, 200, reply)
                self.assertNotIn("connection", headers)
                self.assertEqual(len(reply), int(headers["content-length"]))
                if strict_loads(reply)["done"]:
                    sock.sendall(f"POST /v1/envs/{iid}/reset/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
                    self.assertEqual(read_response(f)[0], 200)
            # a 204 has no body, and the connection goes on after it
            sock.sendall(f"POST /v1/envs/{iid}/monitor/close/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status, headers, reply = read_response(f)
            self.assertEqual((status, reply), (204, b""))
            self.assertNotIn("content-length", headers)
            status, _, reply = read_response(f)
            self.assertEqual(status, 200)
            self.assertIn(iid, strict_loads(reply)["all_envs"])

    def test_connection_close_is_honoured(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock, sock.makefile("rb") as f:
            sock.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            status, headers, _ = read_response(f)
            self.assertEqual(status, 200)
            self.assertEqual(headers["connection"], "close")
            self.assertEqual(f.read(), b"")  # and the server closed it

    def test_http10_closes_unless_keep_alive(self):
        raw = raw_exchange(self.port, b"GET /v1/envs/ HTTP/1.0\r\n\r\n")
        status, headers, body = split_response(raw)
        self.assertEqual((status, headers["connection"]), (200, "close"))
        self.assertEqual(strict_loads(body), {"all_envs": {}})

    def test_each_response_is_written_once_and_nodelay_is_set(self):
        # The server's writes: this connection stays with it.  An instance process that owns one writes
        # its replies the same way (response_bytes, then one sendall).
        self.server.handoff = False
        writes, nodelay = [], []
        original_setup = gymhttp.GymHTTPRequestHandler.setup

        def setup(handler):
            original_setup(handler)
            nodelay.append(handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            real = handler.connection

            class Watched:
                def sendall(self, data):
                    writes.append(bytes(data))
                    return real.sendall(data)

                def __getattr__(self, name):
                    return getattr(real, name)

            handler.connection = Watched()

        gymhttp.GymHTTPRequestHandler.setup = setup
        try:
            c = client.Client(self.base)
            iid = c.env_create("CartPole-v1")
            for _ in range(5):
                c.step(iid, 0)
            c.close()
        finally:
            gymhttp.GymHTTPRequestHandler.setup = original_setup
        self.assertEqual(len(writes), 6)  # one write per response, headers and body together
        for data in writes:
            head, _, body = data.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200"))
            self.assertGreater(len(body), 0)
        self.assertTrue(all(nodelay), nodelay)


def step_for(c: client.Client, iid: str, seconds: float) -> int:
    """Step CartPole as fast as the wire allows for ``seconds``; returns the count."""
    end, count = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        _, _, terminated, truncated, _ = c.step(iid, count & 1)
        count += 1
        if terminated or truncated:
            c.reset(iid)
    return count


def preempted_every_time():
    """A stand-in involuntary-context-switch counter that goes up on every read."""
    return itertools.count().__next__


POLLING = unittest.skipIf(gymhttp._PREEMPTIONS is None, "busy-polling is off on one core or without getrusage()/poll()")


@POLLING
class TestServerBusyPolling(ServerTestCase):
    """The server polls for the next request of a fast client that is the only
    one stepping; it stops when the client pauses, and costs nothing idle.
    (The server's own polling, for a connection it keeps: no handoff here.
    TestOwnedConnections checks an instance process's.)"""

    server_options = {"handoff": False}

    def start_stepping(self, c):
        iid = c.env_create("CartPole-v1", seed=0)
        c.reset(iid)
        step_for(c, iid, gymhttp.SOLE_SECONDS + 0.15)
        return iid

    def handler_of(self):
        handlers = [h for h in list(self.server._connections) if h.spun or h._replied]
        self.assertEqual(len(handlers), 1, handlers)
        return handlers[0]

    def test_fast_sole_client_is_polled_for_and_an_idle_server_spends_no_cpu(self):
        # Never preempted, so that a busy machine cannot make it back off (tested below).
        with unittest.mock.patch.object(gymhttp, "_PREEMPTIONS", lambda: 0):
            self.start_stepping(self.client)
        handler = self.handler_of()
        self.assertGreater(handler.spun, 10)
        before = time.process_time()  # every thread of this process, the server's included
        time.sleep(0.4)
        self.assertLess(time.process_time() - before, 0.1, "the server kept spinning while the client was idle")
        spun = handler.spun
        self.client.env_list_all()
        self.assertEqual(handler.spun, spun, "a request after a long pause was polled for")

    def test_watching_from_another_connection_does_not_stop_it(self):
        watcher = client.Client(self.base)
        self.addCleanup(watcher.close)
        iid = self.client.env_create("CartPole-v1")
        self.client.reset(iid)
        end = time.monotonic() + gymhttp.SOLE_SECONDS + 0.2
        with unittest.mock.patch.object(gymhttp, "_PREEMPTIONS", lambda: 0):  # no back-off on a busy machine
            while time.monotonic() < end:
                step_for(self.client, iid, 0.02)
                watcher.env_details(iid)  # what the dashboard does, several times a second
        handlers = sorted((h for h in list(self.server._connections) if h._replied), key=lambda h: h.spun)
        self.assertEqual(len(handlers), 2)
        self.assertEqual(handlers[0].spun, 0)
        self.assertGreater(handlers[1].spun, 10)

    def test_a_client_whose_requests_fail_is_not_polled_for(self):
        iid = self.client.env_create("CartPole-v1")
        self.client.reset(iid)
        end = time.monotonic() + gymhttp.SOLE_SECONDS + 0.15
        while time.monotonic() < end:
            with self.assertRaises(client.ServerError):
                self.client.step(iid, 7)  # not in Discrete(2): a 400 every time
        self.assertEqual(self.handler_of().spun, 0)

    def test_clients_taking_turns_are_not_polled_for(self):
        other = client.Client(self.base)
        self.addCleanup(other.close)
        mine, theirs = self.client.env_create("CartPole-v1"), other.env_create("CartPole-v1")
        self.client.reset(mine)
        other.reset(theirs)
        end = time.monotonic() + gymhttp.SOLE_SECONDS + 0.15
        while time.monotonic() < end:
            for c, iid in ((self.client, mine), (other, theirs)):
                if any(c.step(iid, 0)[2:4]):
                    c.reset(iid)
        handlers = [h for h in list(self.server._connections) if h._replied]
        self.assertEqual(len(handlers), 2)
        self.assertEqual([h.spun for h in handlers], [0, 0])

    def test_backs_off_when_the_os_keeps_taking_the_core(self):
        with unittest.mock.patch.object(gymhttp, "_PREEMPTIONS", preempted_every_time()):
            iid = self.start_stepping(self.client)
            handler = self.handler_of()
            # More than SPIN_PREEMPTED_MAX preempted spins: a pause that doubles each time.
            self.assertEqual(handler.spun, gymhttp.SPIN_PREEMPTED_MAX + 1)
            self.assertEqual(handler._backoff, 2 * gymhttp.SPIN_BACKOFF)
            self.assertGreater(handler._calm_until, time.perf_counter())
            step_for(self.client, iid, 0.1)
            self.assertEqual(handler.spun, gymhttp.SPIN_PREEMPTED_MAX + 1)


class TestServerBusyPollingOff(ServerTestCase):
    server_options = {"spin_us": 0}

    def test_make_server_leaves_it_off(self):  # the server would share the GIL with this process
        server = gymhttp.make_server("127.0.0.1", 0)
        server.server_close()
        self.assertEqual(server.spin, 0)

    def test_spin_us_0_turns_it_off(self):
        self.assertEqual(self.server.spin, 0)
        iid = self.client.env_create("CartPole-v1")
        self.client.reset(iid)
        step_for(self.client, iid, gymhttp.SOLE_SECONDS + 0.15)
        handlers = [h for h in list(self.server._connections) if h._replied]
        self.assertEqual([h.spun for h in handlers], [0])


@POLLING
class TestClientBusyPolling(unittest.TestCase):
    """The client polls for replies that come quickly, in a process with one
    Python thread, and stops for a while when the OS keeps preempting it."""

    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen([sys.executable, "gymhttp.py", "-p", "0"], cwd=HERE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        cls.url = wait_for_line(cls.proc).split(" serving on ")[1].split()[0].rstrip("/")

    @classmethod
    def tearDownClass(cls):
        with client.Client(cls.url) as c:
            c.shutdown_server()
        cls.proc.wait(20)
        cls.proc.stdout.close()

    def setUp(self):
        # Other tests leave daemon threads behind; the server here is another process, so no GIL is shared.
        patcher = unittest.mock.patch.object(client.threading, "active_count", return_value=1)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.client = client.Client(self.url)
        self.addCleanup(self.client.close)
        self.iid = self.client.env_create("CartPole-v1", seed=0)
        self.client.reset(self.iid)
        self.spun_before = self.client._conn.spun

    def test_quick_replies_are_polled_for(self):
        # Never preempted, so that a busy machine cannot make it back off (tested below).
        with unittest.mock.patch.object(client, "_PREEMPTIONS", lambda: 0):
            count = step_for(self.client, self.iid, 0.2)
        self.assertGreater(self.client._conn.spun - self.spun_before, count // 4)

    def steps(self, count: int, preemptions=lambda: 0) -> None:
        with unittest.mock.patch.object(client, "_PREEMPTIONS", preemptions):
            for _ in range(count):
                self.client._conn._waited = 0.0  # count every request, however long the env (or setUp's reset) took
                self.client.step(self.iid, 0)

    def test_when_preempted_it_first_measures_replies_without_spinning(self):
        conn = self.client._conn
        conn._spins = conn._preempted = 0  # a fresh sample: a real preemption in setUp must not count
        self.steps(client.SPIN_PREEMPTED_MAX + 1 + client.SPIN_TRIAL, preempted_every_time())
        self.assertEqual(conn.spun - self.spun_before, client.SPIN_PREEMPTED_MAX + 1)  # then the trial: no spinning
        self.assertEqual(conn._trial, 0)
        self.assertEqual(conn._calm_count, client.SPIN_TRIAL)
        self.steps(1)
        self.assertGreater(conn._calm_measured, time.perf_counter() - 1)  # measured now
        self.assertGreater(conn._calm_mean, 0)

    def test_keeps_spinning_though_preempted_when_spinning_pays(self):
        conn = self.client._conn
        conn._spins = conn._preempted = 0
        conn._calm_mean, conn._calm_measured = 10.0, time.perf_counter()  # waiting took 10 s a reply
        self.steps(3 * (client.SPIN_PREEMPTED_MAX + 1), preempted_every_time())
        self.assertEqual(conn.spun - self.spun_before, 3 * (client.SPIN_PREEMPTED_MAX + 1))
        self.assertEqual((conn._calm_until, conn._trial), (0.0, 0))

    def test_backs_off_when_preempted_and_resumes_after_a_clean_sample(self):
        conn = self.client._conn
        conn._spins = conn._preempted = 0  # a fresh sample: a real preemption in setUp must not count
        conn._calm_mean, conn._calm_measured = 0.0, time.perf_counter()  # waiting was as quick as it gets
        with unittest.mock.patch.object(client, "_PREEMPTIONS", preempted_every_time()):
            step_for(self.client, self.iid, 0.2)
        self.assertEqual(conn.spun - self.spun_before, client.SPIN_PREEMPTED_MAX + 1)
        self.assertEqual(conn._backoff, 2 * client.SPIN_BACKOFF)
        self.assertGreater(conn._calm_until, time.perf_counter())
        conn._calm_until = 0.0  # the pause is over
        with unittest.mock.patch.object(client, "_PREEMPTIONS", lambda: 0):
            for _ in range(client.SPIN_SAMPLE + 10):
                self.client.step(self.iid, 0)
                conn._waited = 0.0  # count every request, however long the env took
        self.assertEqual(conn._backoff, client.SPIN_BACKOFF)

    def test_spin_us_0_turns_it_off(self):
        with client.Client(self.url, spin_us=0) as c:
            iid = c.env_create("CartPole-v1")
            c.reset(iid)
            step_for(c, iid, 0.1)
            self.assertEqual(c._conn.spun, 0)

    def test_other_python_threads_turn_it_off(self):
        with unittest.mock.patch.object(client.threading, "active_count", return_value=2):
            step_for(self.client, self.iid, 0.1)
        self.assertEqual(self.client._conn.spun, self.spun_before)


class TestReconnect(ServerTestCase):
    server_options = {"timeout": 0.3}

    def test_server_closed_idle_connection_then_transparent_reconnect(self):
        c = self.client
        iid = c.env_create("GymHTTPTest/Counter-v0")
        self.assertEqual(c.step(iid, 0)[0], 1)
        first = c._conn
        time.sleep(0.8)  # the server drops the idle connection after 0.3 s
        self.assertEqual(c.step(iid, 0)[0], 2)  # sent once, on a new connection
        self.assertIsNot(c._conn, first)
        self.assertEqual(c.step(iid, 0)[0], 3)


class TestNeverSendsTwice(unittest.TestCase):
    def test_a_post_whose_answer_is_lost_is_not_repeated(self):
        """A server that reads the request and hangs up: the client must not
        send the step again, because the env may have been stepped."""
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)  # a close would not wake a blocked accept(): the thread polls `finished`
        finished = threading.Event()
        received = []

        def serve():
            with listener:
                while not finished.is_set():  # every connection, to catch a resend on a new one
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        continue
                    with conn:
                        data = conn.recv(65536)
                        if data:
                            received.append(data)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        c = client.Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=5)
        try:
            with self.assertRaises(ConnectionError) as ctx:
                c.step("abc", 0)
            self.assertIn("may or may not", str(ctx.exception))
            time.sleep(0.2)
            self.assertEqual(len(received), 1)
            self.assertTrue(received[0].startswith(b"POST /v1/envs/abc/step/"))
        finally:
            c.close()
            finished.set()
            thread.join(5)
        self.assertFalse(thread.is_alive())


# ---------------------------------------------------------------------------
# Vector environments
# ---------------------------------------------------------------------------


class TestVector(ServerTestCase):
    def check_against_local(self, mode, encoding="list"):
        n = 4
        iid = self.create("CartPole-v1", num_envs=n, vectorization_mode=mode, encoding=encoding)
        local = gymnasium.make_vec("CartPole-v1", num_envs=n, vectorization_mode=mode)
        obs, info = self.client.reset(iid, seed=11)
        local_obs, _ = local.reset(seed=11)
        np.testing.assert_allclose(np.asarray(obs), local_obs, rtol=1e-6)
        for t in range(60):
            actions = [(t + k) % 2 for k in range(n)]
            obs, reward, terminated, truncated, info = self.client.step(iid, actions)
            l_obs, l_reward, l_term, l_trunc, _ = local.step(np.array(actions))
            np.testing.assert_allclose(np.asarray(obs), l_obs, rtol=1e-6)
            self.assertEqual(list(np.asarray(reward)), list(l_reward))
            self.assertEqual(list(np.asarray(terminated)), list(l_term))
            self.assertEqual(list(np.asarray(truncated)), list(l_trunc))
        local.close()
        return iid

    def test_sync_vector(self):
        iid = self.check_against_local("sync")
        reply = self.post(f"/v1/envs/{iid}/step/", {"action": [0, 1, 0, 1]})[2]
        self.assertEqual(len(reply["reward"]), 4)
        self.assertIs(type(reply["reward"][0]), float)
        self.assertEqual(reply["done"], [a or b for a, b in zip(reply["terminated"], reply["truncated"])])
        self.assertTrue(all(type(x) is bool for x in reply["done"]))

    def test_vector_entry_point(self):
        self.check_against_local("vector_entry_point")

    def test_async_vector_matches_local_and_close_ends_its_workers(self):
        iid = self.check_against_local("async")
        pid = self.get(f"/v1/envs/{iid}/")[2]["pid"]
        workers = children_of(pid)
        self.assertEqual(len(workers), 4)  # one process per sub-env, children of the instance process
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{w}") for w in workers + [pid]) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual([os.path.exists(f"/proc/{w}") for w in workers + [pid]], [False] * 5)

    def test_vector_base64(self):
        self.check_against_local("vector_entry_point", "base64")

    def test_default_mode_uses_the_vector_entry_point_and_spaces_give_both(self):
        iid = self.create("CartPole-v1", num_envs=3)
        # CartPole's vector entry point takes one seed, not a list: a sync vector would take it.
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"seed": [1, 2, 3]}), 400, "vector entry point")
        reply = self.get(f"/v1/envs/{iid}/action_space/")[2]
        self.assertEqual(reply["info"]["name"], "MultiDiscrete")
        self.assertEqual(reply["info"]["nvec"], [2, 2, 2])
        self.assertEqual(reply["single_info"], {"name": "Discrete", "n": 2, "start": 0, "dtype": "int64"})
        reply = self.get(f"/v1/envs/{iid}/observation_space/")[2]
        self.assertEqual(reply["info"]["shape"], [3, 4])
        self.assertEqual(reply["single_info"]["shape"], [4])
        self.assertEqual(len(self.get(f"/v1/envs/{iid}/action_space/sample")[2]["action"]), 3)

    def test_vector_kwargs_set_the_autoreset_mode(self):
        iid = self.create("CartPole-v1", num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": "SameStep"})
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["metadata"]["autoreset_mode"], "SameStep")

    def test_disabled_autoreset_takes_a_reset_mask(self):
        iid = self.create("CartPole-v1", num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": "Disabled"})
        first = self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})[2]["observation"]
        for _ in range(3):
            self.post(f"/v1/envs/{iid}/step/", {"action": [1, 1]})
        status, _, reply = self.post(f"/v1/envs/{iid}/reset/", {"options": {"reset_mask": [True, False]}})
        self.assertEqual(status, 200, reply)
        self.assertNotEqual(reply["observation"][1], first[1])  # sub-env 1 kept its episode
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"options": {"reset_mask": [1, 0]}}), 400, "reset_mask")
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"options": {"reset_mask": [True]}}), 400, "2 booleans")

    def test_step_before_reset_and_bad_batches(self):
        iid = self.create("CartPole-v1", num_envs=3, seed=4)
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": [0, 1, 0]})
        self.assertEqual(status, 200, reply)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": [0, 1]}), 400, "[0,1]", "shape")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": [0, 1, 2]}), 400, "[0,1,2]")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 1}), 400)
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"seed": [1, 2]}), 400, "seed")
        sync = self.create("CartPole-v1", num_envs=3, vectorization_mode="sync")
        obs = self.post(f"/v1/envs/{sync}/reset/", {"seed": [1, 2, 3]})[2]["observation"]
        local, _ = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync").reset(seed=[1, 2, 3])
        np.testing.assert_allclose(obs, local, rtol=1e-6)

    def test_bad_vector_parameters(self):
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 0}), 400, "num_envs")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 10**6}), 400, "num_envs")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": "4"}), 400, "num_envs")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "vectorization_mode": "gpu"}), 400, "vectorization_mode")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "vector_kwargs": [1]}), 400, "vector_kwargs")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "vectorization_mode": "sync"}), 400, "num_envs")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "encoding": "hex"}), 400, "encoding")


# ---------------------------------------------------------------------------
# The array envelope
# ---------------------------------------------------------------------------

ENVELOPE_CASES = {
    "uint8 image": np.arange(210 * 160 * 3, dtype=np.uint64).astype(np.uint8).reshape(210, 160, 3),
    "float32": np.array([[1.5, -2.25], [np.pi, 1e-30]], dtype=np.float32),
    "float64 non-finite": np.array([np.nan, np.inf, -np.inf, 0.1]),
    "float16": np.array([0.5, -1.0], dtype=np.float16),
    "bool": np.array([True, False, True]),
    "int64": np.array([-(2**62), 0, 2**62 + 5], dtype=np.int64),
    "0-d": np.array(7, dtype=np.int32),
    "big-endian input": np.array([1, 258], dtype=">u2"),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "non-contiguous": np.arange(12, dtype=np.int16).reshape(3, 4)[:, ::2],
}


class TestEnvelope(unittest.TestCase):
    def test_round_trip_of_dtypes_and_shapes(self):
        for name, array in ENVELOPE_CASES.items():
            with self.subTest(case=name):
                for make in (gymhttp.to_envelope, lambda a: strict_loads(gymhttp.raw_envelope(a))):
                    wire = strict_loads(json.dumps(make(array)))
                    self.assertEqual(wire["shape"], list(array.shape))
                    self.assertEqual(np.dtype(wire["dtype"]), array.dtype.newbyteorder("="))
                    back = gymhttp.from_envelope(wire)
                    np.testing.assert_array_equal(back, array)
                    self.assertEqual(back.dtype, array.dtype.newbyteorder("="))
                    via_client = client.decode_envelopes(wire)
                    np.testing.assert_array_equal(via_client, array)
                    if array.shape:
                        self.assertTrue(via_client.flags.writeable)
                    else:  # shape [] is a numpy scalar (typed instances send scalars so)
                        self.assertIsInstance(via_client, np.generic)
                    self.assertEqual(via_client.dtype, array.dtype.newbyteorder("="))

    def test_client_envelopes_are_accepted_by_the_server(self):
        for name, array in ENVELOPE_CASES.items():
            with self.subTest(case=name):
                env = client.encode_array(array)
                self.assertEqual(strict_loads(env.json), dict(env))
                np.testing.assert_array_equal(gymhttp.from_envelope(strict_loads(json.dumps(env))), array)
        env = client.encode_array([[1, 2], [3, 4]])
        np.testing.assert_array_equal(gymhttp.from_envelope(env), [[1, 2], [3, 4]])
        self.assertEqual(client.encode_array([0.5, 1])["dtype"], "float64")

    def test_little_endian_bytes_on_the_wire(self):
        env = gymhttp.to_envelope(np.array([1, 2], dtype=np.uint16))
        import base64
        self.assertEqual(base64.b64decode(env["__ndarray__"]), b"\x01\x00\x02\x00")

    def test_bad_envelopes_are_refused(self):
        good = gymhttp.to_envelope(np.zeros(4, np.float32))
        for bad in ({**good, "dtype": "object"}, {**good, "dtype": 5}, {**good, "shape": [5]}, {**good, "shape": [-4]},
                    {**good, "shape": "4"}, {**good, "__ndarray__": "!!!"}, {**good, "__ndarray__": 7}):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    gymhttp.from_envelope(bad)

    def test_client_decodes_without_numpy(self):
        cases = {k: gymhttp.to_envelope(v) for k, v in ENVELOPE_CASES.items() if k != "float64 non-finite"}
        code = (
            "import sys, json\n"
            "sys.modules['numpy'] = None  # numpy cannot be imported\n"
            "import client\n"
            "print(json.dumps(client.decode_envelopes(json.loads(sys.stdin.read()))))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(cases), cwd=HERE,
                             capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        decoded = json.loads(out.stdout)
        for name, array in ENVELOPE_CASES.items():
            if name in cases:
                with self.subTest(case=name):
                    self.assertEqual(decoded[name], array.tolist())


class TestBase64OverTheWire(ServerTestCase):
    def test_image_observations_arrive_as_envelopes_and_decode(self):
        iid = self.client.env_create("GymHTTPTest/Image-v0", encoding="base64")
        obs, _ = self.client.reset(iid, seed=0)
        self.assertIsInstance(obs, np.ndarray)
        self.assertEqual((obs.shape, obs.dtype), ((8, 6, 3), np.uint8))
        listed = self.client.env_create("GymHTTPTest/Image-v0")
        self.assertEqual(np.asarray(self.client.reset(listed, seed=0)[0]).tolist(), obs.tolist())
        raw = self.post(f"/v1/envs/{iid}/step/", {"action": 0})[2]["observation"]
        self.assertEqual(set(raw), {"__ndarray__", "dtype", "shape"})

    def test_nested_spaces_and_vector_arrays_use_envelopes(self):
        iid = self.create("GymHTTPTest/Dict-v0", encoding="base64")
        reply = self.post(f"/v1/envs/{iid}/step/", {"action": {"move": client.encode_array(np.array([0.1, 0.2], np.float32)), "jump": [0]}})[2]
        self.assertEqual(reply["observation"]["position"]["dtype"], "float32")
        self.assertIsInstance(reply["observation"]["mode"], int)
        vid = self.create("CartPole-v1", num_envs=5, encoding="base64")
        reply = self.post(f"/v1/envs/{vid}/step/", {"action": client.encode_array(np.ones(5, np.int64))})[2]
        for field in ("observation", "reward", "terminated", "truncated", "done"):
            self.assertIn("__ndarray__", reply[field], field)
        self.assertEqual(reply["done"]["dtype"], "bool")
        self.assertEqual(reply["reward"]["shape"], [5])

    def test_envelope_actions_are_checked(self):
        iid = self.create("Pendulum-v1")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": client.encode_array(np.array([0.5], np.float32))})[0], 200)
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": client.encode_array(np.array([9.0], np.float32))})[0], 200)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": client.encode_array(np.array([1.0, 2.0], np.float32))}), 400, "shape")
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": {"__ndarray__": "AAAA", "dtype": "float32", "shape": [3]}}), 400, "bytes")


class TestBenchmark(unittest.TestCase):
    def test_quick_run_prints_every_row(self):
        out = subprocess.run([sys.executable, os.path.join("benchmarks", "throughput.py"), "--quick"], cwd=HERE,
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        for row in ("in-process", "bare TCP", "client.Client", "64 envs, list", "64 envs, base64",
                    "210x160x3 uint8 frames, list", "210x160x3 uint8 frames, base64", "8 client threads (one process) on 8 CartPole",
                    "8 client processes on 8 CartPole instances, --isolation process: server CPU",
                    "8 client processes on 8 CartPole instances, --handoff off", "--handoff off (every request relayed",
                    "round-robin over one connection",
                    "20 ms env", "memory per idle", "the step floor", "the polling step floor", "--isolation thread",
                    "CPU-heavy env", "2 clients on 2 instances, --isolation process", "create a CartPole instance",
                    "instance process's own", "client.RemoteEnv", "client.RemoteVectorEnv (a VectorEnv), 64",
                    "the step done in a child process", "writing the reply to the client's socket itself"):
            self.assertIn(row, out.stdout)
        if importlib.util.find_spec("ale_py") and importlib.util.find_spec("cv2"):
            for row in ("Pong (ALE/Pong-v5), raw 210x160x3 frames, in-process", "AtariPreprocessing + 4-frame stack, in-process",
                        "client.RemoteEnv (wrappers on the server), --isolation process"):
                self.assertIn(row, out.stdout)
        self.assertIn("| target | measured | wanted | met |", out.stdout)


# ---------------------------------------------------------------------------
# Hostile input: every case gets a 4xx JSON answer, and nothing is lost
# ---------------------------------------------------------------------------


def exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[int, dict, object, bool]:
    """Send raw bytes; (status, headers, JSON body, closed-by-server)."""
    raw = raw_exchange(port, data, timeout)
    status, headers, body = split_response(raw)
    body = body[: int(headers.get("content-length", len(body)))]
    return status, headers, strict_loads(body) if body else None, True


class TestHostileInput(ServerTestCase):
    def setUp(self):
        super().setUp()
        # An instance made before the onslaught, whose trajectory must come out unharmed.
        self.witness = self.client.env_create("CartPole-v1", seed=123)
        self.local = gymnasium.make("CartPole-v1")
        self.local.reset(seed=123)
        self.client.reset(self.witness)
        self.t = 0

    def step_witness(self):
        action = (self.t * 5 // 3) % 2
        self.t += 1
        obs, reward, terminated, truncated, _ = self.client.step(self.witness, action)
        l_obs, l_reward, l_terminated, l_truncated, _ = self.local.step(action)
        np.testing.assert_allclose(obs, l_obs, rtol=1e-6)
        self.assertEqual((reward, terminated, truncated), (l_reward, l_terminated, l_truncated))
        if terminated or truncated:
            self.client.reset(self.witness, seed=self.t)
            self.local.reset(seed=self.t)

    def expect_4xx(self, data: bytes, status: int, fragment: str = "", closes: bool = True):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
                if closes is False:
                    break
        got, headers, body = split_response(b"".join(chunks))
        self.assertEqual(got, status, body)
        self.assertEqual(headers["content-type"], "application/json")
        message = strict_loads(body[: int(headers["content-length"])])["message"]
        self.assertIn(fragment, message)
        if closes:
            self.assertEqual(headers.get("connection"), "close")
        self.step_witness()
        return message

    def test_bad_framing(self):
        cases = [
            (b"HELLO\r\n\r\n", 400, "request line"),
            (b"GET /v1/envs/\r\n\r\n", 400, "HTTP/0.9"),
            (b"GET /v1/envs/ HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
            (b"GET /v1/envs/ HTTP/1.9\r\nHost: 127.0.0.1\r\n\r\n", 505, "HTTP/1.9 is not supported"),
            (b"GET /v1/envs/ HTTP/1.1x\r\nHost: 127.0.0.1\r\n\r\n", 400, "request line"),
            (b"GET /v1/envs/ HTTP/1.1\r\n\r\n", 400, "needs a Host header"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n", 400, "Two Host headers"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400, "control character"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \x0b25\r\n\r\n", 400, "control character"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\x0c\r\n\r\n{}", 400, "control character"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A\x00b: 1\r\n\r\n", 400, "header"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A b: 1\r\n\r\n", 400, "header"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\rX-B: 2\r\n\r\n", 400, "control character"),
            (b"\x00\x01\x02 garbage \xff\r\n\r\n", 400, ""),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", 400, "Content-Length"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400, "Content-Length"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "Conflicting"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400, "Transfer-Encoding"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk"),
            # int(x, 16) takes these; RFC 9112 does not, and a proxy that reads them otherwise smuggles requests.
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n1_8\r\n", 400, "chunk size"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n 18\r\n", 400, "chunk size"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n", 400, "chunk size"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n", 400, "chunk size"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n", 400, "CRLF"),
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \xb2\r\n\r\n{}", 400, "Content-Length"),  # a superscript 2
            (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \xd9\xa2\r\n\r\n{}", 400, "Content-Length"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Line\r\n\r\n", 400, "header"),
            (b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n folded: header\r\n\r\n", 400, "header"),
        ]
        for data, status, fragment in cases:
            with self.subTest(data=data[:40]):
                self.expect_4xx(data, status, fragment)

    def test_sizes(self):
        self.expect_4xx(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "Request line")
        self.expect_4xx(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 10_000 + b"\r\n\r\n", 431, "header")
        flood = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        self.expect_4xx(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + flood + b"\r\n", 431, "headers")
        # 413 comes before the body is read: no body is sent at all here.
        self.expect_4xx(b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n", 413, "--max-body")

    def test_chunked_bodies_work(self):
        iid = self.create()
        body = b'{"action": 1}'
        data = (f"POST /v1/envs/{iid}/step/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
                + b"5\r\n" + body[:5] + b"\r\n" + b"%x\r\n" % (len(body) - 5) + body[5:] + b"\r\n0\r\n\r\n")
        status, _, reply = split_response(raw_exchange(self.port, data))
        self.assertEqual(status, 200, reply)
        self.step_witness()

    def test_bad_bodies(self):
        iid = self.create()
        path = f"/v1/envs/{iid}/step/"
        cases = [
            (b"[" * 100_000, "100000 deep"),
            (b'{"action": ' + b"[" * 5000 + b"]" * 5000 + b"}", ""),
            (b"\xff\xfe\x00{", "UTF-8"),
            (b'{"action": NaN}', "NaN"),
            (b'{"action": Infinity}', "Infinity"),
            (b'{"action": -Infinity}', "Infinity"),
            (b'{"action": 1', "not valid JSON"),
            (b'{"action": 1} trailing', "not valid JSON"),
            (b"1" * 5000, "JSON"),
        ]
        for body, fragment in cases:
            with self.subTest(body=body[:30]):
                data = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                self.expect_4xx(data, 400, fragment, closes=False)

    def test_every_wrong_json_type_for_every_parameter(self):
        iid = self.create()
        self.monitor_dir = tempfile.mkdtemp(prefix="gymhttp-types-")
        self.addCleanup(shutil.rmtree, self.monitor_dir, True)
        wrong = {"string": "x", "fraction": 1.5, "integer": 3, "negative": -1, "boolean": True, "list": [1], "object": {"a": 1}}
        params = {
            "/v1/envs/": ({"env_id": "CartPole-v1"}, {
                "env_id": {"string"}, "seed": {"integer"}, "kwargs": {"object"}, "num_envs": {"integer"},
                "encoding": set(), "vectorization_mode": set(), "vector_kwargs": set()}),
            f"/v1/envs/{iid}/reset/": ({}, {"seed": {"integer"}, "options": {"object"}}),
            f"/v1/envs/{iid}/step/": ({"action": 0}, {"action": {"integer"}, "render": {"boolean"}}),
            f"/v1/envs/{iid}/monitor/start/": ({"directory": self.monitor_dir}, {
                "directory": {"string"}, "force": {"boolean"}, "resume": {"boolean"}, "video_callable": {"integer", "boolean"}}),
            "/v1/upload/": ({"training_dir": "/tmp", "api_key": "k"}, {
                "training_dir": {"string"}, "api_key": {"string"}, "algorithm_id": {"string"}}),
        }
        for path, (base, table) in params.items():
            for name, valid_kinds in table.items():
                for kind, value in wrong.items():
                    if kind in valid_kinds:
                        continue
                    if name == "video_callable" and value is True:
                        continue
                    with self.subTest(path=path, param=name, kind=kind):
                        status, resp, reply = self.post(path, {**base, name: value})
                        self.assertEqual(status, 400, (name, value, reply))
                        self.assertIn(name if name != "action" else "Action", reply["message"])
                        self.assertNotIn("Traceback", reply["message"])
                        self.post(f"/v1/envs/{iid}/monitor/close/")
        self.step_witness()

    def test_absurd_values(self):
        huge = 10 ** 400
        for body in ({"env_id": "CartPole-v1", "seed": huge}, {"env_id": "CartPole-v1", "num_envs": huge},
                     {"env_id": "x" * 100_000}, {"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": huge}}):
            with self.subTest(body=str(body)[:60]):
                status, _, reply = self.post("/v1/envs/", body)
                self.assertIn(status, (200, 400), reply)
                self.assertLess(len(reply.get("message", "")), 1500)
        pid = self.create("Pendulum-v1")
        self.assertError(self.post(f"/v1/envs/{pid}/step/", {"action": [huge]}), 400, "Action")
        cid = self.create()
        self.assertError(self.post(f"/v1/envs/{cid}/step/", {"action": huge}), 400, "Action")
        self.assertError(self.post(f"/v1/envs/{cid}/reset/", {"seed": -(10 ** 30)}), 400, "seed")
        self.assertEqual(self.post("/v1/envs/", b"{\"env_id\": \"CartPole-v1\", \"seed\": " + b"9" * 5000 + b"}")[0], 400)
        self.step_witness()

    def test_path_tricks_in_instance_ids(self):
        for path in ("/v1/envs/..%2F..%2Fetc%2Fpasswd/reset/", "/v1/envs/%00/reset/", "/v1/envs/%2e%2e/reset/",
                     "/v1/envs/" + "z" * 7000 + "/reset/", "/v1/envs/a%2Fb/reset/", "/v1/envs/%ZZ/reset/"):
            with self.subTest(path=path[:50]):
                message = self.assertError(self.post(path), 400, "unknown")
                self.assertLess(len(message), 600)
        for path in ("/v1/../v1/envs/", "/v1//envs/x/reset", "/v1/envs/x/reset/../../shutdown"):
            with self.subTest(path=path):
                self.assertIn(self.post(path)[0], (400, 404, 405))
        self.assertServing()
        self.step_witness()

    def test_witness_after_everything(self):
        for method in (self.test_bad_framing, self.test_sizes, self.test_bad_bodies, self.test_path_tricks_in_instance_ids):
            method()
        for _ in range(50):
            self.step_witness()


# ---------------------------------------------------------------------------
# Concurrency under load
# ---------------------------------------------------------------------------


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Healthy:
    """A CartPole instance stepped beside a misbehaving one, checked step by
    step against a local CartPole with the same seed and actions."""

    def __init__(self, test: ServerTestCase, seed: int = 5):
        self.test = test
        self.iid = test.create("CartPole-v1", encoding="base64")
        self.local = gymnasium.make("CartPole-v1")
        self.c = client.Client(test.base, token=test.server_options.get("token"))
        obs, _ = self.c.reset(self.iid, seed=seed)
        local_obs, _ = self.local.reset(seed=seed)
        np.testing.assert_array_equal(obs, local_obs)
        self.t = 0

    def step(self, count: int = 5) -> None:
        for _ in range(count):
            self.t += 1
            action = self.t % 2
            obs, reward, terminated, truncated, _ = self.c.step(self.iid, action)
            l_obs, l_reward, l_term, l_trunc, _ = self.local.step(action)
            np.testing.assert_array_equal(obs, l_obs)  # exact: same bits as a local env
            self.test.assertEqual((reward, terminated, truncated), (l_reward, l_term, l_trunc))
            if terminated or truncated:
                self.c.reset(self.iid)
                self.local.reset()

    def close(self) -> None:
        self.c.close()
        self.local.close()


class IsolationTestCase(ServerTestCase):
    """Misbehaving envs beside healthy ones."""

    def setUp(self):
        super().setUp()
        self.addCleanup(RELEASE.clear)
        self.addCleanup(RELEASE.set)  # first of all: any thread stuck in an env goes

    def background(self, function: Callable) -> dict:
        """Run ``function`` in a thread that the test's end waits for; its
        result lands in the returned dict under "result"."""
        box: dict = {}

        def run():
            try:
                box["result"] = function()
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        box["thread"] = thread
        self.addCleanup(thread.join, 15)  # after RELEASE.set(): cleanups run last first
        return box

    def misbehaving(self, how: str, **kwargs) -> str:
        return self.create("GymHTTPTest/Misbehaving-v0", kwargs={"how": how, **kwargs})

    def step(self, iid: str, action: int):
        return self.post(f"/v1/envs/{iid}/step/", {"action": action})

    def assertBrokenThenRecovers(self, iid: str, *fragments: str) -> None:
        """Steps get 409 naming what happened; a reset makes it work again; close works."""
        self.assertError(self.step(iid, 0), 409, "broken", *fragments)
        status, _, reply = self.post(f"/v1/envs/{iid}/reset/", {"seed": 1})
        self.assertEqual(status, 200, reply)
        self.assertEqual(reply["observation"], 0)
        status, _, reply = self.step(iid, 0)
        self.assertEqual((status, reply["observation"]), (200, 1))
        self.assertIsNone(self.get(f"/v1/envs/{iid}/")[2]["broken"])
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)


class TestProcessIsolation(IsolationTestCase):
    server_options = {"env_timeout": 1.5}

    def crash(self, how: str, status: int, *fragments: str) -> None:
        healthy = Healthy(self)
        iid = self.misbehaving(how)
        self.assertEqual(self.step(iid, 0)[0], 200)
        pid = self.get(f"/v1/envs/{iid}/")[2]["pid"]
        healthy.step()
        message = self.assertError(self.step(iid, 1), status, *fragments)
        self.assertIn(f"pid {pid}", message)
        self.assertFalse(os.path.exists(f"/proc/{pid}"))  # ended and reaped
        healthy.step(20)
        self.assertBrokenThenRecovers(iid, *fragments)
        self.assertNotEqual(self.get(f"/v1/envs/{healthy.iid}/")[2]["pid"], pid)
        healthy.step(20)
        healthy.close()

    def test_a_segfault_is_a_500_naming_the_signal(self):
        self.crash("segfault", 500, "SIGSEGV")

    def test_an_abort_is_a_500_naming_the_signal(self):
        self.crash("abort", 500, "SIGABRT")

    def test_an_exit_is_a_500_naming_its_status(self):
        self.crash("exit", 500, "exited with status 7")

    def test_a_hung_step_is_killed_at_the_env_timeout(self):
        self.crash("hang", 504, "--env-timeout 1.5")

    def test_a_busy_loop_is_killed_at_the_env_timeout(self):
        self.crash("spin", 504, "--env-timeout 1.5")

    def test_an_exception_keeps_the_process(self):
        healthy = Healthy(self)
        iid = self.misbehaving("raise")
        pid = self.get(f"/v1/envs/{iid}/")[2]["pid"]
        self.assertError(self.step(iid, 1), 500, "RuntimeError: the env misbehaved")
        self.assertError(self.step(iid, 0), 409, "raised RuntimeError during step")
        self.assertEqual(self.post(f"/v1/envs/{iid}/reset/")[0], 200)
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["pid"], pid)  # the same process: it only raised
        healthy.step(10)
        healthy.close()

    def test_a_process_killed_from_outside(self):
        iid = self.create("CartPole-v1")
        pid = self.get(f"/v1/envs/{iid}/")[2]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}/statm") and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 0}), 500, "SIGKILL")
        self.assertBrokenThenRecoversCartPole(iid)

    def assertBrokenThenRecoversCartPole(self, iid):
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 0}), 409, "reset it")
        obs = self.post(f"/v1/envs/{iid}/reset/", {"seed": 3})[2]["observation"]
        self.assertEqual(obs, gymnasium.make("CartPole-v1").reset(seed=3)[0].tolist())

    def test_the_timeout_covers_make(self):
        started = time.monotonic()
        self.assertError(self.post("/v1/envs/", {"env_id": "GymHTTPTest/Misbehaving-v0", "kwargs": {"make_hangs": True}}),
                         504, "--env-timeout 1.5", "make")
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(self.client.env_list_all(), {})

    def test_steps_go_on_beside_a_hung_env(self):
        healthy = Healthy(self)
        iid = self.misbehaving("hang")
        stuck = self.background(lambda: self.step(iid, 1))
        time.sleep(0.2)
        healthy.step(50)  # while the other is stuck
        stuck["thread"].join(10)
        self.assertError(stuck["result"], 504, "--env-timeout")
        healthy.close()

    def test_details_carry_the_pid_and_memory(self):
        iid = self.create("CartPole-v1")
        details = self.get(f"/v1/envs/{iid}/")[2]
        self.assertNotEqual(details["pid"], os.getpid())
        self.assertIn(details["pid"], children_of(self.server.starter.pid))
        self.assertAlmostEqual(details["rss"], rss_of(details["pid"]), delta=8 << 20)


class TestProcessIsolationHangs(IsolationTestCase):
    """No --env-timeout: what a hung env can and cannot stop."""

    def test_a_hung_render_holds_up_no_other_render_and_close_ends_it(self):
        other = self.create("CartPole-v1", kwargs={"render_mode": "rgb_array"})
        self.post(f"/v1/envs/{other}/reset/")
        iid = self.misbehaving("hang", render_mode="rgb_array")
        self.post(f"/v1/envs/{iid}/reset/")
        stuck = self.background(lambda: self.get(f"/v1/envs/{iid}/render/"))
        time.sleep(0.3)
        for _ in range(3):
            status, resp, frame = self.get(f"/v1/envs/{other}/render/")
            self.assertEqual((status, resp.getheader("Content-Type"), png_pixels(frame).shape), (200, "image/png", (400, 600, 3)))
        started = time.monotonic()
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
        self.assertLess(time.monotonic() - started, 2.5)
        stuck["thread"].join(5)
        self.assertError(stuck["result"], 410, "closed while its render ran")
        self.assertEqual(self.client.env_list_all(), {other: "CartPole-v1"})


class TestStarterClose(unittest.TestCase):
    def test_close_wakes_a_request_blocked_on_the_starter(self):
        # A request waiting on the control socket must be woken when the server closes the
        # starter, not left blocked on a socket whose number may soon name another file.
        starter = gymhttp.ProcessStarter({})
        pid, sock = starter.start()
        self.addCleanup(sock.close)
        starter_pid, waiting = starter.pid, {}

        def wait():
            waiting["code"] = starter.wait(pid, 3.0)  # the instance lives on: the starter answers after 3 s
            waiting["at"] = time.monotonic()

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        starter.close()
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertLess(waiting["at"] - started, 1.5, "the waiting request was not woken by close()")
        self.assertIsNone(waiting["code"])
        self.assertEqual(starter.pid, starter_pid)  # and no new starter was forked


class TestProcessMemory(IsolationTestCase):
    def setUp(self):
        # The limit: what an instance process holds from the start (a fork of this one), and 300 MiB.
        self.server_options = {"max_env_memory": (rss_of(os.getpid()) >> 20) + 300}
        super().setUp()

    def test_a_leak_is_ended_at_the_limit_and_the_server_does_not_grow(self):
        healthy = Healthy(self)
        iid = self.misbehaving("leak")
        before = rss_of(os.getpid())
        for _ in range(40):
            status, _, reply = self.step(iid, 1)
            if status != 200:
                break
            healthy.step(1)
        self.assertError((status, _, reply), 500, f"--max-env-memory {self.server_options['max_env_memory']} MiB")
        self.assertLess(rss_of(os.getpid()) - before, 50 << 20)  # the leak was never here
        healthy.step(10)
        self.assertBrokenThenRecovers(iid, "--max-env-memory")
        healthy.close()

    def test_a_make_that_grows_is_ended_at_the_limit_and_frees_its_slot(self):
        limit = self.server_options["max_env_memory"]
        started = time.monotonic()
        message = self.assertError(self.post("/v1/envs/", {"env_id": "GymHTTPTest/Misbehaving-v0",
                                                           "kwargs": {"make_balloon_mib": limit}}),
                                   500, f"--max-env-memory {limit} MiB", "during make", "no instance was made")
        self.assertNotIn("reset it", message)
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(self.client.env_list_all(), {})
        self.assertEqual(self.server.runners, set())  # its process is gone too
        self.assertEqual(self.server.envs.processes, 0)

    def test_the_remake_after_a_crash_is_watched_too(self):
        marker = os.path.join(tempfile.mkdtemp(prefix="gymhttp-remake-"), "balloon")
        self.addCleanup(shutil.rmtree, os.path.dirname(marker), True)
        limit = self.server_options["max_env_memory"]
        iid = self.misbehaving("segfault", make_balloon_mib=limit, make_balloon_if=marker)
        self.assertError(self.step(iid, 1), 500, "SIGSEGV")
        open(marker, "w").close()  # the fresh process's make now grows
        started = time.monotonic()
        self.assertError(self.post(f"/v1/envs/{iid}/reset/"), 500, f"--max-env-memory {limit} MiB", "during make", "reset it")
        self.assertLess(time.monotonic() - started, 10)
        os.remove(marker)
        self.assertEqual(self.post(f"/v1/envs/{iid}/reset/")[0], 200)  # and a reset after that works

    def test_an_async_vectors_workers_count_toward_the_limit(self):
        # Its sub-envs live in worker processes of the instance's own: what they grow is the instance's memory.
        limit = self.server_options["max_env_memory"]
        iid = self.create("GymHTTPTest/Misbehaving-v0", num_envs=2, vectorization_mode="async",
                          kwargs={"how": "balloon", "balloon_mib": limit // 2 + 50})  # neither worker alone goes past
        pid = self.get(f"/v1/envs/{iid}/")[2]["pid"]
        workers = gymhttp._children(pid)
        self.assertGreaterEqual(len(workers), 2)  # the two workers (and a resource tracker, where multiprocessing starts one)
        started = time.monotonic()
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": [1, 1]}), 500, f"--max-env-memory {limit} MiB",
                         "its workers included", "was killed")
        self.assertLess(time.monotonic() - started, 10)
        self.assertTrue(wait_for(lambda: not any(map(process_alive, workers))), "the workers outlived their instance's process")
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)

    def test_memory_grown_inside_one_long_call_is_caught(self):
        limit = self.server_options["max_env_memory"]
        iid = self.misbehaving("balloon", balloon_mib=limit)  # then a 30 s wait: only the server's poll can see it
        started = time.monotonic()
        self.assertError(self.step(iid, 1), 500, f"--max-env-memory {limit} MiB", "was killed")
        self.assertLess(time.monotonic() - started, 10)
        self.assertBrokenThenRecovers(iid, "--max-env-memory")


class TestAbandonedCreates(IsolationTestCase):
    """A create whose client hangs up before the env is made leaves nothing
    behind: not its process, not its --max-envs slot."""

    def send_create(self, kwargs: dict, then: bytes = b"") -> socket.socket:
        body = json.dumps({"env_id": "GymHTTPTest/Misbehaving-v0", "kwargs": kwargs}).encode()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, then))
        return sock

    def wait_until_empty(self, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.server.envs._instances and not self.server.runners and not self.server.envs.processes:
                return
            time.sleep(0.05)
        self.fail(f"left behind: {self.server.envs._instances}, {self.server.runners}, {self.server.envs.processes} processes")

    def test_a_hung_make_is_ended_when_its_client_hangs_up(self):
        sock = self.send_create({"make_hangs": True})
        deadline = time.monotonic() + 5
        while not self.server.runners and time.monotonic() < deadline:
            time.sleep(0.02)  # its process is making the env
        pid = next(iter(self.server.runners)).pid
        self.assertEqual(len(self.server.envs._instances), 1)  # the slot is taken meanwhile
        sock.close()
        self.wait_until_empty()
        self.assertFalse(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z")
        self.assertServing()

    def test_a_client_that_sends_its_next_request_is_still_there(self):
        sock = self.send_create({"make_seconds": 0.5}, then=b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with sock, sock.makefile("rb") as replies:
            created = read_response(replies)
            self.assertEqual(created[0], 200, created)
            self.assertEqual(read_response(replies)[0], 200)
        self.assertEqual(len(self.client.env_list_all()), 1)


class TestAbandonedCreatesInThreads(TestAbandonedCreates):
    server_options = {"isolation": "thread"}

    def test_a_hung_make_is_ended_when_its_client_hangs_up(self):
        # A thread cannot be stopped: the env is closed when its make returns.
        sock = self.send_create({"make_seconds": 0.5})
        time.sleep(0.1)
        sock.close()
        self.wait_until_empty()
        self.assertEqual(self.client.env_list_all(), {})


class TestMemoryDefault(unittest.TestCase):
    def test_an_instance_process_may_hold_half_the_machine_by_default(self):
        half = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 21
        self.assertEqual(gymhttp.default_max_env_memory(), half)
        for options, limit in (({}, half), ({"max_env_memory": 0}, None), ({"max_env_memory": 300}, 300),
                               ({"isolation": "thread"}, None)):
            with self.subTest(**options):
                server = gymhttp.make_server("127.0.0.1", 0, **options)
                try:
                    self.assertEqual(server.max_env_memory, limit)
                finally:
                    server.server_close()
        with self.assertRaises(ValueError):
            gymhttp.make_server("127.0.0.1", 0, isolation="thread", max_env_memory=300)
        out = subprocess.run([sys.executable, "gymhttp.py", "-h"], cwd=HERE, capture_output=True, text=True, timeout=30)
        self.assertIn(f"half this machine's memory, {half:,} MiB here", " ".join(out.stdout.split()))


class TestThreadIsolation(IsolationTestCase):
    server_options = {"isolation": "thread", "env_timeout": 1.0}

    def test_a_hung_step_answers_504_and_a_reset_makes_a_fresh_env(self):
        healthy = Healthy(self)
        iid = self.misbehaving("hang")
        started = time.monotonic()
        message = self.assertError(self.step(iid, 1), 504, "--env-timeout 1", "thread")
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("cannot be stopped", message)
        healthy.step(20)
        self.assertBrokenThenRecovers(iid, "--env-timeout")
        healthy.step(20)
        healthy.close()

    def test_the_timeout_covers_make(self):
        self.assertError(self.post("/v1/envs/", {"env_id": "GymHTTPTest/Misbehaving-v0", "kwargs": {"make_hangs": True}}),
                         504, "--env-timeout 1", "make")
        self.assertEqual(self.client.env_list_all(), {})

    def test_details_have_no_process(self):
        iid = self.create("CartPole-v1")
        details = self.get(f"/v1/envs/{iid}/")[2]
        self.assertEqual((details["pid"], details["rss"]), (None, None))

    def test_closed_instances_leave_no_threads(self):
        # Each instance's calls run on a thread of its own (so that a request can stop waiting);
        # closing it must end that thread, or a long-running server collects them.
        # Threads left by an earlier test (a make that hangs on past its timeout) may end meanwhile,
        # so this counts only the threads started here.
        before = set(threading.enumerate())

        def env_threads():
            return sum(t.name == "gymhttp-env" and t not in before for t in threading.enumerate())

        for _ in range(5):
            iid = self.create("CartPole-v1")
            self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 0})[0], 200)
            self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
            self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": {"nope": 1}}), 400, "nope")
        deadline = time.monotonic() + 5
        while env_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(env_threads(), 0)


class Wire:
    """One keep-alive connection, raw, as a client in another language keeps
    it: requests go out and replies come back on it, and it never changes."""

    def __init__(self, test: ServerTestCase, headers: dict | None = None):
        self.test = test
        self.sock = socket.create_connection(("127.0.0.1", test.port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.headers = {**test.auth_headers(), **(headers or {})}
        test.addCleanup(self.close)

    def send(self, method: str, path: str, body=None, headers: dict | None = None) -> None:
        data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        fields = {"Host": "127.0.0.1", **self.headers, **(headers or {}), "Content-Length": str(len(data))}
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
        self.sock.sendall(head.encode("latin-1") + b"\r\n" + data)

    def receive(self) -> tuple[int, dict, Any]:
        status, headers, raw = read_response(self.file)
        return status, headers, strict_loads(raw) if raw and headers.get("content-type") == "application/json" else raw

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict, Any]:
        self.send(method, path, body, headers)
        return self.receive()

    def step(self, iid: str, action: int = 0) -> dict:
        status, _, reply = self.request("POST", f"/v1/envs/{iid}/step/", {"action": action})
        self.test.assertEqual(status, 200, reply)
        return reply

    def reset(self, iid: str, seed: int | None = None) -> dict:
        status, _, reply = self.request("POST", f"/v1/envs/{iid}/reset/", {} if seed is None else {"seed": seed})
        self.test.assertEqual(status, 200, reply)
        return reply

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_for(condition: Callable[[], Any], seconds: float = 5.0) -> Any:
    """``condition()``'s first true value within ``seconds``, else that false one."""
    deadline = time.monotonic() + seconds
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.005)
    return value


def process_alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for a parent that is gone counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OwnedTestCase(IsolationTestCase):
    """An actor's connection that the instance's process owns."""

    def owners(self, iid: str) -> set:
        return self.server.envs._instances[iid].owners

    def handed_over(self, wire: Wire, iid: str, seed: int | None = None) -> None:
        """Reset and step on ``wire`` until the instance's process owns it."""
        wire.reset(iid, seed)
        for _ in range(gymhttp.HANDOFF_AFTER):
            wire.step(iid)
        self.assertTrue(wait_for(lambda: self.owners(iid)), "the connection was not handed over")


class TestOwnedConnections(OwnedTestCase):
    server_options = {"env_timeout": 2.0}

    def test_an_actor_is_answered_by_its_instance_process_as_locally_and_counted_at_once(self):
        iid = self.create(seed=3)
        local = gymnasium.make("CartPole-v1")
        wire = Wire(self)
        self.handed_over(wire, iid, seed=3)
        obs, _ = local.reset(seed=3)
        for _ in range(gymhttp.HANDOFF_AFTER):
            obs, *_ = local.step(0)
        steps, episodes = gymhttp.HANDOFF_AFTER, 0
        (owner,) = self.owners(iid)
        for t in range(300):
            reply = wire.step(iid, t % 2)
            obs, reward, terminated, truncated, _ = local.step(t % 2)
            steps += 1
            self.assertEqual(reply["observation"], obs.tolist())
            self.assertEqual((reply["reward"], reply["terminated"], reply["truncated"]), (reward, terminated, truncated))
            if terminated or truncated:
                episodes += 1
                np.testing.assert_array_equal(wire.reset(iid)["observation"], local.reset()[0])
        self.assertEqual(self.owners(iid), {owner}, "the connection changed hands while it stepped one instance")
        # Another connection sees every step and episode, at once.
        details = self.get(f"/v1/envs/{iid}/")[2]
        self.assertEqual((details["steps"], details["episodes"]), (steps, episodes))
        self.assertEqual(self.owners(iid), {owner})  # it stays where it is
        self.assertEqual(wire.step(iid, 0)["observation"], local.step(0)[0].tolist())
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["steps"], steps + 1)

    def test_requests_for_anything_else_go_back_to_the_server_on_the_same_connection(self):
        iid = self.create()
        wire = Wire(self)
        self.handed_over(wire, iid)
        status, _, listing = wire.request("GET", "/v1/envs/")  # the server's
        self.assertEqual((status, list(listing["all_envs"])), (200, [iid]))
        self.assertFalse(self.owners(iid))
        time.sleep(0.1)  # the next request comes later: the server's socket must still wait for it
        status, _, made = wire.request("POST", "/v1/envs/", {"env_id": "CartPole-v1"})
        self.assertEqual(status, 200, made)
        other = made["instance_id"]
        self.handed_over(wire, other)  # now the other instance's process has it
        self.assertFalse(self.owners(iid))
        for path in (f"/v1/envs/{other}/action_space/", f"/v1/envs/{other}/action_space/sample/",
                     f"/v1/envs/{other}/observation_space/"):  # its own: answered there
            self.assertEqual(wire.request("GET", path)[0], 200)
        self.assertTrue(self.owners(other))
        self.assertEqual(wire.request("POST", f"/v1/envs/{iid}/close/")[0], 204)  # not its own: back again
        self.assertEqual(wire.request("GET", "/v1/nope/")[0], 404)
        self.assertEqual(wire.step(other)["observation"].__class__, list)
        status, _, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertEqual(status, 400)
        self.assertIn("unknown", reply["message"])

    def test_old_clients_stepping_several_instances_over_one_connection_stay_with_the_server(self):
        ids = [self.create(seed=k) for k in range(4)]
        locals_ = [gymnasium.make("CartPole-v1") for _ in ids]
        wire = Wire(self)
        for k, iid in enumerate(ids):
            np.testing.assert_array_equal(wire.reset(iid, seed=k)["observation"], locals_[k].reset(seed=k)[0])
        for t in range(40):
            for iid, local in zip(ids, locals_):
                obs, _, terminated, truncated, _ = local.step(t % 2)
                self.assertEqual(wire.step(iid, t % 2)["observation"], obs.tolist())
                if terminated or truncated:
                    np.testing.assert_array_equal(wire.reset(iid)["observation"], local.reset()[0])
        self.assertEqual([self.owners(iid) for iid in ids], [set()] * 4)

    def test_pipelined_requests_are_answered_in_order_across_the_hand_back(self):
        iid = self.create(seed=0)
        local = gymnasium.make("CartPole-v1")
        local.reset(seed=0)
        wire = Wire(self)
        self.handed_over(wire, iid, seed=0)
        for _ in range(gymhttp.HANDOFF_AFTER):
            local.step(0)
        sent = ["step", "step", "list", "step", "details", "step"]
        for kind in sent:
            if kind == "step":
                wire.send("POST", f"/v1/envs/{iid}/step/", {"action": 1})
            else:
                wire.send("GET", "/v1/envs/" if kind == "list" else f"/v1/envs/{iid}/")
        for kind in sent:
            status, _, reply = wire.receive()
            self.assertEqual(status, 200, reply)
            if kind == "step":
                self.assertEqual(reply["observation"], local.step(1)[0].tolist())
            elif kind == "list":
                self.assertIn(iid, reply["all_envs"])
            else:
                self.assertEqual(reply["steps"], gymhttp.HANDOFF_AFTER + 3)

    def test_a_crash_mid_call_is_answered_on_the_clients_own_connection(self):
        healthy = Healthy(self)
        iid = self.misbehaving("segfault")
        wire = Wire(self)
        self.handed_over(wire, iid)
        pid = self.server.envs._instances[iid].runner.pid
        healthy.step()
        status, headers, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 1})
        self.assertEqual((status, headers["content-type"]), (500, "application/json"))
        self.assertIn("SIGSEGV", reply["message"])
        self.assertIn(f"pid {pid}", reply["message"])
        self.assertTrue(wire.closed_by_server())
        healthy.step(10)
        self.assertBrokenThenRecovers(iid, "SIGSEGV")
        healthy.close()

    def test_an_idle_owned_connection_stays_while_its_process_dies(self):
        iid = self.misbehaving("segfault")
        wire = Wire(self)
        self.handed_over(wire, iid)
        os.kill(self.server.envs._instances[iid].runner.pid, signal.SIGKILL)
        self.assertTrue(wait_for(lambda: not self.owners(iid)))
        status, _, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 0})  # the server answers it now
        self.assertEqual(status, 409, reply)
        self.assertIn("SIGKILL", reply["message"])
        self.assertEqual(wire.reset(iid)["observation"], 0)  # a fresh process
        self.assertEqual(wire.step(iid)["observation"], 1)

    def test_env_timeout_answers_504_on_the_owned_connection(self):
        iid = self.misbehaving("hang")
        wire = Wire(self)
        self.handed_over(wire, iid)
        started = time.monotonic()
        status, _, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 1})
        self.assertEqual(status, 504, reply)
        self.assertIn("--env-timeout 2 s", reply["message"])
        self.assertLess(time.monotonic() - started, 2.0 + 1.5)
        self.assertBrokenThenRecovers(iid, "--env-timeout")

    def test_close_of_an_instance_hung_on_an_owned_connection_takes_about_a_second(self):
        iid = self.misbehaving("hang")
        wire = Wire(self)
        self.handed_over(wire, iid)
        waiting = self.background(lambda: wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 1}))
        self.assertTrue(wait_for(lambda: self.server.envs._instances[iid].runner.owned_busy()))
        started = time.monotonic()
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
        self.assertLess(time.monotonic() - started, 1.8)
        waiting["thread"].join(5)
        status, _, reply = waiting["result"]
        self.assertEqual(status, 410, reply)
        self.assertIn("closed while its step ran", reply["message"])
        self.assertEqual(self.client.env_list_all(), {})

    def test_monitor_episodes_reach_disk_within_a_second_whatever_dies(self):
        directory = tempfile.mkdtemp(prefix="gymhttp-owned-monitor-")
        self.addCleanup(shutil.rmtree, directory, True)
        iid = self.create(seed=0)
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": directory})[0], 204)
        wire = Wire(self)
        self.handed_over(wire, iid, seed=0)
        episodes = 0
        while episodes < 3:
            reply = wire.step(iid, 0)
            if reply["done"]:
                episodes += 1
                wire.reset(iid)
        os.kill(self.server.envs._instances[iid].runner.pid, signal.SIGKILL)  # right after the reply
        time.sleep(1.0)
        (name,) = [n for n in os.listdir(directory) if n.endswith(".stats.json")]
        with open(os.path.join(directory, name)) as f:
            self.assertEqual(len(json.load(f)["episode_lengths"]), 3)

    def test_the_instance_process_polls_for_a_fast_actor_and_idles_without_cpu(self):
        c = client.Client(self.base)
        self.addCleanup(c.close)
        iid = c.env_create("CartPole-v1", seed=0)
        c.reset(iid)
        step_for(c, iid, 0.3)
        (owner,) = self.owners(iid)
        pid = self.server.envs._instances[iid].runner.pid
        self.assertGreater(wait_for(lambda: owner.handler.spun > 10), 0, "the instance process never polled")
        time.sleep(0.1)
        before = cpu_seconds(pid)
        time.sleep(0.5)
        self.assertLess(cpu_seconds(pid) - before, 0.05, "the instance process kept spinning while its actor was idle")

    def test_shutdown_answers_what_is_in_flight_and_refuses_what_comes_after(self):
        iid = self.create("GymHTTPTest/Sleepy-v0", kwargs={"delay": 0.3})
        wire = Wire(self)
        self.handed_over(wire, iid)
        wire.send("POST", f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertTrue(wait_for(lambda: self.server.envs._instances[iid].runner.owned_busy()))
        started = time.monotonic()
        shutdown = self.background(lambda: self.post("/v1/shutdown/"))
        status, _, reply = wire.receive()
        self.assertEqual(status, 200, reply)  # the step in flight finished
        status, _, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertEqual(status, 503, reply)
        self.assertIn("shutting down", reply["message"])
        shutdown["thread"].join(10)
        self.assertEqual(shutdown["result"][0], 200)
        self.thread.join(10)
        self.assertFalse(self.thread.is_alive())
        self.assertLess(time.monotonic() - started, 5)


class TestOwnedConnectionsMemory(OwnedTestCase):
    def setUp(self):
        self.server_options = {"max_env_memory": (rss_of(os.getpid()) >> 20) + 300}  # as TestProcessMemory's
        super().setUp()

    def test_a_leak_on_an_owned_connection_is_ended_at_the_limit(self):
        iid = self.misbehaving("leak")
        wire = Wire(self)
        self.handed_over(wire, iid)
        for _ in range(40):
            status, _, reply = wire.request("POST", f"/v1/envs/{iid}/step/", {"action": 1})
            if status != 200:
                break
        self.assertEqual(status, 500, reply)
        self.assertIn(f"--max-env-memory {self.server_options['max_env_memory']} MiB", reply["message"])
        self.assertTrue(wire.closed_by_server())
        self.assertBrokenThenRecovers(iid, "--max-env-memory")


class TestOwnedConnectionsTimeout(OwnedTestCase):
    server_options = {"timeout": 0.6}

    def test_an_idle_owned_connection_is_dropped_after_timeout_and_its_slot_freed(self):
        iid = self.create()
        wire = Wire(self)
        self.handed_over(wire, iid)
        started = time.monotonic()
        self.assertTrue(wire.closed_by_server())
        self.assertLess(time.monotonic() - started, 0.6 + 1.0)
        self.assertTrue(wait_for(lambda: not self.owners(iid)))
        self.assertTrue(wait_for(lambda: len(self.server._connections) == 0))

    def test_a_request_that_stalls_on_an_owned_connection_is_dropped(self):
        iid = self.create()
        wire = Wire(self)
        self.handed_over(wire, iid)
        wire.sock.sendall(f"POST /v1/envs/{iid}/step/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n{{".encode())
        started = time.monotonic()
        self.assertTrue(wire.closed_by_server())
        self.assertLess(time.monotonic() - started, 0.6 + 1.0)


class TestOwnedConnectionsEdge(OwnedTestCase):
    """On a connection an instance process owns, every refusal is the one the
    server gives on a connection of its own, byte for byte."""

    server_options = {"token": "s3cret", "allow_origins": ("http://good.example",), "max_body": 4096}

    def answers(self, wire: Wire, iid: str, bad: dict) -> tuple:
        status, headers, reply = wire.request(bad.get("method", "POST"), bad.get("path", f"/v1/envs/{iid}/step/"),
                                              bad.get("body", {"action": 0}), bad.get("headers"))
        headers.pop("date", None)
        return status, headers, reply

    def test_refusals_on_an_owned_connection_are_the_servers(self):
        iid = self.create()
        cases = [
            {"headers": {"Authorization": None}},
            {"headers": {"Authorization": "Bearer wrong"}},
            {"headers": {"Host": "evil.example"}},
            {"headers": {"Origin": "http://evil.example"}},
            {"headers": {"Origin": "http://good.example"}},
            {"headers": {"X-Bad": "a\x01b"}},
            {"body": b"{" * 5000},
            {"body": b"[" * 100 + b"]" * 100},
            {"body": {"action": 7}},
            {"body": b"not json"},
            {"method": "OPTIONS", "headers": {"Origin": "http://good.example", "Access-Control-Request-Method": "POST"}},
        ]
        prelude = [("reset/", {"seed": 0})] + [("step/", {"action": 0})] * gymhttp.HANDOFF_AFTER
        for bad in cases:
            with self.subTest(bad=bad):
                for path, body in prelude:  # each on a connection of its own: relayed
                    self.assertEqual(self.post(f"/v1/envs/{iid}/{path}", body)[0], 200)
                expected = self.answers(Wire(self), iid, bad)
                owned = Wire(self)
                self.handed_over(owned, iid, seed=0)  # the same calls, on one connection: it is handed over
                self.assertEqual(self.answers(owned, iid, bad), expected)
                if expected[1].get("connection") == "close":
                    self.assertTrue(owned.closed_by_server())
                else:
                    owned.step(iid)  # and it goes on


class TestThreadIsolationHangs(IsolationTestCase):
    server_options = {"isolation": "thread"}

    def test_close_of_a_hung_instance_answers_at_once(self):
        iid = self.misbehaving("hang")
        stuck = self.background(lambda: self.step(iid, 1))
        time.sleep(0.2)
        started = time.monotonic()
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/")[0], 204)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertEqual(self.client.env_list_all(), {})
        self.assertError(self.step(iid, 0), 400, "unknown")
        RELEASE.set()  # the env's thread comes back: its request learns the instance is gone
        stuck["thread"].join(5)
        self.assertError(stuck["result"], 410, "closed while its step ran")


class TestConcurrencyReplays(ServerTestCase):
    def test_eight_threads_on_eight_instances_match_local_replays(self):
        results, errors = {}, []

        def worker(k):
            try:
                with client.Client(self.base) as c:
                    iid = c.env_create("CartPole-v1", seed=100 + k)
                    trajectory = []
                    for t in range(120):
                        obs, reward, terminated, truncated, _ = c.step(iid, (t * (k + 1)) % 2)
                        trajectory.append((obs, reward, terminated, truncated))
                        if terminated or truncated:
                            c.reset(iid, seed=t)
                    results[k] = trajectory
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        for k in range(8):
            env = gymnasium.make("CartPole-v1")
            env.reset(seed=100 + k)
            for t, (obs, reward, terminated, truncated) in enumerate(results[k]):
                l_obs, l_reward, l_term, l_trunc, _ = env.step((t * (k + 1)) % 2)
                np.testing.assert_allclose(obs, l_obs, rtol=1e-6)
                self.assertEqual((reward, terminated, truncated), (l_reward, l_term, l_trunc))
                if l_term or l_trunc:
                    env.reset(seed=t)

    def test_300_idle_connections_do_not_block_a_request(self):
        idle = []
        try:
            for _ in range(300):
                idle.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
            idle[0].sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and one half-sent request
            started = time.monotonic()
            with client.Client(self.base, timeout=10) as c:
                iid = c.env_create("CartPole-v1")
                c.step(iid, 0)
            self.assertLess(time.monotonic() - started, 3.0)
        finally:
            for sock in idle:
                sock.close()


class TestSlowClients(ServerTestCase):
    server_options = {"timeout": 0.5}

    def test_a_trickling_request_is_dropped(self):
        """Slowloris: a byte now and then resets a per-read timeout, but the
        whole request must arrive within --timeout."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            closed = False
            while time.monotonic() - started < 5:
                try:
                    sock.sendall(b"X: y\r\n")
                except OSError:
                    closed = True
                    break
                time.sleep(0.1)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                    break
                finally:
                    sock.setblocking(True)
            self.assertTrue(closed, "the trickling connection was never dropped")
            self.assertLess(time.monotonic() - started, 3.0)
        self.assertServing()

    def test_idle_connection_is_closed(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            started = time.monotonic()
            self.assertEqual(sock.recv(1), b"")
            self.assertLess(time.monotonic() - started, 3.0)


# ---------------------------------------------------------------------------
# Limits, authentication, dangerous operations
# ---------------------------------------------------------------------------


class TestLimits(ServerTestCase):
    server_options = {"max_envs": 2, "max_body": 2000}

    def test_max_envs(self):
        self.create()
        self.create()
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1"}), 429, "--max-envs", "2")
        self.assertEqual(len(self.client.env_list_all()), 2)
        self.post(f"/v1/envs/{next(iter(self.client.env_list_all()))}/close/")
        self.create()

    def test_max_body(self):
        status, resp, reply = self.post("/v1/envs/", {"env_id": "CartPole-v1", "pad": "x" * 3000})
        self.assertError((status, resp, reply), 413, "--max-body", "2000")
        self.assertEqual(self.post("/v1/envs/", {"env_id": "CartPole-v1", "pad": "x" * 1000})[0], 200)


class TestDefaultLimits(ServerTestCase):
    def test_default_body_limit_takes_a_1024_env_vector_step(self):
        iid = self.create("Pendulum-v1", num_envs=1024, vectorization_mode="sync")
        actions = np.random.default_rng(0).uniform(-2, 2, (1024, 1)).tolist()
        body = json.dumps({"action": actions})
        self.assertGreater(len(body), 20_000)
        status, _, reply = self.post(f"/v1/envs/{iid}/step/", body)
        self.assertEqual(status, 200, reply)
        self.assertEqual(len(reply["reward"]), 1024)


class TestAuth(ServerTestCase):
    server_options = {"token": "s3cret-token"}

    def test_requests_need_the_token(self):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                        {"Authorization": "Basic czNjcmV0LXRva2Vu"}, {"Authorization": "Bearer s3cret-token-and-more"}):
            with self.subTest(headers=headers):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v1/envs/", headers=headers)
                resp = conn.getresponse()
                body = strict_loads(resp.read())
                conn.close()
                self.assertEqual(resp.status, 401)
                self.assertIn("Bearer", body["message"])
                self.assertNotIn("s3cret", body["message"])
                self.assertEqual(resp.getheader("WWW-Authenticate"), 'Bearer realm="gymhttp"')
        self.assertEqual(self.get("/v1/envs/")[0], 200)  # self.request sends the right token

    def test_client_takes_the_token_or_the_environment(self):
        with self.assertRaises(client.ServerError) as ctx:
            with client.Client(self.base, token="") as c:
                os.environ.pop("GYMHTTP_TOKEN", None)
                c.env_list_all()
        self.assertEqual(ctx.exception.status_code, 401)
        with client.Client(self.base, token="s3cret-token") as c:
            self.assertEqual(c.env_list_all(), {})
        os.environ["GYMHTTP_TOKEN"] = "s3cret-token"
        try:
            with client.Client(self.base) as c:
                self.assertEqual(c.env_list_all(), {})
        finally:
            del os.environ["GYMHTTP_TOKEN"]

    def test_example_agent_takes_a_token(self):
        out = subprocess.run([sys.executable, "example_agent.py", "--url", self.base, "--episodes", "1", "--token", "s3cret-token"],
                             cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        out = subprocess.run([sys.executable, "example_agent.py", "--url", self.base, "--episodes", "1"],
                             cwd=HERE, capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "GYMHTTP_TOKEN"})
        self.assertEqual(out.returncode, 1)
        self.assertIn("401", out.stderr)


class FakeHandler:
    """Just what dispatch() reads of a request, with a peer address of our choosing.
    (Tests may only send traffic to loopback, so a remote peer is simulated here.)"""

    def __init__(self, path, peer, headers=None):
        self.command, self.path, self.client_address = "POST", path, (peer, 40000)
        self.parsed_headers = headers or {}
        self.connection = None  # no socket: nothing watches for the client's hanging up


class TestShutdownRefusal(unittest.TestCase):
    def make(self, **options):
        server = gymhttp.make_server("127.0.0.1", 0, **options)
        self.addCleanup(server.server_close)
        return server

    def serve(self, server, handler):
        """What the request handler does with a request's head, then its body: (status, message)."""
        try:
            server.admit(handler)
        except gymhttp.HTTPError as exc:
            return exc.status, exc.message
        status, _, body, _ = server.dispatch(handler, b"")
        return status, strict_loads(body)["message"] if body else ""

    def test_remote_peers_cannot_shut_down(self):
        server = self.make()
        status, message = self.serve(server, FakeHandler("/v1/shutdown/", "203.0.113.9"))
        self.assertEqual(status, 403)
        self.assertIn("loopback", message)
        self.assertFalse(server._shutdown_started.is_set())
        status, message = self.serve(server, FakeHandler("/v1/envs/", "203.0.113.9"))
        self.assertEqual(status, 400)  # other routes are served to remote peers: this one only lacks env_id
        self.assertIn("env_id", message)

    def test_remote_peers_with_the_token_can(self):
        server = self.make(token="tok")
        status, _ = self.serve(server, FakeHandler("/v1/shutdown", "203.0.113.9", {"authorization": "Bearer tok"}))
        self.assertEqual(status, 200)
        self.assertTrue(server._shutdown_started.is_set())

    def test_loopback_peers_can(self):
        for peer in ("127.0.0.1", "::1"):
            server = self.make()
            self.assertEqual(self.serve(server, FakeHandler("/v1/shutdown/", peer))[0], 200)

    def test_a_shutdown_before_serving_leaves_no_thread_waiting(self):
        def waiting():
            return sum(t.name == "gymhttp-shutdown" for t in threading.enumerate())

        before = waiting()
        server = self.make()
        self.assertEqual(self.serve(server, FakeHandler("/v1/shutdown/", "127.0.0.1"))[0], 200)
        self.assertEqual(waiting(), before)  # none waits for a serve_forever() that may never come
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()  # and one that comes after the request ends at once
        thread.join(5)
        self.assertFalse(thread.is_alive())


NEEDY_ENV = """
import gymnasium
import gymhttp_absent_alpha
import gymhttp_absent_beta.sub
from gymhttp_absent_gamma import thing

class Env(gymnasium.Env):
    observation_space = action_space = gymnasium.spaces.Discrete(2)
"""
NEEDY_WRAPPER = """
import gymnasium

class NeedyWrapper(gymnasium.Wrapper):
    def __init__(self, env):
        import gymhttp_absent_delta
        from gymhttp_absent_epsilon import x
        super().__init__(env)
"""


class TestMissingPackages(ServerTestCase):
    """A make that fails for want of packages names them all in one 400, and
    once they are installed the next create works, with no restart."""

    server_options = {"imports": ("gymhttp_test_needy_wrap",)}

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="gymhttp-needy-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        for name, text in (("gymhttp_test_needy", NEEDY_ENV), ("gymhttp_test_needy_wrap", NEEDY_WRAPPER)):
            with open(os.path.join(self.folder, f"{name}.py"), "w") as f:
                f.write(text)
        sys.path.insert(0, self.folder)
        self.addCleanup(sys.path.remove, self.folder)
        self.addCleanup(lambda: [sys.modules.pop(m, None) for m in list(sys.modules) if m.startswith("gymhttp_")
                                 and m not in ("gymhttp",)])
        if "GymHTTPTest/Needy-v0" not in gymnasium.registry:
            gymnasium.register("GymHTTPTest/Needy-v0", entry_point="gymhttp_test_needy:Env", disable_env_checker=True)
        super().setUp()  # the server's processes see the folder

    def install(self, *names):
        for name in names:
            os.makedirs(os.path.join(self.folder, name), exist_ok=True)
            with open(os.path.join(self.folder, name, "__init__.py"), "w") as f:
                f.write("thing = x = 1\n")
            with open(os.path.join(self.folder, name, "sub.py"), "w") as f:
                f.write("")

    def test_every_missing_package_is_named_at_once_and_no_restart_is_needed(self):
        wanted = ("gymhttp_absent_alpha", "gymhttp_absent_beta", "gymhttp_absent_gamma")
        message = self.assertError(self.post("/v1/envs/", {"env_id": "GymHTTPTest/Needy-v0"}), 400,
                                   "GymHTTPTest/Needy-v0", *wanted, "pip install " + " ".join(wanted), "no restart")
        self.assertNotIn("then restart", message)
        self.install(*wanted[:2])
        self.assertError(self.post("/v1/envs/", {"env_id": "GymHTTPTest/Needy-v0"}), 400, "gymhttp_absent_gamma")
        self.install(wanted[2])
        self.create("GymHTTPTest/Needy-v0")  # installed while the server ran: found

    def test_a_wrapper_that_imports_lazily_names_what_it_imports(self):
        spec = {"env_id": "CartPole-v1", "wrappers": [{"entry_point": "gymhttp_test_needy_wrap:NeedyWrapper"}]}
        self.assertError(self.post("/v1/envs/", spec), 400, "NeedyWrapper", "gymhttp_absent_delta, gymhttp_absent_epsilon")
        self.install("gymhttp_absent_delta", "gymhttp_absent_epsilon")
        iid = self.create(**spec)
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["spec"]["additional_wrappers"][0]["name"], "NeedyWrapper")


def nested(depth: int, leaf=1):
    """A value nested ``depth`` lists deep."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


class TestDeepInput(ServerTestCase):
    """JSON nested past MAX_JSON_DEPTH gets a 400 naming the limit, in every
    field and both isolations; nothing a request sends reaches a RecursionError."""

    def test_every_field_has_one_depth_limit(self):
        iid = self.create()
        vec = self.create(num_envs=2, vectorization_mode="sync")
        deep = {"a": nested(600)}
        cases = [
            ("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": deep}),
            ("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "vector_kwargs": deep}),
            ("/v1/envs/", {"env_id": "CartPole-v1", "wrappers": [{"name": "TimeAwareObservation", "kwargs": deep}]}),
            (f"/v1/envs/{iid}/reset/", {"options": deep}),
            (f"/v1/envs/{vec}/reset/", {"options": {"reset_mask": nested(70, True)}}),
            (f"/v1/envs/{iid}/step/", {"action": nested(70, 0)}),
            (f"/v1/envs/{iid}/spaces/contains", {"space": "observation", "value": nested(900)}),
            (f"/v1/envs/{iid}/observation_space/contains", {"name": nested(300)}),
        ]
        for path, body in cases:
            with self.subTest(path=path, fields=list(body)):
                self.assertError(self.post(path, body), 400, f"at most {gymhttp.MAX_JSON_DEPTH} levels")
        self.assertError(self.get(f"/v1/envs/{iid}/action_space/contains/" + "%5B" * 70 + "1" + "%5D" * 70), 400,
                         f"at most {gymhttp.MAX_JSON_DEPTH} levels")
        # At the limit, a value is taken (and refused, or not, for what it is)
        self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": nested(gymhttp.MAX_JSON_DEPTH - 1, 0)}), 400,
                         "not in the action space")
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 1})[0], 200)  # the instance is fine
        self.assertEqual(len(self.client.env_list_all()), 2)  # no create went through

    def test_paths_have_a_length_and_depth_limit(self):
        iid = self.create()
        self.assertError(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": "a/" * 1000}), 400, "1000 slashes",
                         "at most 128 path components")
        self.assertError(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": "/tmp/" + "b" * 5000}), 400,
                         "at most 4096")
        self.assertServing()

    def test_a_step_whose_info_json_cannot_carry_answers_200_and_the_env_stays_healthy(self):
        iid = self.create("GymHTTPTest/UnencodableInfo-v0")
        for route in ("reset", "step", "step"):
            status, _, reply = self.post(f"/v1/envs/{iid}/{route}/", {"action": 0} if route == "step" else None)
            self.assertEqual(status, 200, reply)
            info = reply["info"]
            self.assertEqual(info["fine"], 7)
            self.assertEqual(info["huge"], hex(10 ** 5000))  # too long for decimal: its hex digits
            self.assertEqual(info["cycle"], {"self": "{'self': {...}}"})  # the dict, down to where it holds itself
            level, depth = info["deep"], 0
            while isinstance(level, list):
                level, depth = level[0], depth + 1
            self.assertEqual(level, "<list nested too deeply to send>")  # lists as far as JSON goes safely
            self.assertLess(depth, 100)
            self.assertEqual(info["unshowable"], "<Unshowable that cannot be shown>")
            self.assertIn(hex(10 ** 5000), info)
        self.assertIsNone(self.get(f"/v1/envs/{iid}/")[2]["broken"])
        for encoding in ("base64", "typed"):
            other = self.create("GymHTTPTest/UnencodableInfo-v0", encoding=encoding)
            self.assertEqual(self.post(f"/v1/envs/{other}/step/", {"action": 1})[2]["info"]["fine"], 7)


class TestDeepInputInThreads(TestDeepInput):
    server_options = {"isolation": "thread"}


class TestModuleIds(ServerTestCase):
    def test_module_ids_need_import(self):
        sys.modules.pop("this", None)
        message = self.assertError(self.post("/v1/envs/", {"env_id": "this:CartPole-v1"}), 400, "--import this")
        self.assertNotIn("this", sys.modules)  # it was not imported
        self.assertIn("would import", message)


class TestMonitorRoot(ServerTestCase):
    def setUp(self):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="gymhttp-root-"))
        self.outside = os.path.realpath(tempfile.mkdtemp(prefix="gymhttp-outside-"))
        self.server_options = {"monitor_root": self.root}
        super().setUp()

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.outside, ignore_errors=True)

    def test_confined(self):
        iid = self.create()
        start, close = f"/v1/envs/{iid}/monitor/start/", f"/v1/envs/{iid}/monitor/close/"
        self.assertEqual(self.post(start, {"directory": "run1"})[0], 204)
        self.post(close)
        self.assertTrue(any(f.startswith("openaigym.") for f in os.listdir(os.path.join(self.root, "run1"))))
        self.assertEqual(self.post(start, {"directory": os.path.join(self.root, "run2")})[0], 204)
        self.post(close)
        os.symlink(self.outside, os.path.join(self.root, "sneaky"))
        for directory in ("../escape", self.outside, "run1/../../escape", "sneaky", "sneaky/deeper", "/etc"):
            with self.subTest(directory=directory):
                self.assertError(self.post(start, {"directory": directory}), 400, "outside the monitor root")
        self.assertEqual(os.listdir(self.outside), [])


class TestEdge(ServerTestCase):
    """Browsers' pages, tokens before bodies, old clients' odd bodies."""

    def raw(self, data: bytes, port=None) -> tuple[int, dict, object]:
        status, headers, body, _ = exchange(port or self.port, data)
        return status, headers, body

    def test_a_loopback_server_answers_only_to_loopback_names(self):
        for host in (b"127.0.0.1", b"127.0.0.1:5000", b"localhost", b"LOCALHOST:80", b"localhost.", b"[::1]", b"[::1]:5000", b"127.9.9.9"):
            with self.subTest(host=host):
                self.assertEqual(self.raw(b"GET /v1/envs/ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")[0], 200)
        self.assertEqual(self.raw(b"GET /v1/envs/ HTTP/1.0\r\n\r\n")[0], 200)  # no Host at all: an HTTP/1.0 client
        for host in (b"evil.example", b"evil.example:5000", b"127.0.0.1.evil.example", b"localhost.evil.example", b"[::2]"):
            with self.subTest(host=host):
                status, headers, body = self.raw(b"GET /v1/envs/ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
                self.assertEqual(status, 403)
                self.assertIn("DNS rebinding", body["message"])
                self.assertEqual(headers.get("connection"), "close")
        self.assertServing()

    def test_pages_from_other_origins_may_only_read(self):
        post = (b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: %s\r\nConnection: close\r\nContent-Length: 25\r\n\r\n"
                b'{"env_id": "CartPole-v1"}')
        for origin in (b"http://evil.example", b"null", b"http://127.0.0.1:1"):
            with self.subTest(origin=origin):
                status, headers, body = self.raw(post % origin)
                self.assertEqual(status, 403)
                self.assertIn("--allow-origin", body["message"])
                self.assertNotIn("access-control-allow-origin", headers)
        status, _, _ = self.raw(b"POST /v1/shutdown/ HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n")
        self.assertEqual(status, 403)
        self.assertEqual(self.client.env_list_all(), {})  # nothing was made, and the server still runs
        status, headers, _ = self.raw(b"GET /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 200)  # a read, which the browser will not show to that page (no CORS header)
        self.assertNotIn("access-control-allow-origin", headers)
        own = f"http://127.0.0.1:{self.port}".encode()  # the dashboard's own origin
        status, _, body = self.raw(post.replace(b"Host: 127.0.0.1", b"Host: 127.0.0.1:%d" % self.port) % own)
        self.assertEqual(status, 200, body)

    def test_old_clients_odd_bodies_mean_no_parameters(self):
        iid = self.create(seed=0)
        for body in ('""', "[]", "null", "{}", "", " "):
            with self.subTest(body=body):
                self.assertEqual(self.post(f"/v1/envs/{iid}/reset/", body)[0], 200)
                self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/", body)[0], 204)
                status, _, reply = self.post(f"/v1/envs/{iid}/observation_space/contains", body)
                self.assertEqual((status, reply), (200, {"member": True}))
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", '"x"'), 400, "JSON object")
        self.assertError(self.post("/v1/envs/", '""'), 400, "JSON object")  # env_id is required there
        self.assertEqual(self.post(f"/v1/envs/{iid}/close/", '""')[0], 204)
        self.assertEqual(self.post("/v1/shutdown/", "[]")[0], 200)

    def test_booleans_as_strings_as_the_lua_client_sends_them(self):
        iid = self.create(seed=0)
        with tempfile.TemporaryDirectory() as d:
            params = {"directory": d, "force": "true", "resume": "false", "video_callable": False}
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", params)[0], 204)
            self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": 1, "render": "false"})[0], 200)
            self.assertError(self.post(f"/v1/envs/{iid}/step/", {"action": 1, "render": "yes"}), 400, "'render'", "true or false")
            self.post(f"/v1/envs/{iid}/monitor/close/")
            self.assertError(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": d, "force": "TRUE"}), 400, "'force'")

    def test_text_that_is_not_unicode_is_a_400(self):
        iid = self.create()
        for path, body in ((f"/v1/envs/{iid}/monitor/start/", b'{"directory": "/tmp/x\\ud800y"}'),
                           ("/v1/envs/", b'{"env_id": "CartPole\\udfff-v1"}'),
                           (f"/v1/envs/{iid}/reset/", b'{"options": {"\\ud800": 1}}')):
            with self.subTest(path=path):
                self.assertError(self.post(path, body), 400, "lone surrogate", "\\ud8" if b"ud800" in body else "\\udf")
        status, _, _ = self.post("/v1/envs/", b'{"env_id": "CartPole-v1", "kwargs": {"max_episode_steps": 5}, "x": "\\ud83d\\ude00"}')
        self.assertEqual(status, 200)  # a surrogate pair is one character

    def test_a_missing_package_is_a_400_that_says_what_to_install(self):
        message = self.assertError(self.post("/v1/envs/", {"env_id": "GymV26Environment-v0"}), 400, "shimmy", "pip install")
        self.assertNotIn("then restart", message)
        self.assertServing()

    def test_human_render_mode_is_refused_with_what_to_do_instead(self):
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "kwargs": {"render_mode": "human"}}), 400,
                         "rgb_array", "dashboard", 'RemoteEnv(..., render_mode="human")')
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "kwargs": {"render_mode": "human"}}), 400,
                         "rgb_array")

    def test_a_refused_seed_list_leaves_the_vector_as_it_was(self):
        iid = self.create(num_envs=3)  # CartPole's vector entry point: one integer seed only
        local = gymnasium.make_vec("CartPole-v1", num_envs=3)
        obs = self.post(f"/v1/envs/{iid}/reset/", {"seed": 4})[2]["observation"]
        np.testing.assert_allclose(obs, local.reset(seed=4)[0], rtol=1e-6)
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"seed": [1, 2, 3]}), 400, "one integer seed")
        for _ in range(3):
            status, _, reply = self.post(f"/v1/envs/{iid}/step/", {"action": [1, 0, 1]})
            self.assertEqual(status, 200, reply)  # not broken
            np.testing.assert_allclose(reply["observation"], local.step(np.array([1, 0, 1]))[0], rtol=1e-6)
        local.close()

    def test_steps_past_an_episode_end_belong_to_no_episode(self):
        iid = self.create("GymHTTPTest/Dict-v0")  # ends after 5 steps
        action = {"move": [0.0, 0.0], "jump": [0]}
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": d})[0], 204)
            for _ in range(5 + 7):  # an episode, then 7 steps that Gymnasium calls undefined
                self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": action})[0], 200)
            details = self.get(f"/v1/envs/{iid}/")[2]
            self.assertEqual((details["steps"], details["episodes"]), (12, 1))
            self.assertEqual([e["length"] for e in details["recent_episodes"]], [5])
            self.post(f"/v1/envs/{iid}/reset/")
            for _ in range(5):
                self.post(f"/v1/envs/{iid}/step/", {"action": action})
            self.post(f"/v1/envs/{iid}/monitor/close/")
            stats = [f for f in os.listdir(d) if f.endswith(".stats.json")][0]
            with open(os.path.join(d, stats)) as f:
                self.assertEqual(json.load(f)["episode_lengths"], [5, 5])
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["episodes"], 2)


class TestAllowedOrigins(ServerTestCase):
    server_options = {"allow_origins": ("https://app.example",), "token": "secret-token"}

    def test_cors_for_an_allowed_page(self):
        preflight = (b"OPTIONS /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://app.example\r\nConnection: close\r\n"
                     b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n\r\n")
        status, headers, _ = exchange(self.port, preflight)[:3]
        self.assertEqual(status, 204)  # no token needed: browsers send none on a preflight
        self.assertEqual(headers["access-control-allow-origin"], "https://app.example")
        self.assertIn("POST", headers["access-control-allow-methods"])
        self.assertEqual({h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}, {"authorization", "content-type"})
        self.assertEqual(headers["vary"], "Origin")
        origin = {"Origin": "https://app.example"}
        status, resp, reply = self.post("/v1/envs/", {"env_id": "CartPole-v1"}, headers=origin)
        self.assertEqual(status, 200, reply)
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), "https://app.example")
        status, resp, _ = self.request("GET", "/v1/envs/", headers={**origin, "Authorization": "Bearer wrong"})
        self.assertEqual(status, 401)
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), "https://app.example")  # so the page can read why
        status, resp, _ = self.post("/v1/envs/", {"env_id": "CartPole-v1"}, headers={"Origin": "https://other.example"})
        self.assertEqual(status, 403)
        self.assertIsNone(resp.getheader("Access-Control-Allow-Origin"))
        status, _, _ = exchange(self.port, preflight.replace(b"app.example", b"other.example"))[:3]
        self.assertEqual(status, 403)


class TestTokenBeforeBody(ServerTestCase):
    server_options = {"token": "secret-token"}

    def test_a_request_without_the_token_is_refused_before_its_body(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            # 16 MiB announced, none of it sent: the 401 must come at once, and the connection close.
            sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 16777215\r\n\r\n")
            started = time.monotonic()
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            self.assertLess(time.monotonic() - started, 2)
        status, headers, body = split_response(data)
        self.assertEqual(status, 401)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(headers["www-authenticate"], 'Bearer realm="gymhttp"')
        self.assertIn("token", strict_loads(body)["message"])

    def test_many_big_bodies_without_the_token_cost_no_memory(self):
        before = rss_of(os.getpid())
        socks = []
        try:
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                socks.append(sock)
                sock.sendall(b"POST /v1/envs/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 16777215\r\n\r\n")
                try:
                    sock.sendall(b"x" * (4 << 20))  # the server reads none of it: the send stalls or is cut off
                except OSError:
                    pass
            for sock in socks:
                self.assertEqual(split_response(sock.recv(65536))[0], 401)
        finally:
            for sock in socks:
                sock.close()
        self.assertLess(rss_of(os.getpid()) - before, 64 << 20)
        self.assertServing()


class TestConnectionLimit(ServerTestCase):
    server_options = {"max_connections": 3}

    def test_over_the_limit_gets_a_503_and_a_slot_frees_on_close(self):
        idle = [socket.create_connection(("127.0.0.1", self.port), timeout=5) for _ in range(3)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as extra:
                data = b""
                while chunk := extra.recv(65536):
                    data += chunk
            status, headers, body = split_response(data)
            self.assertEqual((status, headers["connection"]), (503, "close"))
            self.assertIn("--max-connections", strict_loads(body)["message"])
        finally:
            for sock in idle:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the three threads notice their peers left
            try:
                self.assertServing()
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class TestMonitorDirectorySwap(ServerTestCase):
    def test_a_directory_swapped_for_a_link_is_not_written_through(self):
        root = tempfile.mkdtemp()
        outside = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root, True)
        self.addCleanup(shutil.rmtree, outside, True)
        run = os.path.join(root, "run")
        iid = self.create("GymHTTPTest/Dict-v0")
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/start/", {"directory": run})[0], 204)
        os.rename(run, os.path.join(root, "moved"))
        os.symlink(outside, run)  # the same path, now leading outside
        action = {"move": [0.0, 0.0], "jump": [0]}
        for _ in range(5):
            self.post(f"/v1/envs/{iid}/step/", {"action": action})
        self.assertEqual(self.post(f"/v1/envs/{iid}/monitor/close/")[0], 204)
        self.assertEqual(os.listdir(outside), [])
        moved = os.path.join(root, "moved")
        stats = [f for f in os.listdir(moved) if f.endswith(".stats.json")]
        with open(os.path.join(moved, stats[0])) as f:
            self.assertEqual(json.load(f)["episode_lengths"], [5])


class TestProcessLimit(ServerTestCase):
    server_options = {"max_processes": 3}

    def test_instances_and_async_workers_count(self):
        ids = [self.create() for _ in range(3)]  # a process each
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1"}), 429, "--max-processes", "3 of at most 3")
        self.assertEqual(self.post(f"/v1/envs/{ids[0]}/close/")[0], 204)
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "vectorization_mode": "async"}),
                         429, "would start 3 processes")
        self.create(num_envs=2, vectorization_mode="sync")  # one process for the whole vector
        self.assertEqual(len(self.client.env_list_all()), 3)


class TestThreadProcessLimit(ServerTestCase):
    server_options = {"max_processes": 4, "isolation": "thread"}

    def test_async_workers_count(self):
        self.create(num_envs=3, vectorization_mode="async")
        self.assertError(self.post("/v1/envs/", {"env_id": "CartPole-v1", "num_envs": 2, "vectorization_mode": "async"}),
                         429, "--max-processes")
        self.create()  # a thread: no process


class TestRunningOutOfFiles(unittest.TestCase):
    def test_accepting_pauses_instead_of_spinning(self):
        import resource

        def few_files():
            resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

        proc = subprocess.Popen([sys.executable, "gymhttp.py", "-p", "0", "--max-connections", "1000"], cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=few_files)
        socks = []
        try:
            url = wait_for_line(proc).split(" serving on ")[1].split()[0].rstrip("/")
            port = int(url.rsplit(":", 1)[1])
            for _ in range(60):  # more than the server has files for
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.5)

            def cpu():
                with open(f"/proc/{proc.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

            before = cpu()
            time.sleep(1.0)
            self.assertLess(cpu() - before, 0.3)  # it used to spin at 99%
            for sock in socks:
                sock.close()
            socks = []
            time.sleep(1.2)
            with client.Client(url) as c:
                self.assertEqual(c.env_list_all(), {})
                c.shutdown_server()
            self.assertEqual(proc.wait(20), 0)
            self.assertIn("cannot accept connections", proc.stderr.read())
        finally:
            for sock in socks:
                sock.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


class TestNonLoopbackDefaults(unittest.TestCase):
    def test_monitor_directories_stay_under_the_working_directory(self):
        server = gymhttp.make_server("0.0.0.0", 0)
        self.addCleanup(server.server_close)
        self.assertFalse(server.loopback)
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(gymhttp.HTTPError) as ctx:
                server.monitor_directory(d)
            self.assertIn("outside", ctx.exception.message)
        self.assertEqual(server.monitor_directory("runs/x"), os.path.join(os.path.realpath(os.getcwd()), "runs", "x"))
        loop = gymhttp.make_server("127.0.0.1", 0)
        self.addCleanup(loop.server_close)
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(loop.monitor_directory(d), d)  # the original's behaviour, on loopback

    def test_warning_without_token(self):
        proc = subprocess.Popen([sys.executable, "gymhttp.py", "-l", "0.0.0.0", "-p", "0"], cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = wait_for_line(proc)
            port = int(line.split(":")[2].split("/")[0])
            with client.Client(f"http://127.0.0.1:{port}") as c:
                c.shutdown_server()
            self.assertEqual(proc.wait(20), 0)
            err = proc.stderr.read()
            self.assertIn("WARNING", err)
            self.assertIn("token", err)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()


class TestIdleReaping(ServerTestCase):
    server_options = {"idle_timeout": 0.4}

    def test_idle_instances_are_closed_and_monitors_flushed(self):
        with tempfile.TemporaryDirectory() as d:
            iid = self.client.env_create("CartPole-v1", seed=0)
            busy = self.client.env_create("CartPole-v1")
            self.client.env_monitor_start(iid, d)
            self.client.reset(iid)
            length = 0
            while True:
                length += 1
                if self.client.step(iid, 0)[2]:
                    break
            deadline = time.monotonic() + 5
            while iid in self.client.env_list_all() and time.monotonic() < deadline:
                self.client.step(busy, 0)  # this one stays in use
                time.sleep(0.1)
            listed = self.client.env_list_all()
            self.assertNotIn(iid, listed)
            self.assertIn(busy, listed)
            stats = [f for f in os.listdir(d) if f.endswith(".stats.json")]
            with open(os.path.join(d, stats[0])) as f:
                self.assertEqual(json.load(f)["episode_lengths"], [length])


# ---------------------------------------------------------------------------
# Signals, logging, env failures (a real server process)
# ---------------------------------------------------------------------------

ENV_MODULE = '''
import time, gymnasium
from gymnasium import spaces

class Slow(gymnasium.Env):
    observation_space = spaces.Discrete(2)
    action_space = spaces.Discrete(10)  # action k sleeps 0.8 k seconds
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}
    def step(self, action):
        time.sleep(float(action) * 0.8)
        return 0, 1.0, True, False, {}

class Exploding(Slow):
    def step(self, action):
        raise RuntimeError("kaboom in the env")

class Hang(Slow):
    def step(self, action):
        while True:  # busy, for ever: only a kill ends it
            pass

class Spawner(Slow):
    """Starts a child in its own process group, one in a session of its own
    (setsid) and a fork of itself, as a simulator's helpers might, and writes
    the pids (its own first) to ``pidfile``; action 1 then hangs, and so does
    make with ``make_hangs``."""
    def __init__(self, pidfile, make_hangs=False):
        import os, subprocess
        kids = [subprocess.Popen(["sleep", "60"]).pid, subprocess.Popen(["sleep", "60"], start_new_session=True).pid]
        forked = os.fork()
        if forked == 0:  # Python's fork: it keeps the signal handlers it was forked with
            open(pidfile + ".forked", "w").close()  # its fork hooks have run
            time.sleep(60)
            os._exit(0)
        with open(pidfile, "w") as f:
            f.write(" ".join(str(p) for p in [os.getpid(), *kids, forked]))
        while make_hangs:
            time.sleep(0.05)
    def step(self, action):
        while action == 1:
            pass
        return 0, 1.0, False, False, {}

gymnasium.register("Proc/Spawner-v0", entry_point=Spawner, disable_env_checker=True)
gymnasium.register("Proc/Slow-v0", entry_point=Slow, disable_env_checker=True)
gymnasium.register("Proc/Hang-v0", entry_point=Hang, disable_env_checker=True)
gymnasium.register("Proc/Exploding-v0", entry_point=Exploding, disable_env_checker=True)
'''


class TestServerProcess(unittest.TestCase):
    def start(self, *args, session=False):
        """The server as a program; with ``session``, in a session (and process group) of its own."""
        self.tmp = tempfile.mkdtemp(prefix="gymhttp-proc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        with open(os.path.join(self.tmp, "proc_envs.py"), "w") as f:
            f.write(ENV_MODULE)
        env = dict(os.environ, PYTHONPATH=self.tmp)
        env.pop("GYMHTTP_TOKEN", None)
        proc = subprocess.Popen([sys.executable, "gymhttp.py", "-p", "0", "--import", "proc_envs", *args], cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=session)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(10), proc.stdout.close(), proc.stderr.close()))
        line = wait_for_line(proc)
        return proc, line.split(" serving on ")[1].split()[0].rstrip("/")

    def signal_stops_cleanly(self, signum):
        proc, url = self.start()
        monitor = os.path.join(self.tmp, "mon")
        c = client.Client(url)
        slow = c.env_create("Proc/Slow-v0")
        c.env_monitor_start(slow, monitor)
        c.step(slow, 0)  # one quick episode
        reply = {}

        def in_flight():
            with client.Client(url) as other:
                other.reset(slow)  # that episode ended: a new one
                reply["step"] = other.step(slow, 1)  # takes 0.8 s

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.3)
        proc.send_signal(signum)
        thread.join(10)
        self.assertEqual(proc.wait(20), 0)
        self.assertEqual(reply["step"][1], 1.0)  # the in-flight step finished and was answered
        stats = [f for f in os.listdir(monitor) if f.endswith(".stats.json")]
        with open(os.path.join(monitor, stats[0])) as f:
            self.assertEqual(json.load(f)["episode_lengths"], [1, 1])  # both episodes, flushed at exit
        c.close()

    def test_sigterm(self):
        self.signal_stops_cleanly(signal.SIGTERM)

    def test_sigint(self):
        self.signal_stops_cleanly(signal.SIGINT)

    def shutdown_ends_despite_a_hung_env(self, isolation):
        proc, url = self.start("--isolation", isolation, "--drain-timeout", "1")
        c = client.Client(url)
        self.addCleanup(c.close)
        monitor = os.path.join(self.tmp, "mon")
        slow = c.env_create("Proc/Slow-v0")
        c.env_monitor_start(slow, monitor)
        c.step(slow, 0)
        hung = c.env_create("Proc/Hang-v0")
        pids = [c.env_details(iid)["pid"] for iid in (slow, hung)]
        answer = {}

        def stuck():
            with client.Client(url) as other:
                try:
                    other.step(hung, 0)
                except (client.ServerError, ConnectionError) as exc:
                    answer["error"] = exc

        thread = threading.Thread(target=stuck, daemon=True)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(20), 0)
        self.assertLess(time.monotonic() - started, 1 + gymhttp.CLOSE_SECONDS + 2)
        thread.join(5)
        self.assertIn("error", answer)  # the stuck step was answered (or cut off), not left hanging
        with open(os.path.join(monitor, [f for f in os.listdir(monitor) if f.endswith(".stats.json")][0])) as f:
            self.assertEqual(json.load(f)["episode_lengths"], [1])
        return pids, answer["error"]

    def test_shutdown_ends_despite_a_hung_env_in_a_process(self):
        pids, error = self.shutdown_ends_despite_a_hung_env("process")
        self.assertEqual(getattr(error, "status_code", None), 503)  # the server said why
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual([os.path.exists(f"/proc/{pid}") for pid in pids], [False, False])

    def test_shutdown_ends_despite_a_hung_env_in_a_thread(self):
        pids, _ = self.shutdown_ends_despite_a_hung_env("thread")
        self.assertEqual(pids, [None, None])

    def test_monitor_files_and_instance_processes_after_the_server_is_killed(self):
        proc, url = self.start()
        monitor = os.path.join(self.tmp, "mon")
        with client.Client(url) as c:
            iid = c.env_create("Proc/Slow-v0")
            c.env_monitor_start(iid, monitor)
            for _ in range(5):
                c.reset(iid)
                c.step(iid, 0)  # a one-step episode
            pid = c.env_details(iid)["pid"]
            time.sleep(1.2)  # finished episodes reach the file within a second
            proc.kill()
            proc.wait(10)
        stats = [f for f in os.listdir(monitor) if f.endswith(".stats.json")]
        self.assertFalse([f for f in os.listdir(monitor) if f.endswith(".tmp")])
        with open(os.path.join(monitor, stats[0])) as f:
            self.assertEqual(json.load(f)["episode_lengths"], [1] * 5)
        deadline = time.monotonic() + 5  # no instance process outlives its server
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertFalse(os.path.exists(f"/proc/{pid}"))

    def spawned(self, c, **kwargs) -> tuple[str, list[int]]:
        """A Spawner instance and the pids it wrote: its own, its child's, its setsid child's."""
        pidfile = os.path.join(self.tmp, f"pids-{len(os.listdir(self.tmp))}")
        iid = c.env_create("Proc/Spawner-v0", kwargs={"pidfile": pidfile, **kwargs})
        with open(pidfile) as f:
            return iid, [int(p) for p in f.read().split()]

    def wait_for_pids(self, pidfile: str, seconds: float = 10.0) -> list[int]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    text = f.read()
                if text.count(" ") == 3:
                    return [int(p) for p in text.split()]
            time.sleep(0.02)
        self.fail("the env wrote no pids")

    def assertAllGone(self, pids: list[int], seconds: float = 5.0) -> None:
        """Every process ended (a zombie waiting for a parent that is gone counts as ended)."""
        deadline = time.monotonic() + seconds
        while any(map(process_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual([p for p in pids if process_alive(p)], [])

    def test_nothing_an_instance_started_outlives_its_close(self):
        proc, url = self.start()
        with client.Client(url) as c:
            iid, pids = self.spawned(c)
            c.env_close(iid)
            self.assertAllGone(pids)
            hung, pids = self.spawned(c)
            other = client.Client(url)
            self.addCleanup(other.close)
            threading.Thread(target=lambda: self.assertRaises(client.ServerError, other.step, hung, 1), daemon=True).start()
            time.sleep(0.3)
            c.env_close(hung)  # a hung instance: its process is killed, and what it started with it
            self.assertAllGone(pids)
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)

    def test_sigterm_to_the_process_group_leaves_nothing_and_answers_what_was_in_flight(self):
        proc, url = self.start("--drain-timeout", "1", session=True)
        c = client.Client(url)
        self.addCleanup(c.close)
        hung, pids = self.spawned(c)
        answers = {}

        def call(name, function):
            with client.Client(url) as other:
                try:
                    function(other)
                except (client.ServerError, ConnectionError) as exc:
                    answers[name] = exc

        making = os.path.join(self.tmp, "making")
        threads = [threading.Thread(target=call, args=("step", lambda o: o.step(hung, 1)), daemon=True),
                   threading.Thread(target=call, args=("create", lambda o: o.env_create(
                       "Proc/Spawner-v0", kwargs={"pidfile": making, "make_hangs": True})), daemon=True)]
        for thread in threads:
            thread.start()
        pids += self.wait_for_pids(making)  # a make still running
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)  # what kill %1, timeout and supervisors send
        self.assertEqual(proc.wait(20), 0)
        for thread in threads:
            thread.join(5)
        for name in ("step", "create"):  # each got its JSON answer: shutting down, its process killed
            self.assertEqual(getattr(answers.get(name), "status_code", None), 503, answers)
        self.assertAllGone(pids)

    def test_sigkill_of_the_server_leaves_nothing(self):
        proc, url = self.start()
        with client.Client(url) as c:
            _, pids = self.spawned(c)
            _, more = self.spawned(c)
        proc.kill()
        proc.wait(10)
        self.assertAllGone(pids + more)

    def test_a_child_forked_in_thread_mode_ends_on_sigterm(self):
        proc, url = self.start("--isolation", "thread")
        with client.Client(url) as c:
            _, pids = self.spawned(c)
            deadline = time.monotonic() + 5
            while not [f for f in os.listdir(self.tmp) if f.endswith(".forked")] and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(pids[3], signal.SIGTERM)  # the env's fork of the server's process
            self.assertAllGone(pids[3:])
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)

    def test_second_ctrl_c_exits_at_once(self):
        proc, url = self.start()
        c = client.Client(url)
        self.addCleanup(c.close)
        slow = c.env_create("Proc/Slow-v0")
        thread = threading.Thread(target=lambda: self.assertRaises(Exception, c.step, slow, 9), daemon=True)
        thread.start()  # a 7 s step: the first Ctrl-C waits for it, the second doesn't
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        self.assertNotEqual(proc.wait(10), 0)
        self.assertLess(time.monotonic() - started, 3)

    def test_request_log_env_tracebacks_and_no_secrets(self):
        proc, url = self.start("--log-level", "info", "--token", "hush-hush-123")
        with client.Client(url, token="hush-hush-123") as c:
            boom = c.env_create("Proc/Exploding-v0")
            with self.assertRaises(client.ServerError) as ctx:
                c.step(boom, 0)
            self.assertEqual(ctx.exception.status_code, 500)
            self.assertIn("kaboom in the env", ctx.exception.message)
            self.assertEqual(c.env_list_all(), {boom: "Proc/Exploding-v0"})
        with client.Client(url, token="wrong-guess-456") as bad:
            self.assertRaises(client.ServerError, bad.env_list_all)
        with client.Client(url, token="hush-hush-123") as c:
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)
        err = proc.stderr.read()
        self.assertRegex(err, r"POST /v1/envs/ 200 \d+\.\dms")
        self.assertRegex(err, r"GET /v1/envs/ 401 \d+\.\dms")
        self.assertIn("Traceback", err)
        self.assertIn("RuntimeError: kaboom in the env", err)
        self.assertNotIn("hush-hush-123", err)
        self.assertNotIn("wrong-guess-456", err)

    def test_quiet_by_default(self):
        proc, url = self.start()
        with client.Client(url) as c:
            c.env_list_all()
            c.shutdown_server()
        self.assertEqual(proc.wait(20), 0)
        self.assertEqual(proc.stderr.read(), "")


# ---------------------------------------------------------------------------
# RemoteEnv: a gymnasium.Env backed by the server
# ---------------------------------------------------------------------------

NON_FINITE_BOX = spaces.Box(np.array([-np.inf, 0.0]), np.array([1.5, np.inf]), dtype=np.float64)
gymnasium.register(
    "GymHTTPTest/Mixed-v0",
    entry_point=lambda **kw: SpaceEnv(
        spaces.Dict({"box": NON_FINITE_BOX, "pair": TUPLE_OBS, "bits": spaces.MultiBinary([2, 2]),
                     "levels": spaces.MultiDiscrete([[2, 3], [4, 5]], start=[[1, 1], [0, -2]])}),
        spaces.Box(-1, 1, (3,), np.int16), **kw),
    disable_env_checker=True,
)


FORK_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
import client
env = client.RemoteEnv(sys.argv[1], "CartPole-v1")
env.reset(seed=0)
c = client.Client(sys.argv[1])
c.env_list_all()
port = c._conn.sock.getsockname()[1]  # the parent's connection, by its local port
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # a worker that inherits both, uses them, and exits normally (finalizers and atexit run)
    env.step(0)
    c.env_list_all()
    os.write(w, json.dumps(c._conn.sock.getsockname()[1]).encode())
    sys.exit(0)
os.waitpid(pid, 0)
child_port = json.loads(os.read(r, 100))
env.step(0)
c.env_list_all()
print(json.dumps({"parent": port, "child": child_port, "parent_after": c._conn.sock.getsockname()[1],
                  "instances": c.env_list_all(), "id": env.instance_id}))
"""


@unittest.skipUnless(hasattr(os, "fork"), "no os.fork here")
class TestFork(ServerTestCase):
    def test_a_forked_worker_has_its_own_connection_and_leaves_the_instance_be(self):
        out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, self.base, HERE], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        seen = json.loads(out.stdout)
        self.assertNotEqual(seen["child"], seen["parent"])  # not one socket read by two processes
        self.assertEqual(seen["parent_after"], seen["parent"])  # and the parent's connection carried on
        self.assertEqual(seen["instances"], {seen["id"]: "CartPole-v1"})  # the child's exit did not close it
        self.assertEqual(self.client.env_list_all(), {})  # the parent's did


class TestRemoteEnv(ServerTestCase):
    def remote(self, env_id, **kwargs):
        env = client.RemoteEnv(self.base, env_id, **kwargs)
        self.addCleanup(env.close)
        return env

    def assertSameValue(self, space, got, want):
        """Equal values, with numpy arrays and scalars of the space's dtype
        (a local env may hand out Python ints for a Discrete; we give np.int64)."""
        if isinstance(space, spaces.Tuple):
            self.assertIsInstance(got, tuple)
            for s, g, w in zip(space.spaces, got, want, strict=True):
                self.assertSameValue(s, g, w)
        elif isinstance(space, spaces.Dict):
            self.assertEqual(list(got), list(space.spaces))
            for k, s in space.spaces.items():
                self.assertSameValue(s, got[k], want[k])
        else:
            self.assertEqual(np.asarray(got).dtype, space.dtype)
            np.testing.assert_array_equal(got, want)
            self.assertIn(got, space)

    def test_client_imports_gymnasium_only_for_remote_env(self):
        code = ("import sys, client\nbefore = {'gymnasium', 'numpy'} & set(sys.modules)\n"
                "cls = client.RemoteEnv\nimport gymnasium\n"
                "print(sorted(before), issubclass(cls, gymnasium.Env), 'RemoteEnv' in client.__all__)")
        out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.stdout.strip(), "[] True False", out.stderr)

    def test_spaces_equal_local_ones(self):
        for env_id in ("CartPole-v1", "Pendulum-v1", "Blackjack-v1", "MountainCarContinuous-v0", "FrozenLake-v1",
                       "GymHTTPTest/Dict-v0", "GymHTTPTest/Tuple-v0", "GymHTTPTest/Multi-v0", "GymHTTPTest/Text-v0",
                       "GymHTTPTest/Image-v0", "GymHTTPTest/Mixed-v0"):
            with self.subTest(env_id):
                remote, local = self.remote(env_id), gymnasium.make(env_id)
                self.assertEqual(remote.action_space, local.action_space)
                self.assertEqual(remote.observation_space, local.observation_space)
        box = self.remote("GymHTTPTest/Mixed-v0").observation_space["box"]
        self.assertEqual((box.low[0], box.high[1]), (-np.inf, np.inf))  # +-1e100 on the wire, infinite again here

    def test_passes_check_env(self):
        from gymnasium.utils.env_checker import check_env

        for env_id, kwargs in (("CartPole-v1", {}), ("Pendulum-v1", {}), ("Blackjack-v1", {}),
                               ("GymHTTPTest/Dict-v0", {}), ("CartPole-v1", {"render_mode": "rgb_array"})):
            with self.subTest(env_id, **kwargs), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                env = self.remote(env_id, **kwargs)
                self.assertIsInstance(env, gymnasium.Env)
                check_env(env)  # raises on any failure
        self.assertEqual(len(self.client.env_list_all()), 5)  # check_env's extra envs were closed

    def test_trajectory_and_dtypes_match_local(self):
        for env_id, actions in (("CartPole-v1", [0, 1, 1, 0, 1] * 8), ("Pendulum-v1", [np.array([0.5], np.float32)] * 20),
                                ("Blackjack-v1", [1, 1, 0]), ("GymHTTPTest/Mixed-v0", [np.array([1, -1, 0], np.int16)] * 3)):
            with self.subTest(env_id):
                remote, local = self.remote(env_id), gymnasium.make(env_id)
                got, want = remote.reset(seed=11), local.reset(seed=11)
                self.assertSameValue(remote.observation_space, got[0], want[0])
                for action in actions:
                    got, want = remote.step(action), local.step(action)
                    self.assertSameValue(remote.observation_space, got[0], want[0])
                    self.assertIs(type(got[1]), type(want[1]))  # an int stays an int, np.float64 np.float64
                    self.assertEqual(got[1:4], (want[1], bool(want[2]), bool(want[3])))
                    if want[2] or want[3]:
                        break

    def test_render_rgb_array_and_ansi_match_local(self):
        remote = self.remote("CartPole-v1", render_mode="rgb_array")
        local = gymnasium.make("CartPole-v1", render_mode="rgb_array")
        self.assertIsNone(remote.render())  # before the first reset, as a local CartPole
        remote.reset(seed=3), local.reset(seed=3)
        for action in (0, 1, 1):
            remote.step(action), local.step(action)
        frame = remote.render()
        self.assertEqual((frame.dtype, frame.shape), (np.uint8, (400, 600, 3)))
        np.testing.assert_array_equal(frame, local.render())
        text = self.remote("FrozenLake-v1", render_mode="ansi")
        lake = gymnasium.make("FrozenLake-v1", render_mode="ansi")
        text.reset(seed=0), lake.reset(seed=0)
        text.step(2), lake.step(2)
        self.assertEqual(text.render(), lake.render())
        self.assertIn("human", text.metadata["render_modes"])  # shown here, from the server's rgb_array frames
        self.assertIn("rgb_array", lake.metadata["render_modes"])

    def test_works_inside_sync_vector_env(self):
        remote = gymnasium.vector.SyncVectorEnv([lambda: client.RemoteEnv(self.base, "CartPole-v1") for _ in range(3)])
        local = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("CartPole-v1") for _ in range(3)])
        try:
            got, want = remote.reset(seed=5), local.reset(seed=5)
            np.testing.assert_array_equal(got[0], want[0])
            self.assertEqual(got[0].dtype, np.float32)
            for t in range(60):  # through autoresets
                action = np.array([t % 2, (t // 2) % 2, 1 - t % 2])
                got, want = remote.step(action), local.step(action)
                for a, b in zip(got[:4], want[:4]):
                    np.testing.assert_array_equal(a, b)
            self.assertEqual(len(self.client.env_list_all()), 3)
        finally:
            remote.close()
        self.assertEqual(self.client.env_list_all(), {})

    def test_close_forgets_the_instance_and_may_repeat(self):
        env = client.RemoteEnv(self.base, "CartPole-v1")
        self.assertIn(env.instance_id, self.client.env_list_all())
        env.close()
        env.close()
        self.assertEqual(self.client.env_list_all(), {})
        with self.assertRaises(gymnasium.error.ClosedEnvironmentError):
            env.step(0)

    def test_a_dropped_env_is_closed_on_the_server(self):
        import gc

        env = client.RemoteEnv(self.base, "CartPole-v1")
        env.reset(seed=0)
        self.assertEqual(len(self.client.env_list_all()), 1)
        del env
        gc.collect()
        self.assertEqual(self.client.env_list_all(), {})

    def test_token_and_errors_reach_the_user(self):
        with self.assertRaises(client.ServerError) as caught:
            client.RemoteEnv(self.base, "NoSuchEnv-v0")
        self.assertEqual(caught.exception.status_code, 400)
        self.assertIn("NoSuchEnv", caught.exception.message)
        env = self.remote("CartPole-v1")
        with self.assertRaises(client.ServerError) as caught:
            env.step(7)
        self.assertIn("not in the action space", caught.exception.message)


# ---------------------------------------------------------------------------
# Watching: instance details, the registry, rendered frames
# ---------------------------------------------------------------------------


class TestRemoteEnvWhereLibrariesLook(ServerTestCase):
    """What wrappers, vector envs and process pools read off an env."""

    def remote(self, env_id="CartPole-v1", **kwargs):
        env = client.RemoteEnv(self.base, env_id, **kwargs)
        self.addCleanup(env.close)
        return env

    def test_spec_carries_the_servers_horizon_and_makes_a_twin(self):
        env = self.remote()
        local = gymnasium.make("CartPole-v1")
        for field in ("max_episode_steps", "reward_threshold", "nondeterministic"):
            self.assertEqual(getattr(env.spec, field), getattr(local.spec, field), field)
        self.assertEqual(env.spec.entry_point, "client:RemoteEnv")
        self.assertEqual(env.spec.kwargs, {"remote_base": self.base, "env_id": "CartPole-v1"})
        self.assertEqual(self.remote(max_episode_steps=200).spec.max_episode_steps, 200)
        self.assertEqual(json.loads(env.spec.to_json())["entry_point"], "client:RemoteEnv")
        twin = gymnasium.make(env.spec)
        self.addCleanup(twin.close)
        self.assertIsInstance(twin.unwrapped, client.RemoteEnv)
        self.assertNotEqual(twin.unwrapped.instance_id, env.instance_id)
        self.assertEqual(len(self.client.env_list_all()), 3)
        aware = gymnasium.wrappers.TimeAwareObservation(env)  # reads spec.max_episode_steps; refused None
        self.assertEqual(aware.observation_space.shape, (5,))

    def test_the_class_spec_and_partial_pickle_and_a_live_env_says_what_to_send(self):
        import functools
        import pickle

        self.assertIs(pickle.loads(pickle.dumps(client.RemoteEnv)), client.RemoteEnv)
        self.assertIs(pickle.loads(pickle.dumps(client.RemoteVectorEnv)), client.RemoteVectorEnv)
        maker = pickle.loads(pickle.dumps(functools.partial(client.RemoteEnv, self.base, "CartPole-v1")))
        env = maker()
        self.addCleanup(env.close)
        spec = pickle.loads(pickle.dumps(env.spec))
        self.assertEqual(spec, env.spec)
        with self.assertRaises(TypeError) as ctx:
            pickle.dumps(env)
        self.assertIn("functools.partial(client.RemoteEnv", str(ctx.exception))

    def test_async_vector_env_with_spawn_workers(self):
        # In a program of its own, as a user runs it: spawn workers re-import the parent's main module.
        code = f"""
import functools, json
import gymnasium, numpy as np
import client
if __name__ == "__main__":
    make = functools.partial(client.RemoteEnv, {self.base!r}, "CartPole-v1")
    envs = gymnasium.vector.AsyncVectorEnv([make, make], context="spawn")
    local = gymnasium.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
    same = bool(np.array_equal(envs.reset(seed=[3, 4])[0], local.reset(seed=[3, 4])[0]))
    for t in range(30):
        actions = np.array([t % 2, (t // 2) % 2])
        got, want = envs.step(actions), local.step(actions)
        same = same and all(np.array_equal(g, w) for g, w in zip(got[:4], want[:4]))
    specs = envs.get_attr("spec")  # used to kill the workers (a spec holding a local function)
    print(json.dumps([same, [s.kwargs["env_id"] for s in specs], specs[0].max_episode_steps]))
    envs.close()
"""
        out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        self.assertEqual(json.loads(out.stdout), [True, ["CartPole-v1", "CartPole-v1"], 500])
        self.assertEqual(self.client.env_list_all(), {})  # the workers closed their instances

    def test_human_render_mode_shows_the_frames_here(self):
        import pygame

        env = self.remote(render_mode="human")
        self.assertEqual(env.render_mode, "human")
        self.assertIn("human", env.metadata["render_modes"])
        self.assertEqual(self.get(f"/v1/envs/{env.instance_id}/")[2]["render_mode"], "rgb_array")  # made so on the server
        local = gymnasium.make("CartPole-v1", render_mode="rgb_array")
        env.reset(seed=1), local.reset(seed=1)
        for action in (1, 1, 0):
            env.step(action), local.step(action)
        shown = pygame.surfarray.array3d(pygame.display.get_surface()).transpose(1, 0, 2)
        np.testing.assert_array_equal(shown, local.render())
        self.assertIsNone(env.render())
        env.close()
        self.assertFalse(pygame.display.get_init())


class TestRemoteVectorEnv(ServerTestCase):
    def pair(self, num_envs=4, **kwargs):
        remote = client.RemoteVectorEnv(self.base, "CartPole-v1", num_envs, **kwargs)
        self.addCleanup(remote.close)
        local = gymnasium.make_vec("CartPole-v1", num_envs=num_envs, **kwargs)
        self.addCleanup(local.close)
        return remote, local

    def assertInfoEqual(self, got, want, where):
        self.assertEqual(set(got), set(want), where)
        for key, value in want.items():
            if isinstance(value, dict):
                self.assertInfoEqual(got[key], value, f"{where}.{key}")
            elif isinstance(value, np.ndarray) and value.dtype == object:
                self.assertEqual(got[key].dtype, object, f"{where}.{key}")
                for g, w in zip(got[key], value):
                    if w is None:
                        self.assertIsNone(g)
                    else:
                        self.assertEqual(np.asarray(g).dtype, np.asarray(w).dtype)
                        np.testing.assert_array_equal(g, w)
            else:
                self.assertEqual(np.asarray(got[key]).dtype, np.asarray(value).dtype, f"{where}.{key}")
                np.testing.assert_array_equal(got[key], value)

    def check_step_for_step(self, steps=60, **kwargs):
        remote, local = self.pair(**kwargs)
        self.assertEqual(remote.observation_space, local.observation_space)
        self.assertEqual(remote.action_space, local.action_space)
        self.assertEqual(remote.single_observation_space, local.single_observation_space)
        self.assertEqual(remote.single_action_space, local.single_action_space)
        self.assertEqual(remote.metadata["autoreset_mode"], local.metadata["autoreset_mode"])
        self.assertEqual(remote.num_envs, local.num_envs)
        got, want = remote.reset(seed=7), local.reset(seed=7)
        np.testing.assert_array_equal(got[0], want[0])
        self.assertInfoEqual(got[1], want[1], "reset")
        mode = local.metadata["autoreset_mode"]
        rng = np.random.default_rng(0)
        for t in range(steps):
            actions = rng.integers(0, 2, remote.num_envs)
            got, want = remote.step(actions), local.step(actions)
            for g, w, name in zip(got[:4], want[:4], ("observations", "rewards", "terminations", "truncations")):
                self.assertEqual(g.dtype, w.dtype, name)
                np.testing.assert_array_equal(g, w, f"{name} at step {t}")
            self.assertInfoEqual(got[4], want[4], f"step {t}")
            if mode == gymnasium.vector.AutoresetMode.DISABLED and (want[2] | want[3]).any():
                mask = want[2] | want[3]
                got, want = remote.reset(options={"reset_mask": mask}), local.reset(options={"reset_mask": mask})
                np.testing.assert_array_equal(got[0], want[0])
        self.assertIn(remote.observation_space.sample().shape, [(4, 4)])
        return remote

    def test_sync_in_every_autoreset_mode(self):
        for mode in ("NextStep", "SameStep", "Disabled"):
            with self.subTest(mode):
                self.check_step_for_step(vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode})

    def test_vector_entry_point(self):
        self.check_step_for_step(vectorization_mode="vector_entry_point")
        self.check_step_for_step()  # Gymnasium's default for CartPole: the same

    def test_env_kwargs_and_render(self):
        remote, local = self.pair(3, vectorization_mode="sync", render_mode="rgb_array", max_episode_steps=20)
        self.assertEqual(remote.render_mode, "rgb_array")
        remote.reset(seed=2), local.reset(seed=2)
        for _ in range(25):  # past the 20-step horizon: the kwargs reached the sub-envs
            got, want = remote.step(np.ones(3, dtype=np.int64)), local.step(np.ones(3, dtype=np.int64))
            np.testing.assert_array_equal(got[3], want[3])
        frames = remote.render()
        self.assertEqual(len(frames), 3)
        for frame, expected in zip(frames, local.render()):
            np.testing.assert_array_equal(frame, expected)

    def test_cleanrl_style_loop_with_episode_statistics(self):
        # What CleanRL's ppo.py does with its envs: wrap, reset once, step with sampled actions, read episode stats.
        envs = gymnasium.wrappers.vector.RecordEpisodeStatistics(client.RemoteVectorEnv(self.base, "CartPole-v1", 4))
        self.addCleanup(envs.close)
        assert isinstance(envs.single_action_space, spaces.Discrete)
        observations, _ = envs.reset(seed=1)
        returns = []
        for _ in range(200):
            observations, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
            if "episode" in infos:
                returns += infos["episode"]["r"][infos["_episode"]].tolist()
        self.assertEqual(observations.shape, (4, 4))
        self.assertGreater(len(returns), 10)
        self.assertTrue(all(r >= 8 for r in returns))  # CartPole lasts at least 8 steps

    def test_the_training_example_solves_cartpole(self):
        out = subprocess.run([sys.executable, os.path.join("examples", "train_vector.py"), "--url", self.base,
                              "--generations", "6"], cwd=HERE, capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        best = [float(line.split("best return ")[1].split(",")[0]) for line in out.stdout.splitlines()]
        self.assertEqual(len(best), 6)
        self.assertLess(best[0], 100)
        self.assertEqual(best[-1], 500)  # learned: the longest CartPole episode there is
        self.assertEqual(self.client.env_list_all(), {})  # and closed its instance

    def test_pickles_like_remote_env(self):
        import pickle

        remote, _ = self.pair(2)
        with self.assertRaises(TypeError):
            pickle.dumps(remote)
        self.assertEqual(pickle.loads(pickle.dumps(remote.spec)), remote.spec)


# ---------------------------------------------------------------------------
# Custom spaces, server-side wrappers, and the env suites people train on,
# each compared step for step with the same env made locally
# ---------------------------------------------------------------------------


class SameAsLocal:
    """Assertions that a value from the server is what the local env gave:
    the same types all the way down (an int stays an int, an int8 array an
    int8 array, a numpy scalar that scalar), and the same contents."""

    def assertSameTyped(self, got, want, where="value"):
        if isinstance(want, np.ndarray):
            self.assertIs(type(got), np.ndarray, where)
            self.assertEqual((got.dtype, got.shape), (want.dtype, want.shape), where)
            if want.dtype == object:
                for k, (g, w) in enumerate(zip(got, want)):
                    self.assertSameTyped(g, w, f"{where}[{k}]")
            else:
                np.testing.assert_array_equal(got, want, where)
        elif isinstance(want, dict):
            self.assertIsInstance(got, dict, where)
            self.assertEqual(list(got), list(want), where)
            for key in want:
                self.assertSameTyped(got[key], want[key], f"{where}[{key!r}]")
        elif isinstance(want, (tuple, list)):
            self.assertIsInstance(got, (tuple, list), where)  # JSON has one kind of sequence
            self.assertEqual(len(got), len(want), where)
            for k, (g, w) in enumerate(zip(got, want)):
                self.assertSameTyped(g, w, f"{where}[{k}]")
        else:
            self.assertIs(type(got), type(want), f"{where}: {got!r} against {want!r}")
            if want == want:  # NaN is NaN
                self.assertEqual(got, want, where)

    def assertStepsLikeLocal(self, remote, local, actions, seed=0, where=""):
        """Reset both with ``seed``, then take ``actions``; every return of
        every call the same.  Returns the number of steps taken."""
        got, want = remote.reset(seed=seed), local.reset(seed=seed)
        self.assertSameTyped(got[0], want[0], f"{where} reset observation")
        self.assertSameTyped(got[1], want[1], f"{where} reset info")
        for t, action in enumerate(actions):
            got, want = remote.step(action), local.step(action)
            for g, w, name in zip(got, want, ("observation", "reward", "terminated", "truncated", "info")):
                self.assertSameTyped(g, w, f"{where} step {t} {name}")
            if not hasattr(local, "num_envs") and (want[2] or want[3]):
                return t + 1
        return len(actions)

    def assertChecksLikeLocal(self, remote, local, **kwargs):
        """check_env passes on the remote env, and warns of nothing that it
        does not warn of locally (the remote twin is not wrapped: fewer)."""
        from gymnasium.utils.env_checker import check_env

        def warned(env, **kw):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check_env(env, **kw)
            return {re.sub(r"\x1b\[[0-9;]*m", "", str(w.message)) for w in caught}

        extra = warned(remote) - warned(local, **kwargs)
        self.assertEqual(extra, set())


def needs(module: str):
    """Skip unless ``module`` (an env suite) is installed."""
    return unittest.skipUnless(importlib.util.find_spec(module), f"{module} is not installed "
                               "(pip install -r .ci/requirements-test.txt)")


class TestCustomSpaces(SameAsLocal, ServerTestCase):
    def remote(self, env_id="GymHTTPTest/Custom-v0", **kwargs):
        env = client.RemoteEnv(self.base, env_id, **kwargs)
        self.addCleanup(env.close)
        return env

    def test_described_over_http_for_any_client(self):
        iid = self.create("GymHTTPTest/Custom-v0")
        info = self.get(f"/v1/envs/{iid}/observation_space/")[2]["info"]
        even, word, pixels = (info["spaces"][k] for k in ("even", "word", "pixels"))
        self.assertEqual(even, {"name": "EvenNumbers", "class": f"{__name__}:EvenNumbers", "shape": [], "dtype": "int64",
                                "example": even["example"], "attributes": {"limit": 10}})
        self.assertEqual(even["example"] % 2, 0)
        self.assertEqual(word["attributes"], {"words": ["red", "green", "blue"]})
        self.assertEqual((pixels["name"], pixels["class"], pixels["low"]), ("Box", f"{__name__}:Pixels", [0] * 4))
        self.assertEqual(self.get(f"/v1/envs/{iid}/observation_space/?compact=true")[2]["info"]["spaces"]["pixels"]["low"], 0)
        self.assertEqual(self.get(f"/v1/envs/{iid}/action_space/")[2]["info"]["attributes"], {"limit": 6})

    def test_remote_env_rebuilds_them_and_the_server_judges_what_it_cannot(self):
        env = self.remote()
        obs = env.observation_space
        self.assertEqual(type(obs["even"]).__name__, "RemoteSpace")
        self.assertEqual(obs["even"].class_path, f"{__name__}:EvenNumbers")
        self.assertIs(type(obs["pixels"]), spaces.Box)  # rebuilt as its kind
        self.assertEqual(obs["pixels"], spaces.Box(0, 255, (2, 2), np.uint8))
        for value, member in ((4, True), (3, False), (12, False), (np.int64(8), True), ("4", False)):
            with self.subTest(even=value):
                self.assertIs(obs["even"].contains(value), member)
        for value, member in (("green", True), ("purple", False), (5, False)):
            with self.subTest(word=value):
                self.assertIs(obs["word"].contains(value), member)
        observation, _ = env.reset(seed=3)
        self.assertIn(observation, obs)
        self.assertNotIn({**observation, "word": "purple"}, obs)
        # sample() is the server's, seeded as a local space would be
        local = gymnasium.make("GymHTTPTest/Custom-v0")
        env.action_space.seed(11)
        local.action_space.seed(11)
        self.assertEqual([env.action_space.sample() for _ in range(5)], [local.action_space.sample() for _ in range(5)])
        self.assertIn(env.observation_space.sample()["word"], ["red", "green", "blue"])

    def test_steps_and_checks_like_local(self):
        env, local = self.remote(), gymnasium.make("GymHTTPTest/Custom-v0")
        self.assertStepsLikeLocal(env, local, [0, 2, 4, 2, 0], seed=5)
        self.assertChecksLikeLocal(env, local)
        with self.assertRaises(client.ServerError) as caught:
            env.step(3)
        self.assertIn("not in the action space", caught.exception.message)

    def test_vector_of_custom_spaces(self):
        remote = client.RemoteVectorEnv(self.base, "GymHTTPTest/Custom-v0", 3, vectorization_mode="sync")
        self.addCleanup(remote.close)
        local = gymnasium.make_vec("GymHTTPTest/Custom-v0", num_envs=3, vectorization_mode="sync")
        self.addCleanup(local.close)
        self.assertEqual(type(remote.single_observation_space["word"]).__name__, "RemoteSpace")
        self.assertEqual(len(remote.observation_space["word"]), 3)  # batched as Gymnasium batches a custom space
        got, want = remote.reset(seed=2), local.reset(seed=2)
        self.assertSameTyped(got[0], want[0])
        for action in ([0, 2, 4], [4, 4, 0]):
            got, want = remote.step(np.array(action)), local.step(np.array(action))
            self.assertSameTyped(got[0], want[0])
            self.assertSameTyped(got[1], want[1])
        self.assertIn(got[0], remote.observation_space)

    def test_a_copy_that_left_its_process_judges_alone(self):
        import pickle

        word = pickle.loads(pickle.dumps(self.remote().observation_space["word"]))
        self.assertIn(word.sample(), ["red", "green", "blue"])  # the example
        self.assertTrue(word.contains("anything"))  # a string: nothing more can be told here
        self.assertFalse(word.contains(7))

    def test_bad_space_requests_say_what_to_fix(self):
        iid = self.create("GymHTTPTest/Custom-v0")
        post = lambda route, body: self.post(f"/v1/envs/{iid}/spaces/{route}", body)  # noqa: E731
        self.assertError(post("sample", {"space": "observaton"}), 400, "'space'", "did you mean 'observation'")
        self.assertError(post("sample", {"space": "single_action"}), 400, "'space'")  # not a vector
        self.assertError(post("sample", {"space": "observation", "path": ["colour"]}), 400, "colour", "leads nowhere")
        self.assertError(post("sample", {"space": "observation", "path": [{"a": 1}]}), 400, "'path'")
        self.assertError(post("contains", {"space": "observation", "path": ["word"]}), 400, "'value'")
        self.assertError(post("sample", {"seed": -1}), 400, "'seed'")
        self.assertEqual(post("contains", {"space": "observation", "path": ["word"], "value": "red"})[2], {"member": True})
        self.assertEqual(post("sample", {"space": "action", "seed": 1})[2], post("sample", {"space": "action", "seed": 1})[2])
        self.assertServing()


def make_wrapped(env_id, wrappers, **kwargs):
    """gymnasium.make, then the wrappers of a create's "wrappers", locally."""
    env = gymnasium.make(env_id, **kwargs)
    for wrapper in wrappers:
        wrapper = {"name": wrapper} if isinstance(wrapper, str) else wrapper
        env = getattr(gymnasium.wrappers, wrapper["name"])(env, **wrapper.get("kwargs", {}))
    return env


class TestWrappers(SameAsLocal, ServerTestCase):
    STACK = [{"name": "FrameStackObservation", "kwargs": {"stack_size": 3}}, {"name": "TimeAwareObservation"}]

    def test_applied_in_order_in_the_instance_and_described(self):
        iid = self.create("CartPole-v1", wrappers=self.STACK)
        local = make_wrapped("CartPole-v1", self.STACK)
        info = self.get(f"/v1/envs/{iid}/observation_space/")[2]["info"]
        self.assertEqual(client.space_from_description(info), local.observation_space)
        spec = self.get(f"/v1/envs/{iid}/")[2]["spec"]
        self.assertEqual(spec["additional_wrappers"], [{"name": w.name, "entry_point": w.entry_point, "kwargs": w.kwargs}
                                                       for w in local.spec.additional_wrappers])
        self.assertEqual(spec["max_episode_steps"], 500)

    def test_remote_env_steps_like_the_wrapped_local_env(self):
        wrappers = [*self.STACK, {"name": "ClipReward", "kwargs": {"max_reward": 0.5}}]
        remote = client.RemoteEnv(self.base, "CartPole-v1", wrappers=wrappers, max_episode_steps=30)
        self.addCleanup(remote.close)
        local = make_wrapped("CartPole-v1", wrappers, max_episode_steps=30)
        self.assertEqual(remote.observation_space, local.observation_space)
        self.assertLess(self.assertStepsLikeLocal(remote, local, [1] * 40, seed=3), 40)  # through an episode's end
        again = gymnasium.make(remote.spec)  # the spec remakes the wrapped remote env
        self.addCleanup(again.close)
        self.assertEqual(again.observation_space, local.observation_space)
        stats = client.RemoteEnv(self.base, "CartPole-v1", wrappers=["RecordEpisodeStatistics"])
        self.addCleanup(stats.close)
        stats.reset(seed=0)
        while not (ended := stats.step(1))[2]:
            pass
        episode = ended[4]["episode"]  # its elapsed time differs from a local run's; its types do not
        self.assertEqual({k: type(v) for k, v in episode.items()}, {"r": float, "l": int, "t": float})

    def test_gymnasium_wrapper_specs_and_classes_are_taken(self):
        local = make_wrapped("CartPole-v1", self.STACK)
        remote = client.RemoteEnv(self.base, "CartPole-v1", wrappers=list(local.spec.additional_wrappers))
        self.addCleanup(remote.close)
        self.assertEqual(remote.observation_space, local.observation_space)
        flat = client.RemoteEnv(self.base, "GymHTTPTest/Dict-v0", wrappers=[gymnasium.wrappers.FlattenObservation])
        self.addCleanup(flat.close)
        self.assertEqual(flat.observation_space, spaces.flatten_space(DICT_OBS))

    def test_vectors_wrap_each_sub_env_as_make_vec_does(self):
        wrappers = [{"name": "TimeAwareObservation"}, {"name": "ClipReward", "kwargs": {"max_reward": 0.25}}]
        remote = client.RemoteVectorEnv(self.base, "CartPole-v1", 3, vectorization_mode="sync", wrappers=wrappers)
        self.addCleanup(remote.close)
        local = gymnasium.make_vec("CartPole-v1", 3, vectorization_mode="sync", wrappers=[
            gymnasium.wrappers.TimeAwareObservation, lambda env: gymnasium.wrappers.ClipReward(env, max_reward=0.25)])
        self.addCleanup(local.close)
        self.assertEqual(remote.single_observation_space, local.single_observation_space)
        self.assertStepsLikeLocal(remote, local, [np.array([t % 2, 1, 0]) for t in range(30)], seed=1)

    def test_refusals_name_the_wrapper_and_what_to_do(self):
        create = lambda wrappers, **kw: self.post("/v1/envs/", {"env_id": "CartPole-v1", "wrappers": wrappers, **kw})  # noqa: E731
        self.assertError(create("FlattenObservation"), 400, "'wrappers'", "list")
        self.assertError(create([{"name": "FrameStack"}]), 400, "wrappers[0]", "did you mean FrameStackObservation")
        self.assertError(create([{"name": "TimeAwareObservaton"}]), 400, "did you mean TimeAwareObservation")
        self.assertError(create(["TimeAwareObservation", {"entry_point": "os:system"}]), 400, "wrappers[1]", "--import os")
        self.assertError(create([{"entry_point": "gymnasium.wrappers:NoSuchWrapper"}]), 400, "NoSuchWrapper")
        self.assertError(create([{"entry_point": "no-colon"}]), 400, "'module:Class'")
        self.assertError(create([{"name": "ClipReward", "kwargs": {"no_such": 1}}]), 400, "ClipReward", "wrappers[0]", "no_such")
        self.assertError(create([{"name": "ClipReward", "kwargz": {}}]), 400, "kwargz", "did you mean 'kwargs'")
        self.assertError(create([{"name": "ClipReward", "kwargs": {"env": 1}}]), 400, "'env'")
        self.assertError(create([{"name": 3}]), 400, "wrappers[0].name")
        self.assertError(create([{"name": "RecordVideo", "kwargs": {"video_folder": "/tmp/x"}}]), 400, "monitor/start")
        self.assertError(create(["HumanRendering"]), 400, "dashboard")
        self.assertError(create(["TimeAwareObservation"], num_envs=2), 400, "vector entry point", '"vectorization_mode": "sync"')
        self.assertError(create(["TimeAwareObservation"] * 65), 400, "at most 64")
        self.assertEqual(self.client.env_list_all(), {})  # nothing was left made
        ok = self.create("CartPole-v1", wrappers=[{"entry_point": "gymnasium.wrappers.common:RecordEpisodeStatistics"}])
        self.assertIn(ok, self.client.env_list_all())
        self.assertServing()


class TestWrappersInThreads(TestWrappers):
    server_options = {"isolation": "thread"}


class TestSuites(SameAsLocal, ServerTestCase):
    """Atari, MuJoCo, MiniGrid, Box2D and Taxi through the server, step for
    step against the same env made locally."""

    @classmethod
    def setUpClass(cls):
        for suite in ("ale_py", "minigrid"):  # they register their envs on import; the server forks after that
            if importlib.util.find_spec(suite):
                module = importlib.import_module(suite)
                if suite == "ale_py":
                    gymnasium.register_envs(module)

    def pair(self, env_id, num_envs=0, wrappers=(), **kwargs):
        """The env through the server and made here (a sync vector of ``num_envs``)."""
        if num_envs:
            remote = client.RemoteVectorEnv(self.base, env_id, num_envs, vectorization_mode="sync", **kwargs)
            local = gymnasium.make_vec(env_id, num_envs, vectorization_mode="sync", **kwargs)
        else:
            remote = client.RemoteEnv(self.base, env_id, wrappers=list(wrappers), **kwargs)
            local = make_wrapped(env_id, wrappers, **kwargs)
        self.addCleanup(remote.close)
        self.addCleanup(local.close)
        return remote, local

    @needs("ale_py")
    def test_pong_raw(self):
        remote, local = self.pair("ALE/Pong-v5")
        self.assertEqual(remote.observation_space, local.observation_space)
        rng = np.random.default_rng(0)
        self.assertStepsLikeLocal(remote, local, rng.integers(0, 6, 60).tolist(), seed=4)
        info = self.get(f"/v1/envs/{remote.instance_id}/observation_space/?compact=true")[1]
        self.assertLess(int(info.getheader("Content-Length")), 1000)  # 605 KB when flattened, as old clients get it
        self.assertGreater(len(json.dumps(self.client.env_observation_space_info(remote.instance_id))), 600_000)

    @needs("ale_py")
    @needs("cv2")
    def test_pong_preprocessed_on_the_server(self):
        wrappers = [{"name": "AtariPreprocessing"}, {"name": "FrameStackObservation", "kwargs": {"stack_size": 4}}]
        remote, local = self.pair("ALE/Pong-v5", frameskip=1, wrappers=wrappers)
        self.assertEqual(remote.observation_space, spaces.Box(0, 255, (4, 84, 84), np.uint8))
        self.assertEqual(remote.observation_space, local.observation_space)
        rng = np.random.default_rng(1)
        self.assertStepsLikeLocal(remote, local, rng.integers(0, 6, 40).tolist(), seed=9)
        refused = self.post("/v1/envs/", {"env_id": "ALE/Pong-v5", "wrappers": ["AtariPreprocessing"]})
        self.assertError(refused, 400, "AtariPreprocessing", '"frameskip": 1')

    @needs("mujoco")
    def test_half_cheetah_renders_on_a_server_started_without_mujoco_gl(self):
        env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
        proc = subprocess.Popen([sys.executable, "gymhttp.py", "-p", "0"], cwd=HERE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(10), proc.stdout.close()))
        url = wait_for_line(proc).split(" serving on ")[1].split()[0].rstrip("/")
        self.assertRegex(wait_for_line(proc), r"MuJoCo renders with MUJOCO_GL=(egl|osmesa)")
        remote = client.RemoteEnv(url, "HalfCheetah-v5", render_mode="rgb_array")
        self.addCleanup(remote.close)
        local = gymnasium.make("HalfCheetah-v5", render_mode="rgb_array")  # here, MUJOCO_GL is the test server's pick
        self.addCleanup(local.close)
        actions = [np.full(6, (-1) ** t * 0.5, np.float32) for t in range(20)]
        self.assertStepsLikeLocal(remote, local, actions, seed=2)
        frame = remote.render()
        self.assertEqual((frame.dtype, frame.shape), (np.uint8, (480, 480, 3)))
        np.testing.assert_array_equal(frame, local.render())
        self.assertChecksLikeLocal(remote, local, skip_render_check=True)
        self.assertEqual(remote.metadata["render_modes"], ["rgb_array", "depth_array", "rgbd_tuple", "human"])
        depth = client.RemoteEnv(url, "HalfCheetah-v5", render_mode="depth_array")
        self.addCleanup(depth.close)
        depth.reset(seed=0)
        self.assertEqual((depth.render().dtype, depth.render().shape), (np.float32, (480, 480)))
        client.Client(url).shutdown_server()
        self.assertEqual(proc.wait(20), 0)

    @needs("minigrid")
    def test_minigrid_through_remote_env_and_check_env(self):
        remote, local = self.pair("MiniGrid-Empty-5x5-v0")
        self.assertEqual(type(remote.observation_space["mission"]).__name__, "RemoteSpace")
        self.assertChecksLikeLocal(remote, local)
        self.assertStepsLikeLocal(remote, local, [2, 2, 1, 2, 2, 0, 2], seed=1)
        vector, local_vector = self.pair("MiniGrid-Empty-5x5-v0", 2)
        self.assertStepsLikeLocal(vector, local_vector, [np.array([2, 1])] * 5, seed=1)

    @needs("Box2D")
    def test_lunar_lander(self):
        remote, local = self.pair("LunarLander-v3")
        rng = np.random.default_rng(2)
        self.assertStepsLikeLocal(remote, local, rng.integers(0, 4, 200).tolist(), seed=6)

    def test_taxi_info_keeps_its_types(self):
        remote, local = self.pair("Taxi-v4")
        self.assertStepsLikeLocal(remote, local, [0, 1, 2, 3, 4, 5], seed=0)
        _, _, _, _, info = remote.step(1)
        self.assertEqual((type(info["action_mask"]), info["action_mask"].dtype), (np.ndarray, np.int8))
        vector, local_vector = self.pair("Taxi-v4", 3)
        self.assertStepsLikeLocal(vector, local_vector, [np.array([0, 1, 2])] * 4, seed=0)
        iid = self.create("Taxi-v4", encoding="base64")  # over plain HTTP: an envelope
        mask = self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})[2]["info"]["action_mask"]
        self.assertEqual((mask["dtype"], mask["shape"]), ("int8", [6]))
        plain = self.create("Taxi-v4")
        self.assertEqual(self.post(f"/v1/envs/{plain}/reset/", {"seed": 0})[2]["info"]["action_mask"], [1, 1, 0, 0, 0, 0])


def png_pixels(data: bytes) -> np.ndarray:
    """An independent PNG reader for the tests: checks every CRC, 8-bit, unfiltered."""
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, chunks = 8, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        crc = int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big")
        assert zlib.crc32(tag + body) == crc, f"bad CRC in {tag}"
        chunks.append((tag, body))
        pos += 12 + length
    assert [t for t, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND" and pos == len(data)
    ihdr = chunks[0][1]
    width, height = int.from_bytes(ihdr[0:4], "big"), int.from_bytes(ihdr[4:8], "big")
    channels = {0: 1, 2: 3, 6: 4}[ihdr[9]]
    assert ihdr[8] == 8 and ihdr[12] == 0
    raw = zlib.decompress(b"".join(b for t, b in chunks if t == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, channels)


class TestPNG(unittest.TestCase):
    def test_frames_of_every_shape_round_trip(self):
        rng = np.random.default_rng(0)
        for frame in (rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), rng.integers(0, 256, (3, 9, 4), dtype=np.uint8),
                      rng.integers(0, 256, (4, 4), dtype=np.uint8), np.zeros((1, 1, 3), np.uint8)):
            with self.subTest(shape=frame.shape):
                data = gymhttp.encode_png(frame)
                pixels = png_pixels(data)
                np.testing.assert_array_equal(pixels.reshape(frame.shape), frame)
                np.testing.assert_array_equal(client.decode_png(data), frame)

    def test_float_frames_are_intensities_and_bad_shapes_refused(self):
        pixels = png_pixels(gymhttp.encode_png(np.array([[[0.0, 0.5, 1.0]]])))
        self.assertEqual(pixels.tolist(), [[[0, 127, 255]]])
        for bad in (np.zeros((2, 2, 2)), np.zeros(5), np.zeros((0, 3, 3))):
            with self.assertRaises(ValueError):
                gymhttp.encode_png(bad)


class TestWatching(ServerTestCase):
    def test_details_count_steps_episodes_and_returns(self):
        iid = self.create(seed=4)
        local = gymnasium.make("CartPole-v1")
        local.reset(seed=4)
        returns, total, actions = [], 0.0, [0, 1, 1, 0, 0, 1, 1, 1, 0, 1] * 20
        for t, action in enumerate(actions):
            _, reward, terminated, truncated, _ = local.step(action)
            self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": action})[0], 200)
            total += reward
            if terminated or truncated:
                returns.append(total)
                total = 0.0
                local.reset()
                self.post(f"/v1/envs/{iid}/reset/")
            if len(returns) == 3:
                break
        status, resp, details = self.get(f"/v1/envs/{iid}/")
        self.assertEqual(status, 200, details)
        self.assertEqual((details["instance_id"], details["env_id"], details["num_envs"]), (iid, "CartPole-v1", 1))
        self.assertEqual((details["steps"], details["env_steps"], details["episodes"]), (t + 1, t + 1, 3))
        self.assertEqual([e["return"] for e in details["recent_episodes"]], returns)
        self.assertEqual(sum(e["length"] for e in details["recent_episodes"]), t + 1)
        self.assertEqual(details["last_return"], returns[-1])
        self.assertLessEqual(details["created"], details["last_activity"])
        self.assertLessEqual(details["last_activity"], details["now"])
        self.assertEqual(details["spec"]["max_episode_steps"], 500)
        self.assertEqual(details["metadata"]["render_modes"], ["human", "rgb_array"])
        self.assertIsNone(details["render_mode"])
        self.assertIs(details["broken"], None)

    def test_watching_is_not_activity(self):
        iid = self.create(kwargs={"render_mode": "rgb_array"})
        self.post(f"/v1/envs/{iid}/step/", {"action": 0})
        before = self.get(f"/v1/envs/{iid}/")[2]["last_activity"]
        time.sleep(0.05)
        self.assertEqual(self.get(f"/v1/envs/{iid}/render/")[0], 200)
        self.assertEqual(self.get(f"/v1/envs/{iid}/")[2]["last_activity"], before)
        self.post(f"/v1/envs/{iid}/step/", {"action": 0})
        self.assertGreater(self.get(f"/v1/envs/{iid}/")[2]["last_activity"], before)

    def test_vector_details_count_env_steps(self):
        iid = self.create(num_envs=4)
        for _ in range(30):
            self.post(f"/v1/envs/{iid}/step/", {"action": [1, 1, 1, 1]})
        details = self.get(f"/v1/envs/{iid}/")[2]
        self.assertEqual((details["steps"], details["env_steps"], details["num_envs"]), (30, 120, 4))
        self.assertGreaterEqual(details["episodes"], 4)  # always pushing right ends each within 30 steps
        self.assertEqual(details["metadata"]["autoreset_mode"], "NextStep")

    def test_details_errors(self):
        self.assertError(self.get("/v1/envs/nope/"), 400, "nope")
        iid = self.create()
        status, resp, _ = self.post(f"/v1/envs/{iid}/")
        self.assertEqual(status, 405)
        self.assertEqual(resp.getheader("Allow"), "GET, HEAD")

    def test_registry_lists_makeable_ids(self):
        status, _, reply = self.get("/v1/registry/")
        self.assertEqual(status, 200)
        by_id = {e["id"]: e for e in reply["envs"]}
        self.assertEqual(set(by_id), set(gymnasium.registry))
        self.assertEqual(by_id["CartPole-v1"], {
            "id": "CartPole-v1", "entry_point": "gymnasium.envs.classic_control.cartpole:CartPoleEnv",
            "max_episode_steps": 500, "reward_threshold": 475.0, "nondeterministic": False, "vector_entry_point": True,
        })
        self.assertIn(":", by_id["GymHTTPTest/Dict-v0"]["entry_point"])  # a callable, named

    def test_frames_rendered_at_once_are_exact(self):
        # pygame is not thread-safe: without the server's render lock, about 1
        # frame in 50 drawn while others draw has wrong pixels.
        ids = []
        for seed in range(4):
            iid = self.create(seed=seed, kwargs={"render_mode": "rgb_array"})
            for action in (1, 1, 0, seed & 1):
                self.client.step(iid, action)
            ids.append(iid)
        expected = {iid: self.client.env_render(iid) for iid in ids}
        wrong = []

        def watch(iid):
            with client.Client(self.base) as c:
                for _ in range(60):
                    if c.env_render(iid) != expected[iid]:
                        wrong.append(iid)

        threads = [threading.Thread(target=watch, args=(iid,)) for iid in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(wrong, [])

    def test_render_png_over_raw_http(self):
        iid = self.create(seed=2, kwargs={"render_mode": "rgb_array"})
        local = gymnasium.make("CartPole-v1", render_mode="rgb_array")
        local.reset(seed=2)
        for action in (1, 1, 0):
            self.post(f"/v1/envs/{iid}/step/", {"action": action})
            local.step(action)
        expected = local.render()  # now, not while the server draws for the HEAD: pygame is not thread-safe
        head = f"GET /v1/envs/{iid}/render/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(head + head.replace(b"GET", b"HEAD"))
            f = sock.makefile("rb")
            status, headers, body = read_response(f)
            self.assertEqual((status, headers["content-type"]), (200, "image/png"))
            self.assertEqual(int(headers["content-length"]), len(body))
            np.testing.assert_array_equal(png_pixels(body), expected)
            # HEAD on the same connection: the headers, no body
            line = f.readline()
            self.assertIn(b" 200 ", line)
            rest = {}
            while (h := f.readline()) not in (b"\r\n", b""):
                k, _, v = h.decode().partition(":")
                rest[k.lower()] = v.strip()
            self.assertEqual(rest["content-length"], str(len(body)))
            sock.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                sock.recv(1)
            f.close()

    def test_render_ansi_and_test_env_frames(self):
        iid = self.create("FrozenLake-v1", seed=0, kwargs={"render_mode": "ansi"})
        self.post(f"/v1/envs/{iid}/step/", {"action": 1})
        local = gymnasium.make("FrozenLake-v1", render_mode="ansi")
        local.reset(seed=0)
        local.step(1)
        status, resp, body = self.get(f"/v1/envs/{iid}/render")
        self.assertEqual((status, resp.getheader("Content-Type")), (200, "text/plain; charset=utf-8"))
        self.assertEqual(body.decode(), local.render())
        tid = self.create("GymHTTPTest/Image-v0", kwargs={"render_mode": "rgb_array"})
        for t in (1, 2):
            self.post(f"/v1/envs/{tid}/step/", {"action": 0})
            self.assertEqual(png_pixels(self.get(f"/v1/envs/{tid}/render/")[2]).tolist(), np.full((4, 6, 3), t).tolist())

    def test_render_refusals_say_what_to_do(self):
        plain = self.create()
        self.assertError(self.get(f"/v1/envs/{plain}/render/"), 400, "without a render mode", '"render_mode": "rgb_array"')
        fresh = self.create(kwargs={"render_mode": "rgb_array"})
        self.assertError(self.get(f"/v1/envs/{fresh}/render/"), 409, "reset")
        self.post(f"/v1/envs/{fresh}/reset/")
        self.assertError(self.get(f"/v1/envs/{fresh}/render/?index=0"), 400, "index", "drop it")
        self.assertError(self.get("/v1/envs/nope/render/"), 400, "nope")
        self.assertServing()

    def test_other_render_modes_send_their_frames_as_arrays(self):
        listed = self.create(kwargs={"render_mode": "rgb_array_list"})
        local = gymnasium.make("CartPole-v1", render_mode="rgb_array_list")
        self.post(f"/v1/envs/{listed}/reset/", {"seed": 4})
        local.reset(seed=4)
        for action in (0, 1):
            self.post(f"/v1/envs/{listed}/step/", {"action": action})
            local.step(action)
        status, resp, reply = self.get(f"/v1/envs/{listed}/render/")
        self.assertEqual((status, resp.getheader("Content-Type")), (200, "application/json"))
        frames = client.decode_envelopes(reply["frame"])
        want = local.render()
        self.assertEqual(len(frames), len(want))
        for got, frame in zip(frames, want):
            self.assertEqual(got.dtype, np.uint8)
            np.testing.assert_array_equal(got, frame)

    def test_vector_render_one_sub_env(self):
        for mode in ("sync", "vector_entry_point"):
            with self.subTest(mode):
                iid = self.create(num_envs=3, vectorization_mode=mode, seed=1, kwargs={"render_mode": "rgb_array"})
                self.assertEqual(self.post(f"/v1/envs/{iid}/reset/", {"seed": 7})[0], 200)
                self.assertError(self.get(f"/v1/envs/{iid}/render/"), 400, "?index=k", "0 to 2")
                for bad in ("3", "-1", "x"):
                    self.assertError(self.get(f"/v1/envs/{iid}/render/?index={bad}"), 400, "'index'", bad)
                local = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode=mode, render_mode="rgb_array")
                local.reset(seed=7)
                for action in ([0, 1, 1], [1, 1, 0]):
                    self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": action})[0], 200)
                    local.step(np.array(action))
                status, resp, body = self.get(f"/v1/envs/{iid}/render/?index=2")
                self.assertEqual(status, 200)
                np.testing.assert_array_equal(png_pixels(body), local.render()[2])

    def test_concurrent_first_renders(self):
        ids = [self.create(env_id, kwargs={"render_mode": "rgb_array"}) for env_id in
               ("CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0")]
        for iid in ids:
            self.post(f"/v1/envs/{iid}/reset/")
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(self.get(f"/v1/envs/{i}/render/")[0])) for i in ids]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        self.assertEqual(results, [200] * 4)


# ---------------------------------------------------------------------------
# The OpenAPI document
# ---------------------------------------------------------------------------


class SchemaError(AssertionError):
    pass


def validate(value, schema, doc, where="$"):
    """Enough of JSON Schema for the document: $ref, type, enum, required,
    properties, additionalProperties, items, oneOf, minimum, maximum."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return validate(value, doc["components"]["schemas"][name], doc, where)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        kinds = {
            "object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
            "boolean": isinstance(value, bool), "null": value is None,
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        }
        if not any(kinds[t] for t in types):
            raise SchemaError(f"{where}: {value!r:.80} is not {types}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        raise SchemaError(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and isinstance(value, (int, float)) and value > schema["maximum"]:
        raise SchemaError(f"{where}: {value} > {schema['maximum']}")
    if "oneOf" in schema:
        matches = 0
        for option in schema["oneOf"]:
            try:
                validate(value, option, doc, where)
                matches += 1
            except SchemaError:
                pass
        if matches != 1:
            raise SchemaError(f"{where}: {value!r:.80} matches {matches} of oneOf")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaError(f"{where}: '{name}' missing")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], doc, f"{where}.{name}")
            elif extra is False:
                raise SchemaError(f"{where}: unexpected '{name}'")
            elif isinstance(extra, dict):
                validate(item, extra, doc, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{where}[{i}]")


class TestOpenAPI(ServerTestCase):
    server_options = {"token": "s3cret"}

    def setUp(self):
        super().setUp()
        self.client = client.Client(self.base, token="s3cret")
        status, resp, self.doc = self.request("GET", "/v1/openapi.json", headers={"Authorization": ""})
        self.assertEqual((status, resp.getheader("Content-Type")), (200, "application/json"))

    def operation(self, method, pattern):
        for path, operations in self.doc["paths"].items():
            if path.strip("/") == pattern.strip("/"):
                return operations[method.lower()]
        raise AssertionError(f"{method} {pattern} is not documented")

    def test_documents_exactly_the_route_table(self):
        documented = {(m.upper(), "/" + p.strip("/")) for p, ops in self.doc["paths"].items() for m in ops}
        routes = {(m, "/" + p.strip("/")) for m, p, _ in gymhttp.ROUTES}
        self.assertEqual(documented - routes, set(), "documented but not routed")
        self.assertEqual(routes - documented, set(), "routed but not documented")

    def test_document_is_well_formed(self):
        import re

        doc = self.doc
        self.assertEqual(doc["openapi"], "3.1.0")
        self.assertEqual(doc["info"]["version"], gymhttp.__version__)
        ids = []
        for path, operations in doc["paths"].items():
            declared = set(re.findall(r"{(\w+)}", path))
            for method, op in operations.items():
                ids.append(op["operationId"])
                params = {p["name"] for p in op.get("parameters", ()) if p["in"] == "path"}
                self.assertEqual(params, declared, f"{method} {path}")
                self.assertTrue(any(code.startswith("2") for code in op["responses"]) or "410" in op["responses"])
                self.assertEqual(op["responses"]["4XX"]["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/Error"})
        self.assertEqual(len(ids), len(set(ids)))
        refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc))
        self.assertTrue(refs)
        for name in refs:
            self.assertIn(name, doc["components"]["schemas"])
        self.assertEqual(set(doc["components"]["schemas"]["ArrayEnvelope"]["required"]), {"__ndarray__", "dtype", "shape"})

    def check(self, method, pattern, reply, status=200):
        responses = self.operation(method, pattern)["responses"]
        schema = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
        validate(reply, schema["content"]["application/json"]["schema"], self.doc, f"{method} {pattern}")

    def test_real_replies_follow_their_schemas(self):
        c = self.client
        iid = c._post_request("/v1/envs/", {"env_id": "CartPole-v1", "seed": 0})
        self.check("POST", "/v1/envs", iid)
        iid = iid["instance_id"]
        self.check("GET", "/v1/envs", c._get_request("/v1/envs/"))
        self.check("POST", "/v1/envs/{instance_id}/reset", c._post_request(f"/v1/envs/{iid}/reset/", {"seed": 0}))
        for _ in range(30):  # through an episode's end, so that the details hold one
            step = c._post_request(f"/v1/envs/{iid}/step/", {"action": 1})
            self.check("POST", "/v1/envs/{instance_id}/step", step)
            if step["done"]:
                self.check("POST", "/v1/envs/{instance_id}/reset", c._post_request(f"/v1/envs/{iid}/reset/", {}))
        self.check("GET", "/v1/envs/{instance_id}", c._get_request(f"/v1/envs/{iid}/"))
        self.check("GET", "/v1/envs/{instance_id}/action_space", c._get_request(f"/v1/envs/{iid}/action_space/"))
        self.check("GET", "/v1/envs/{instance_id}/observation_space", c._get_request(f"/v1/envs/{iid}/observation_space/"))
        self.check("GET", "/v1/envs/{instance_id}/action_space/sample", c._get_request(f"/v1/envs/{iid}/action_space/sample"))
        self.check("GET", "/v1/envs/{instance_id}/action_space/contains/{x}", c._get_request(f"/v1/envs/{iid}/action_space/contains/1"))
        self.check("POST", "/v1/envs/{instance_id}/observation_space/contains",
                   c._post_request(f"/v1/envs/{iid}/observation_space/contains", {"name": "Box"}))
        self.check("GET", "/v1/registry", c._get_request("/v1/registry/"))
        # vector + base64: envelopes wherever the schema allows them
        vid = c.env_create("CartPole-v1", num_envs=4, encoding="base64")
        raw = json.loads(c._request("POST", f"/v1/envs/{vid}/step/", {"action": [1, 0, 1, 0]}, raw_reply=True))
        self.assertIn("__ndarray__", raw["reward"])
        self.check("POST", "/v1/envs/{instance_id}/step", raw)
        self.check("GET", "/v1/envs/{instance_id}/action_space", c._get_request(f"/v1/envs/{vid}/action_space/"))
        did = c.env_create("GymHTTPTest/Mixed-v0")
        self.check("GET", "/v1/envs/{instance_id}/observation_space", c._get_request(f"/v1/envs/{did}/observation_space/"))
        self.check("POST", "/v1/envs/{instance_id}/reset", c._post_request(f"/v1/envs/{did}/reset/", None))
        # errors
        for method, path, pattern, body in (("POST", "/v1/envs/", "/v1/envs", {"env_id": 5}),
                                            ("POST", f"/v1/envs/{iid}/step/", "/v1/envs/{instance_id}/step", {"action": 9}),
                                            ("POST", "/v1/upload/", "/v1/upload", {"training_dir": "/tmp", "api_key": "k"})):
            with self.assertRaises(client.ServerError) as caught:
                c._request(method, path, body)
            status = caught.exception.status_code
            self.check(method, pattern, {"message": caught.exception.message}, status)

    def test_validator_can_fail(self):
        with self.assertRaises(SchemaError):
            self.check("POST", "/v1/envs/{instance_id}/step", {"observation": [0], "reward": 1.0, "done": "no",
                                                             "terminated": False, "truncated": False, "info": {}})
        with self.assertRaises(SchemaError):
            self.check("GET", "/v1/envs/{instance_id}", {"instance_id": "x"})

    def test_only_static_documents_skip_the_token(self):
        self.assertEqual(self.request("GET", "/", headers={"Authorization": ""})[0], 200)
        for path in ("/v1/envs/", "/v1/registry/", "/v1/envs/x/", "/v1/envs/x/render/"):
            self.assertError(self.request("GET", path, headers={"Authorization": ""}), 401, "token")


# ---------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------

# Schema-valid requests that the server may still refuse with a 400: for
# what only its state decides (which instances and envs exist, what an env's
# spaces take, what is on its disk), which no schema can say.
SCHEMATHESIS_HOOKS = r"""
import json, re
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

STATE = re.compile("(?s)" + "|".join([
    r"Instance_id .* unknown", r"is not registered", r"Attempted to look up malformed environment ID", r"Cannot make ",
    r"not in the action space", r"vector instances", r"leads nowhere", r"in the path is not JSON",
    r"refused the env", r"has no wrapper", r"Monitor directory", r"Cannot use monitor directory", r"already monitored",
    r"Monitoring is for single-env", r"render mode", r"needs (a package|packages)", r"is vectorized by its vector entry point",
    r"would import the module", r"nests arrays and objects", r"Recording video needs",
]))


@schemathesis.check
def positive_data_acceptance_but_state(ctx, response, case):
    if response.status_code == 410 and case.path.rstrip("/") == "/v1/upload":
        return None  # what the schema says it answers: the scoreboard is gone
    if response.status_code == 400:
        try:
            message = json.loads(response.content)["message"]
        except Exception:
            message = ""
        if STATE.search(message):
            return None
    return positive_data_acceptance(ctx, response, case)
"""


@unittest.skipUnless(importlib.util.find_spec("schemathesis"), "schemathesis is not installed "
                     "(pip install -r .ci/requirements-test.txt)")
class TestOpenAPIContract(ServerTestCase):
    """Schemathesis against the server's own OpenAPI document, every check:
    no server error, every response as documented, every request the schema
    forbids refused, and every one it allows taken (but for state, above)."""

    server_options = {"max_envs": 32}  # it creates hundreds; past the limit it gets the documented 429
    examples = 15  # a case per operation and phase, at most; more found nothing more in 4 runs of 100

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="gymhttp-schemathesis-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        # Its monitors write where it says: inside a root of their own, not wherever the tests run.
        self.server_options = {**self.server_options, "monitor_root": self.folder}
        super().setUp()

    def test_no_server_errors_and_no_schema_mismatches(self):
        folder = self.folder
        with open(os.path.join(folder, "gymhttp_st_hooks.py"), "w") as f:
            f.write(SCHEMATHESIS_HOOKS)
        token = self.server_options.get("token")
        env = dict(os.environ, SCHEMATHESIS_HOOKS="gymhttp_st_hooks", PYTHONPATH=folder, NO_COLOR="1")
        out = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{self.base}/v1/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance", "--exclude-path", "/v1/shutdown/",  # it would stop the server
             "--max-examples", str(self.examples), "--seed", "1", *(["-H", f"Authorization: Bearer {token}"] if token else [])],
            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(out.returncode, 0, out.stdout[-6000:] + out.stderr[-2000:])
        self.assertRegex(out.stdout, r"\d+ generated, \d+ passed")
        self.assertServing()


class TestOpenAPIContractWithToken(TestOpenAPIContract):
    server_options = {"max_envs": 32, "token": "contract-token"}
    examples = 5  # what the token changes is the edge, not the routes


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class TestDashboardPage(ServerTestCase):
    def test_served_self_contained(self):
        status, resp, body = self.get("/")
        self.assertEqual((status, resp.getheader("Content-Type")), (200, "text/html; charset=utf-8"))
        self.assertEqual(int(resp.getheader("Content-Length")), len(body))
        csp = resp.getheader("Content-Security-Policy")
        self.assertIn("default-src 'none'", csp)
        self.assertIn("connect-src 'self'", csp)
        page = body.decode()
        for outside in ("http://", "https://", "//cdn", "@import", "<link", "src=\"/"):
            self.assertNotIn(outside, page)
        for route in ("/v1/envs/", "/render/"):
            self.assertIn(route, page)
        self.assertIn(f"v{gymhttp.__version__}", page)
        status, resp, body = self.request("HEAD", "/")
        self.assertEqual((status, body), (200, b""))


@unittest.skipUnless(CHROMIUM, "chromium is not installed (apt-get install -y chromium); .ci/run installs it")
class TestDashboardInBrowser(ServerTestCase):
    """The page in real headless Chromium: what the DOM shows after it ran."""

    def dump(self, url, budget=3000):
        profile = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, profile, True)
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             f"--user-data-dir={profile}", "--window-size=1280,900", f"--virtual-time-budget={budget}", "--dump-dom", url],
            capture_output=True, text=True, timeout=90,
        )
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        return out.stdout.split("<template")[0]  # what the page shows, not its template and script

    def cards(self, dom):
        import re

        return {m.group(1): m.group(0) for m in re.finditer(r'<article class="card" data-instance="(\w+)">.*?</article>', dom, re.S)}

    def test_empty_state(self):
        dom = self.dump(self.base + "/", budget=1500)
        self.assertIn("<h2>No instances yet</h2>", dom)
        self.assertIn(f"curl -X POST {self.base}/v1/envs/", dom)
        self.assertIn('<span class="dot ok" id="dot"></span><span id="status-text">Live', dom)

    def test_instances_returns_and_live_frames(self):
        rgb = self.create(seed=0, kwargs={"render_mode": "rgb_array"})
        returns = []
        for _ in range(3):
            self.post(f"/v1/envs/{rgb}/reset/")
            total, done = 0.0, False
            while not done:
                reply = self.post(f"/v1/envs/{rgb}/step/", {"action": 1})[2]
                total += reply["reward"]
                done = reply["done"]
            returns.append(total)
        text = self.create("FrozenLake-v1", seed=0, kwargs={"render_mode": "ansi"})
        self.post(f"/v1/envs/{text}/step/", {"action": 2})
        plain = self.create()
        vector = self.create(num_envs=4)
        for _ in range(5):
            self.post(f"/v1/envs/{vector}/step/", {"action": [0, 1, 0, 1]})
        dom = self.dump(self.base + "/")
        cards = self.cards(dom)
        self.assertEqual(list(cards), [rgb, text, plain, vector])  # oldest first
        card = cards[rgb]
        steps = int(sum(returns))
        self.assertIn(f'<b class="steps">{steps}</b>', card)
        self.assertIn('<b class="episodes">3</b>', card)
        self.assertIn(f'<b class="last">{int(returns[-1])}</b>', card)  # a whole return shows whole: "10", not "10.00"
        self.assertIn('data-loaded="600x400"', card)  # the PNG arrived and decoded
        self.assertIn('data-points="3"', card)  # the returns plot has the three episodes
        self.assertIn("SFFF", cards[text])
        # FrozenLake marks the agent only by colour: a red background, kept as a styled span (text, never markup).
        self.assertRegex(cards[text], r'<span style="background-color: rgb\(229, 83, 75\);">[SFHG]</span>')
        self.assertNotIn("\x1b", cards[text])
        self.assertIn("No live frame", cards[plain])
        self.assertIn("×4", cards[vector])
        self.assertIn('<b class="steps">20</b>', cards[vector])
        self.assertIn('<b id="t-instances">4</b>', dom)
        self.assertNotIn("<h2>No instances yet</h2>", dom)
        pid = self.get(f"/v1/envs/{plain}/")[2]["pid"]  # memory per instance: its process's
        self.assertRegex(cards[plain], rf'<span class="mem" title="resident memory of its process, pid {pid}">[\d.,]+ MiB</span>')

    def test_asks_for_the_token(self):
        self.server.token = "letmein"  # the same server, now guarded
        self.server_options = {"token": "letmein"}
        iid = self.create()
        self.assertIn('<form id="login"><strong>This server needs its token', self.dump(self.base + "/", budget=1500))
        self.assertNotIn(iid, self.dump(self.base + "/", budget=1500))
        self.assertIn(iid, self.cards(self.dump(self.base + "/#token=letmein")))


CROSS_SITE_PAGE = """<!doctype html><html><body><p id="out">running</p><script>
(async () => {
  const base = "http://127.0.0.1:%d", token = "%s", out = [];
  const post = (path, init) => fetch(base + path, {method: "POST", ...init});
  const headers = {"Content-Type": "application/json", ...(token ? {"Authorization": "Bearer " + token} : {})};
  try {
    const reply = await post("/v1/envs/", {headers, body: '{"env_id": "CartPole-v1"}'});
    out.push("cors " + reply.status + " " + await reply.text());
  } catch (e) { out.push("cors refused"); }
  try { await post("/v1/envs/", {mode: "no-cors", body: '{"env_id": "CartPole-v1"}'}); out.push("create sent"); }
  catch (e) { out.push("create failed: " + e); }
  try { await post("/v1/shutdown/", {mode: "no-cors"}); out.push("shutdown sent"); }
  catch (e) { out.push("shutdown failed: " + e); }
  document.getElementById("out").textContent = out.join("; ");
})();
</script></body></html>"""


@unittest.skipUnless(CHROMIUM, "chromium is not installed (apt-get install -y chromium); .ci/run installs it")
class TestCrossSiteInBrowser(unittest.TestCase):
    """A page on another port, in real Chromium, against the server."""

    def run_page(self, **options) -> tuple[str, gymhttp.GymHTTPServer]:
        server = gymhttp.make_server("127.0.0.1", 0, **options)
        self.addCleanup(server.server_close)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(server.shutdown)
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        with open(os.path.join(folder, "page.html"), "w") as f:
            f.write(CROSS_SITE_PAGE % (server.server_address[1], options.get("token", "")))

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=folder, **kw)

            def log_message(self, *a):
                pass

        self.page_origin = serve_in_thread(self, Quiet)
        profile = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, profile, True)
        out = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom", self.page_origin + "/page.html"],
            capture_output=True, text=True, timeout=90,
        )
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        return out.stdout, server

    def test_another_sites_page_cannot_create_or_shut_down(self):
        dom, server = self.run_page()
        self.assertIn("create sent", dom)  # the browser did send them: the server refused them
        self.assertIn("shutdown sent", dom)
        self.assertIn("cors refused", dom)
        self.assertEqual(server.envs.all(), [])
        self.assertFalse(server._shutdown_started.is_set())
        with client.Client(f"http://127.0.0.1:{server.server_address[1]}") as c:
            self.assertEqual(c.env_list_all(), {})

    def test_an_allowed_page_uses_the_api_with_cors_and_the_token(self):
        # The page's port is only known once its server is up: allow every origin here.
        dom, server = self.run_page(allow_origins=("*",), token="page-token")
        self.assertRegex(dom, r'cors 200 \{"instance_id":"\w+"\}')  # preflighted, then sent with the token
        self.assertEqual(len(server.envs.all()), 1)  # the no-cors create could not carry the token
        self.assertFalse(server._shutdown_started.is_set())  # nor could its shutdown

    def test_an_allowed_origin_needs_a_token(self):
        with self.assertRaises(ValueError) as caught:
            gymhttp.make_server("127.0.0.1", 0, allow_origins=("*",))
        self.assertIn("--token", str(caught.exception))


# ---------------------------------------------------------------------------
# A cluster: two nodes behind nginx
# ---------------------------------------------------------------------------

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.path.exists(p)), None)


@unittest.skipUnless(NGINX, "nginx is not installed (apt-get install -y nginx-light); .ci/run installs it")
class TestCluster(unittest.TestCase):
    """Two nodes and nginx on loopback ports, started the way docs/cluster.md says."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="gymhttp-cluster-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        os.chmod(self.dir, 0o755)  # nginx's workers may run as another user when the tests run as root
        ports = [free_port() for _ in range(3)]
        self.gateway = f"http://127.0.0.1:{ports[0]}"
        self.nodes = {}
        for name, port, peer in (("a", ports[1], ports[2]), ("b", ports[2], ports[1])):
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "gymhttp.py"), "-p", str(port), "--node-id", name,
                 "--peers", f"http://127.0.0.1:{peer}"],
                cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.addCleanup(lambda p=proc: (p.poll() is None and p.kill(), p.wait(10), p.stdout.close()))
            wait_for_line(proc)
            self.nodes[name] = (proc, port)
        conf = os.path.join(self.dir, "gymhttp.conf")
        with open(conf, "w") as f:
            out = subprocess.run([sys.executable, os.path.join(HERE, "deploy", "nginx_conf.py"), "--listen", f"127.0.0.1:{ports[0]}",
                                  "--node", f"a=127.0.0.1:{ports[1]}", "--node", f"b=127.0.0.1:{ports[2]}"],
                                 stdout=f, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        prefix = os.path.join(self.dir, "run")
        os.mkdir(prefix)
        os.chmod(prefix, 0o755)
        nginx = subprocess.Popen([NGINX, "-p", prefix, "-c", conf, "-e", os.path.join(prefix, "error.log"), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (nginx.terminate(), nginx.wait(10), nginx.stderr.close()))
        deadline = time.monotonic() + 10
        while True:
            try:
                with client.Client(self.gateway) as c:
                    c.env_list_all()
                break
            except (ConnectionError, client.ServerError):
                if time.monotonic() > deadline or nginx.poll() is not None:
                    self.fail(f"nginx did not come up: {nginx.stderr.read() if nginx.poll() is not None else ''}")
                time.sleep(0.05)
        self.prefix = prefix
        self.c = client.Client(self.gateway)
        self.addCleanup(self.c.close)

    def test_every_route_on_both_nodes_through_the_gateway(self):
        ids = [self.c.env_create("CartPole-v1", seed=k, kwargs={"render_mode": "rgb_array"}) for k in range(8)]
        self.assertEqual({i.split("-")[0] for i in ids}, {"a", "b"})  # creates spread over both
        self.assertEqual(set(self.c.env_list_all()), set(ids))  # the list is whole, whichever node answers
        for node in ("a", "b"):
            iid = next(i for i in ids if i.startswith(node + "-"))
            with self.subTest(node=node):
                local = gymnasium.make("CartPole-v1", render_mode="rgb_array")
                obs, _ = self.c.reset(iid, seed=9)
                np.testing.assert_allclose(obs, local.reset(seed=9)[0], rtol=1e-6)
                for action in (1, 0, 1):
                    obs = self.c.step(iid, action)[0]
                    np.testing.assert_allclose(obs, local.step(action)[0], rtol=1e-6)
                self.assertEqual(self.c.env_action_space_info(iid)["n"], 2)
                self.assertIn(self.c.env_action_space_sample(iid), (0, 1))
                self.assertTrue(self.c.env_action_space_contains(iid, 1))
                self.assertEqual(self.c.env_observation_space_info(iid)["shape"], [4])
                self.assertTrue(self.c.env_observation_space_contains(iid, {"name": "Box"}))
                monitor = os.path.join(self.dir, f"mon-{node}")
                self.c.env_monitor_start(iid, monitor, force=True)
                self.c.env_monitor_close(iid)
                self.assertTrue([f for f in os.listdir(monitor) if f.endswith(".stats.json")])
                details = self.c.env_details(iid)
                self.assertEqual((details["instance_id"], details["steps"]), (iid, 3))
                self.assertEqual(png_pixels(self.c.env_render(iid)).shape, (400, 600, 3))
                self.c.env_close(iid)
                self.assertNotIn(iid, self.c.env_list_all())
        self.assertEqual(self.c.openapi()["openapi"], "3.1.0")
        self.assertTrue(self.c.registry())

    def test_the_original_v1_flow(self):
        iid = self.c.env_create("CartPole-v1")
        self.assertIn(iid, self.c.env_list_all())
        observation = self.c.env_reset(iid)
        self.assertEqual(len(observation), 4)
        observation, reward, done, info = self.c.env_step(iid, self.c.env_action_space_sample(iid), render=False)
        self.assertEqual((len(observation), reward, info), (4, 1.0, {}))
        self.assertEqual(self.c.env_observation_space_info(iid)["name"], "Box")
        monitor = os.path.join(self.dir, "v1")
        self.c.env_monitor_start(iid, monitor, force=True)
        self.c.env_monitor_close(iid)
        self.c.env_close(iid)
        self.assertEqual(self.c.env_list_all(), {})

    def test_a_node_killed_answers_json_and_the_other_goes_on(self):
        ids = [self.c.env_create("CartPole-v1", seed=k) for k in range(8)]
        dead = {i for i in ids if i.startswith("b-")}
        alive = [i for i in ids if i.startswith("a-")]
        self.assertTrue(dead and alive)
        proc, port = self.nodes["b"]
        proc.kill()
        proc.wait(10)
        for iid in dead:
            status, resp, reply = http_json(self.gateway, "POST", f"/v1/envs/{iid}/step/", {"action": 1})
            self.assertEqual(status, 502)
            self.assertEqual(resp.getheader("Content-Type"), "application/json")
            self.assertIn(f"Node b (127.0.0.1:{port}) does not answer", reply["message"])
        for iid in alive:
            self.c.reset(iid, seed=1)
            self.assertEqual(self.c.step(iid, 1)[1], 1.0)
        new = [self.c.env_create("CartPole-v1") for _ in range(4)]  # creates go on, to the node that answers
        self.assertTrue(all(i.startswith("a-") for i in new))
        status, resp, reply = http_json(self.gateway, "GET", "/v1/envs/")
        self.assertEqual(status, 200)
        self.assertEqual(set(reply["all_envs"]), set(alive + new))
        self.assertEqual(reply["missing_peers"], [f"http://127.0.0.1:{port}"])
        self.assertEqual(resp.getheader("Gymhttp-Missing-Peers"), f"http://127.0.0.1:{port}")

    def test_it_writes_only_under_its_prefix_and_sets_no_daemon(self):
        with open(os.path.join(self.dir, "gymhttp.conf")) as f:
            text = f.read()
        self.assertNotRegex(text, r"(?m)^\s*daemon\b")
        self.assertNotRegex(text, r"(?m)^\s*user\b")
        paths = re.findall(r"(?m)^\s*(?:pid|error_log|access_log|\w+_temp_path)\s+(\S+?);", text)
        self.assertTrue(paths)
        self.assertFalse([p for p in paths if p.startswith("/")])  # all relative to the prefix
        self.assertIn("gymhttp-nginx.pid", os.listdir(self.prefix))


def http_json(base: str, method: str, path: str, body=None):
    """One request with http.client: (status, response, decoded JSON)."""
    parts = base.split("//")[1]
    conn = http.client.HTTPConnection(parts, timeout=10)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        resp = conn.getresponse()
        return resp.status, resp, strict_loads(resp.read())
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# README and docs/: their examples run, their links resolve
# ---------------------------------------------------------------------------

DOC_PAGES = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(HERE, "docs")) if f.endswith(".md"))


def read_page(page: str) -> str:
    with open(os.path.join(HERE, page), encoding="utf-8") as f:
        return f.read()


def doc_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of every ```sh block that calls curl
    or example_agent.py, in page order, shutdown last.  A command's output is
    the "# " lines right under it; a command may go on over lines ending in a
    backslash."""
    import re

    blocks = [m.group(1) for m in re.finditer(r"```sh\n(.*?)```", text, re.S)
              if re.search(r"^curl |\$\(curl |^python example_agent\.py ", m.group(1), re.M)]
    blocks.sort(key=lambda b: "/v1/shutdown/" in b)
    commands: list[tuple[str, list[str]]] = []
    for block in blocks:
        pending = ""
        for line in block.splitlines():
            if line.startswith("#") and not pending:
                if commands:
                    commands[-1][1].append(line[1:].strip())
                continue
            pending += line[:-1] + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                commands.append((pending.strip(), []))
                pending = ""
    return commands


DECIMAL = r"-?\d+\.\d+(?:e[-+]?\d+)?"


def doc_pattern(expected: str) -> tuple[str, list[str]]:
    """A regex for an output as a page shows it, and the decimals it shows.
    ... (or …) stands for anything; each decimal is captured, to compare
    with what the server printed; instance ids, Unix times, pids and memory
    sizes are whatever they are."""
    import re

    parts, decimals = [], []
    for piece in re.split(rf'(\.\.\.|…|"[0-9a-f]{{8}}"|\d{{9,}}\.\d+|{DECIMAL})', re.sub(r"\s+", "", expected)):
        if piece in ("...", "…"):
            parts.append(".*?")
        elif re.fullmatch(r'"[0-9a-f]{8}"', piece):
            parts.append('"[0-9a-f]{8}"')
        elif re.fullmatch(r"\d{9,}\.\d+", piece):
            parts.append(r"[0-9.]+")
        elif re.fullmatch(DECIMAL, piece):
            parts.append(f"({DECIMAL})")
            decimals.append(piece)
        else:
            parts.append(re.escape(piece))
    return re.sub(r'("(?:pid|rss)":)\d+', r"\1\\d+", "".join(parts)), decimals


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings."""
    import re

    anchors, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            anchors.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return anchors


class TestDocs(ServerTestCase):
    """Every page's curl and agent examples run against a fresh server and
    print what the page shows; the Python examples run against this class's
    server; every relative link leads somewhere."""

    def run_page(self, page: str, commands: list[tuple[str, list[str]]]) -> None:
        import re

        work = tempfile.mkdtemp(prefix="gymhttp-docs-")
        self.addCleanup(shutil.rmtree, work, True)
        env = dict(os.environ)
        env.pop("GYMHTTP_TOKEN", None)
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "gymhttp.py"), "-p", "0"], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait(10), proc.stdout.close()))
        port = wait_for_line(proc).split(" serving on ")[1].split()[0].rstrip("/").rsplit(":", 1)[1]
        # Every example that makes an instance closes it: the list is empty before the shutdown (or at the end).
        last = next((k for k, (c, _) in enumerate(commands) if "/v1/shutdown/" in c), len(commands))
        commands = commands[:last] + [("curl localhost:5000/v1/envs/", ['{"all_envs":{}}'])] + commands[last:]
        script = ["set -u"]
        for k, (command, _) in enumerate(commands):
            command = command.replace("localhost:5000", f"localhost:{port}").replace("/tmp/run1", os.path.join(work, "run1"))
            if command.startswith("python example_agent.py "):  # a --render agent at 30 steps a second would take minutes
                command = (f"{shlex.quote(sys.executable)} {shlex.quote(os.path.join(HERE, 'example_agent.py'))} --url http://localhost:{port}"
                           + command[len("python example_agent.py"):] + (" --fps 2000" if "--render" in command else ""))
            elif command.startswith("curl ") and " -w " not in command and "|" not in command:  # each curl tells its status
                command = "curl -s -w '\\n@@STATUS %{http_code}\\n' " + command[5:]
            script.append(f"echo '@@COMMAND {k}'\n{command}\necho \"@@EXIT $?\"")
        out = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, capture_output=True, text=True, timeout=120)
        sections = re.split(r"^@@COMMAND (\d+)\n", out.stdout, flags=re.M)[1:]
        results = {int(k): text for k, text in zip(sections[::2], sections[1::2])}
        self.assertEqual(len(results), len(commands), out.stderr[-2000:])
        for k, (command, expected) in enumerate(commands):
            with self.subTest(page=page, command=command[:90]):
                text = results[k]
                self.assertRegex(text, r"@@EXIT 0\n$", text)
                body = text.rsplit("@@EXIT", 1)[0]
                status = re.search(r"@@STATUS (\d+)", body)
                body = re.sub(r"\n?@@STATUS \d+\n", "", body)
                wanted = " ".join(expected)
                if status:  # the status the page names ("# 410 {...}"), else a success
                    code = re.match(r"(\d{3})(?:\s|$)", wanted)
                    if code:
                        self.assertEqual(int(status.group(1)), int(code.group(1)), body)
                        wanted = wanted[4:]
                    else:
                        self.assertLess(int(status.group(1)), 400, body)
                if wanted:
                    pattern, decimals = doc_pattern(wanted)
                    match = re.fullmatch(pattern, re.sub(r"\s+", "", body))
                    self.assertIsNotNone(match, f"{body!r} is not what {page} shows: {wanted!r}")
                    for got, shown in zip(match.groups(), decimals):  # the very digits the server printed
                        self.assertEqual(got, shown, f"{got} is not {shown}, in {body!r}")
        frame = os.path.join(work, "frame.png")
        if any("frame.png" in c for c, _ in commands):
            with open(frame, "rb") as f:
                self.assertEqual(png_pixels(f.read()).shape, (400, 600, 3))  # the frame example wrote a frame, not an error
        if last < len(commands) - 1:
            self.assertEqual(proc.wait(20), 0)  # its shutdown example stopped it

    def test_every_example_runs_and_shows_what_it_gets(self):
        ran = 0
        for page in DOC_PAGES:
            commands = doc_commands(read_page(page))
            if commands:
                self.run_page(page, commands)
                ran += len(commands)
        self.assertGreater(ran, 30)

    def test_python_examples_run_and_close_what_they_make(self):
        import re

        for page in DOC_PAGES:
            for code in re.findall(r"```python\n(.*?)```", read_page(page), re.S):
                with self.subTest(page=page, code=code[:60]):
                    out = subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:5000", self.base)], cwd=HERE,
                                         capture_output=True, text=True, timeout=120, env=dict(os.environ, SDL_VIDEODRIVER="dummy"))
                    self.assertEqual(out.returncode, 0, out.stderr[-2000:])
                    self.assertEqual(self.client.env_list_all(), {}, "the example left an instance open")

    def test_every_page_is_linked_from_readme_and_every_link_resolves(self):
        import re

        readme = read_page("README.md")
        for page in DOC_PAGES[1:]:
            self.assertIn(f"]({page})", readme, f"README does not link {page}")
        for page in DOC_PAGES:
            text = re.sub(r"```.*?```", "", read_page(page), flags=re.S)
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"[a-z]+:", target):
                    continue
                with self.subTest(page=page, link=target):
                    path, _, anchor = target.partition("#")
                    path = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                    self.assertTrue(os.path.exists(os.path.join(HERE, path)), f"{page} links {target}, which is not there")
                    if anchor:
                        self.assertIn(anchor, heading_anchors(read_page(path)), f"{page} links {target}: no such heading")

    def test_readme_lists_every_route_once(self):
        import re

        listed = re.findall(r"^\| `(GET|POST) ([^`]+)` \|", read_page("README.md"), re.M)

        def key(method, path):
            return method, re.sub(r"<[^>]+>|\{[^}]+\}", "*", path).rstrip("/")

        self.assertEqual(sorted(key(m, p) for m, p in listed), sorted(key(m, p) for m, p, _ in gymhttp.ROUTES))

    def test_readme_is_short(self):
        self.assertLessEqual(read_page("README.md").count("\n"), 300)


# ---------------------------------------------------------------------------
# The Node agent
# ---------------------------------------------------------------------------

NODE = shutil.which("node")


@unittest.skipUnless(NODE, "node is not installed; .ci/run installs it")
class TestDashboardNumbers(unittest.TestCase):
    def test_one_format_for_every_return(self):
        import re

        source = re.search(r"const fmtInt = .*?\n(function fmtNum.*?\n})", gymhttp.DASHBOARD_HTML, re.S)
        code = (re.search(r"const fmtInt = [^\n]*", gymhttp.DASHBOARD_HTML).group(0) + "\n" + source.group(1) +
                "\nconsole.log(JSON.stringify([50, 50.0, -1116.4, -200, 22.456, 0.004, 1234.5, -0.5, 0, null, 'NaN'].map(fmtNum)));")
        out = subprocess.run([NODE, "-e", code], capture_output=True, text=True, timeout=30)
        self.assertEqual(json.loads(out.stdout), ["50", "50", "-1,116", "-200", "22.46", "0.004", "1,235", "-0.5", "0", "–", "NaN"])


@unittest.skipUnless(NODE, "node is not installed; .ci/run installs it")
class TestNodeAgent(ServerTestCase):
    server_options = {"token": "n0de"}

    def run_agent(self, *args, env=None):
        return subprocess.run([NODE, "examples/random_agent.js", *args], cwd=HERE, capture_output=True, text=True,
                              timeout=120, env=env)

    def test_plays_episodes_like_the_python_agent(self):
        version = subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout
        self.assertGreaterEqual(int(version.lstrip("v").split(".")[0]), 18, version)
        with tempfile.TemporaryDirectory() as d:
            out = self.run_agent("--url", self.base, "--episodes", "3", "--seed", "2", "--monitor", d,
                                 env=dict(os.environ, GYMHTTP_TOKEN="n0de"))
            self.assertEqual(out.returncode, 0, out.stderr)
            lines = out.stdout.strip().splitlines()
            self.assertEqual(len(lines), 4, out.stdout)
            printed = [(float(l.split("return ")[1].split(",")[0]), int(l.split("length ")[1])) for l in lines[:3]]
            stats = [f for f in os.listdir(d) if f.endswith(".stats.json")]
            with open(os.path.join(d, stats[0])) as f:
                recorded = json.load(f)
            self.assertEqual([r for r, _ in printed], recorded["episode_rewards"])
            self.assertEqual([n for _, n in printed], recorded["episode_lengths"])
            self.assertTrue(lines[3].startswith("summary: 3 episodes"), lines[3])
        self.assertEqual(self.client_with_token().env_list_all(), {})  # it closed its instance

    def client_with_token(self):
        c = client.Client(self.base, token="n0de")
        self.addCleanup(c.close)
        return c

    def test_clear_errors(self):
        out = self.run_agent("--url", self.base, "--token", "wrong")
        self.assertEqual(out.returncode, 1)
        self.assertIn("HTTP 401", out.stderr)
        out = self.run_agent("--url", self.base, "--token", "n0de", "--env", "Nope-v0")
        self.assertIn("Nope-v0", out.stderr)
        out = self.run_agent("--url", f"http://127.0.0.1:{free_port()}")
        self.assertEqual(out.returncode, 1)
        self.assertIn("no gymhttp server answered", out.stderr)
        self.assertNotIn("    at ", out.stderr)  # no stack trace

    def test_a_lost_connection_names_the_request(self):
        # A server that answers the create, then drops the connection on the next request.
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)  # so that the thread sees `finished` and ends with the test
        finished = threading.Event()

        def serve():
            with listener:
                answered = False
                while not finished.is_set():
                    try:
                        conn = listener.accept()[0]
                    except TimeoutError:
                        continue
                    with conn:  # after the create, every request (the agent's close too) is dropped
                        data = b""
                        while not answered and b"\r\n\r\n" not in data:
                            chunk = conn.recv(65536)
                            if not chunk:
                                break
                            data += chunk
                        if not answered and b"\r\n\r\n" in data:
                            body = b'{"instance_id": "x1"}'
                            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                            answered = True
                            conn.recv(65536)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            out = self.run_agent("--url", f"http://127.0.0.1:{listener.getsockname()[1]}")
        finally:
            finished.set()
            thread.join(5)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("stopped answering: POST /v1/envs/x1/reset/", out.stderr)  # not the close that followed
        self.assertNotIn("no gymhttp server answered", out.stderr)
        self.assertNotIn("    at ", out.stderr)


class TestRemoteEnvWithToken(ServerTestCase):
    server_options = {"token": "t0ken"}

    def test_token_is_sent_and_needed(self):
        from gymnasium.utils.env_checker import check_env

        with self.assertRaises(client.ServerError) as caught:
            client.RemoteEnv(self.base, "CartPole-v1", token="wrong")
        self.assertEqual(caught.exception.status_code, 401)
        env = client.RemoteEnv(self.base, "CartPole-v1", token="t0ken", render_mode="rgb_array")
        self.addCleanup(env.close)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(env)  # its twins (spec.make) carry the token too
        self.assertEqual(env.reset(seed=1)[0].shape, (4,))


class TestVectorEpisodes(ServerTestCase):
    def test_recent_episodes_match_gymnasium_autoreset_semantics(self):
        """Returns and lengths in the details equal a local replay, for each
        autoreset mode: in NextStep the step after an end is the reset, and
        belongs to no episode; in Disabled only the masked sub-envs restart."""
        rng = np.random.default_rng(3)
        for mode in ("NextStep", "SameStep", "Disabled"):
            with self.subTest(mode):
                iid = self.create(num_envs=3, vectorization_mode="sync", seed=0, vector_kwargs={"autoreset_mode": mode})
                local = gymnasium.make_vec("CartPole-v1", num_envs=3, vectorization_mode="sync",
                                           vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode(mode)})
                self.post(f"/v1/envs/{iid}/reset/", {"seed": 0})
                local.reset(seed=0)
                returns, lengths, episodes = np.zeros(3), np.zeros(3, int), []
                previous_done = np.zeros(3, bool)
                for _ in range(120):
                    action = rng.integers(0, 2, 3)
                    reply = self.post(f"/v1/envs/{iid}/step/", {"action": action.tolist()})[2]
                    _, reward, terminated, truncated, _ = local.step(action)
                    done = terminated | truncated
                    self.assertEqual(reply["done"], done.tolist())
                    counted = ~previous_done if mode == "NextStep" else np.ones(3, bool)
                    returns += np.where(counted, reward, 0)
                    lengths += counted
                    for i in np.flatnonzero(done):
                        episodes.append((float(returns[i]), int(lengths[i])))
                        returns[i], lengths[i] = 0, 0
                    previous_done = done
                    if mode == "Disabled" and done.any():
                        self.post(f"/v1/envs/{iid}/reset/", {"options": {"reset_mask": done.tolist()}})
                        local.reset(options={"reset_mask": done})
                details = self.get(f"/v1/envs/{iid}/")[2]
                self.assertGreater(len(episodes), 5)
                self.assertEqual([(e["return"], e["length"]) for e in details["recent_episodes"]], episodes[-100:])
                self.assertEqual(details["episodes"], len(episodes))

    def test_a_seed_list_refused_by_the_env_is_a_bad_request(self):
        iid = self.create(num_envs=3, vectorization_mode="vector_entry_point")
        self.assertError(self.post(f"/v1/envs/{iid}/reset/", {"seed": [1, 2, 3]}), 400, "one integer seed")
        self.assertEqual(self.post(f"/v1/envs/{iid}/reset/", {"seed": 1})[0], 200)
        self.assertEqual(self.post(f"/v1/envs/{iid}/step/", {"action": [0, 1, 0]})[0], 200)
        sync = self.create(num_envs=3, vectorization_mode="sync")
        self.assertEqual(self.post(f"/v1/envs/{sync}/reset/", {"seed": [1, 2, 3]})[0], 200)


if __name__ == "__main__":
    unittest.main()
