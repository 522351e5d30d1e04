"""Python client for gymhttp (and the original gym-http-api).

Standard library only.  ``Client`` keeps the original client's class, method
names and return shapes, so code written for openai/gym-http-api runs
unchanged; ``reset``/``step`` give the Gymnasium shapes.

    from client import Client
    with Client("http://127.0.0.1:5000") as c:
        env = c.env_create("CartPole-v1", seed=0)
        observation, info = c.reset(env)
        observation, reward, terminated, truncated, info = c.step(env, 0)

``RemoteEnv(url, env_id, **make_kwargs)`` is a ``gymnasium.Env`` backed by
a server instance; it imports gymnasium and numpy when first used, so that
this module itself needs only the standard library.

License: MIT.
"""

from __future__ import annotations

import array
import binascii
import json
import math
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref
from typing import Any, Callable
from urllib.parse import quote, urlsplit

# RemoteEnv is public too, but not in __all__: it imports gymnasium, and
# `from client import *` should work with the standard library alone.
__all__ = ["Client", "ServerError", "Envelope", "decode_envelopes", "encode_array", "space_from_description", "decode_png"]

ENVELOPE = "__ndarray__"
_ARRAY_CODES = {  # numpy dtype name -> array module typecode, for when numpy is absent
    "bool": "B", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}
_NO_BODY = object()


class ServerError(Exception):
    """The server answered with an error: ``.message`` and ``.status_code``."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{self.status_code}: {self.message}" if self.status_code else self.message


# -- arrays -----------------------------------------------------------------


_WIRE_DTYPES: dict = {}  # name -> little-endian numpy dtype, built once each


def _numpy():
    """numpy if it can be imported, else None (checked once)."""
    global _NUMPY
    if _NUMPY is False:
        try:
            import numpy
        except ImportError:
            numpy = None
        _NUMPY = numpy
    return _NUMPY


_NUMPY: Any = False


_SMALL: dict = {}  # small envelopes seen before (done flags, mostly) -> their array


def _envelope_to_value(env: dict) -> Any:
    text, dtype, shape = env[ENVELOPE], env["dtype"], env["shape"]
    numpy = _numpy()
    small = numpy is not None and len(text) <= 512
    if small:
        key = (text, dtype, tuple(shape))
        known = _SMALL.get(key)
        if known is not None:
            return known.copy()
    raw = binascii.a2b_base64(text)
    if numpy is not None:
        dtypes = _WIRE_DTYPES.get(dtype)
        if dtypes is None:
            native = numpy.dtype(dtype)
            dtypes = _WIRE_DTYPES[dtype] = (native.newbyteorder("<"), native)
        # A writable array in native byte order, like any other observation.
        value = numpy.frombuffer(raw, dtype=dtypes[0]).astype(dtypes[1]).reshape(shape)
        if small:
            if len(_SMALL) >= 256:
                _SMALL.clear()
            _SMALL[key] = value.copy()
        return value
    if dtype == "float16":  # the array module has no half floats; struct does
        values = list(struct.unpack(f"<{len(raw) // 2}e", raw))
    else:
        flat = array.array(_ARRAY_CODES[dtype])
        flat.frombytes(raw)
        if sys.byteorder == "big":
            flat.byteswap()
        values = flat.tolist()
    if dtype == "bool":
        values = [bool(v) for v in values]
    if not shape:
        return values[0]
    for size in reversed(shape[1:]):
        values = [values[i:i + size] for i in range(0, len(values), size)]
    return values


def decode_envelopes(value: Any) -> Any:
    """Replace every ``{"__ndarray__": ...}`` in a decoded response with an
    array: numpy when it is importable, nested lists otherwise."""
    if isinstance(value, dict):
        if ENVELOPE in value:
            return _envelope_to_value(value)
        return {k: decode_envelopes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_envelopes(v) for v in value]
    return value


def _envelope_hook(obj: dict) -> Any:
    # An envelope's "__ndarray__" is base64 text; the OpenAPI document's schema of it is an object.
    return _envelope_to_value(obj) if type(obj.get(ENVELOPE)) is str else obj


class Envelope(dict):
    """An array envelope that also holds its own JSON text, so that sending
    it skips the JSON encoder's character-by-character scan of the base64."""

    __slots__ = ("json",)


def _envelope(data: bytes, dtype: str, shape: list) -> Envelope:
    text = binascii.b2a_base64(data, newline=False)
    env = Envelope({ENVELOPE: text.decode("ascii"), "dtype": dtype, "shape": shape})
    env.json = b'{"__ndarray__":"' + text + b'","dtype":"' + dtype.encode() + b'","shape":' + _dumps(shape).encode() + b"}"
    return env


def encode_array(values: Any) -> dict:
    """An array (numpy, or nested lists with a ``dtype`` guessed) as the
    base64 envelope the server accepts for actions."""
    if hasattr(values, "dtype") and hasattr(values, "tobytes"):
        dtype = values.dtype
        if dtype.byteorder == ">" or (dtype.byteorder == "=" and sys.byteorder == "big"):
            values = values.astype(dtype.newbyteorder("<"))
        return _envelope(values.tobytes(), dtype.name, list(values.shape))
    shape, flat = [], values
    while isinstance(flat, (list, tuple)):
        shape.append(len(flat))
        flat = flat[0] if flat else None
    items = _flatten(values)
    code, dtype = ("q", "int64") if all(isinstance(v, int) for v in items) else ("d", "float64")
    arr = array.array(code, items)
    if sys.byteorder == "big":
        arr.byteswap()
    return _envelope(arr.tobytes(), dtype, shape)


def _flatten(values: Any) -> list:
    if isinstance(values, (list, tuple)):
        out = []
        for v in values:
            out.extend(_flatten(v))
        return out
    return [values]


def _default(obj: Any) -> Any:
    """numpy values in requests: arrays to lists, scalars to numbers."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_dumps = json.JSONEncoder(separators=(",", ":"), default=_default).encode


# -- the connection -------------------------------------------------------------


def _preemption_counter() -> Callable[[], int] | None:
    """A counter of this thread's involuntary context switches, or None where
    there is none (Windows) or no poll() to spin with: then we never spin."""
    try:
        import resource
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    except (ImportError, OSError):
        return None
    if cores < 2 or not hasattr(select, "poll"):
        return None  # on one core, busy-polling only delays the server
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return lambda: resource.getrusage(who).ru_nivcsw


_PREEMPTIONS = _preemption_counter()
# Busy-polling pays only while this thread has a core to itself.  A thread
# that has the core most of the time is preempted in about 1 of 3,000 spins
# (timers, other daemons); with more busy threads than cores, 4 to 25 in 100.
SPIN_SAMPLE = 256  # spins per verdict
SPIN_PREEMPTED_MAX = 4  # more preemptions than this in a sample: cores are contended
SPIN_BACKOFF = 1.0  # seconds without spinning after that, doubling while it recurs
SPIN_BACKOFF_MAX = 30.0
SPIN_GAIN = 1.25  # spinning that gets replies this much sooner than waiting goes on though preempted
SPIN_TRIAL = 64  # replies waited for without spinning, to measure what spinning gains
SPIN_REMEASURE = 30.0  # seconds that such a measure stands
MAX_SPIN_US = 100_000  # longer polling would only burn CPU: that server is not fast


_OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "


class _Connection:
    """One persistent HTTP/1.1 connection, lean on purpose.

    ``http.client`` parses every response's headers with the email package;
    a step's round trip is short enough that this shows.  This reads just the
    status line, the headers it needs and the body, from its own buffer.  The
    socket is non-blocking and waits with ``poll`` only when there is nothing
    to read yet: a socket with a timeout would poll before every recv and send.
    """

    def __init__(self, host: str, port: int, timeout: float, spin: float = 0.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.timeout = timeout
        self._buffer = bytearray()
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        self._poll = poller.poll
        self.spin = spin if _PREEMPTIONS is not None else 0.0
        self._sent = 0.0  # perf_counter() when the last request left
        self._waited = 0.0  # how long the last reply took to start arriving
        self._calm_until = 0.0  # no spinning before this perf_counter()
        self._spins = self._preempted = 0  # in the current sample
        self._backoff = SPIN_BACKOFF
        self.spun = 0  # replies waited for by polling, all told
        self.content_type = "application/json"  # of the last reply
        self._spun_wait = 0.0  # reply waits summed over the current sample
        self._spun_mean = 0.0  # mean reply wait of the last sample that was preempted
        self._trial = 0  # replies still to wait for without spinning, to measure that
        self._judge = False  # a trial ended: compare it with spinning
        self._calm_wait, self._calm_count = 0.0, 0  # reply waits while not spinning
        self._calm_mean = math.inf  # their mean, when last measured
        self._calm_measured = -math.inf  # perf_counter() then
        self._spinning = False  # this reply is waited for by polling

    def _spin_for_reply(self) -> None:
        """Busy-poll for the reply while replies come within ``spin`` seconds.

        A thread that blocks lets its core go idle, and waking it costs tens
        of microseconds (far more on a VM) per request.  Only in a process
        with one Python thread: the loop holds the GIL between polls.  When
        the OS often takes the core away from the loop, other processes need
        it (more busy processes than cores) and spinning would slow the
        server down: then it stops for SPIN_BACKOFF seconds.
        """
        clock = time.perf_counter
        self._spinning = False
        if self._waited > self.spin or threading.active_count() > 1 or self._trial:
            return
        if self._sent < self._calm_until:
            return
        if self._calm_count:  # a time without spinning just ended: how fast were replies then?
            self._calm_mean, self._calm_measured = self._calm_wait / self._calm_count, clock()
            self._calm_wait, self._calm_count = 0.0, 0
            if self._judge:  # it was a trial
                self._judge = False
                if not self._spinning_pays():
                    self._back_off()
                    return
        poll = self._poll
        end = self._sent + self.spin
        preempted = _PREEMPTIONS()
        while not poll(0) and clock() < end:
            pass
        # Like gymhttp.py's back-off (each file stands alone, so it is written twice), and one more rule.
        self._preempted += _PREEMPTIONS() != preempted
        self._spins += 1
        self.spun += 1
        self._spinning = True
        if self._preempted > SPIN_PREEMPTED_MAX:  # contended: should we stop?
            self._spun_mean = self._spun_wait / self._spins
            if clock() - self._calm_measured > SPIN_REMEASURE:
                self._trial = SPIN_TRIAL  # first measure how fast replies come without spinning
            elif not self._spinning_pays():
                self._back_off()
            self._spins = self._preempted = 0
            self._spun_wait = 0.0
        elif self._spins == SPIN_SAMPLE:  # a clean sample
            self._backoff = SPIN_BACKOFF
            self._spins = self._preempted = 0
            self._spun_wait = 0.0

    def _spinning_pays(self) -> bool:
        """Whether spinning gets replies clearly sooner than waiting does, though
        preempted: then what takes our core is likely the very work we wait
        for (the server's instance process, on a machine with few cores)."""
        return self._calm_mean > SPIN_GAIN * self._spun_mean

    def _back_off(self) -> None:
        """Stop spinning for a while, longer each time in a row."""
        self._calm_until = time.perf_counter() + self._backoff
        self._backoff = min(2 * self._backoff, SPIN_BACKOFF_MAX)

    def usable(self) -> bool:
        """False when the server closed this connection while it sat idle.

        Checked before a request is sent, so that no request is sent twice:
        an idle connection has nothing to read unless the server closed it.
        """
        try:
            return not self._buffer and not self._poll(0)
        except (OSError, ValueError):
            return False

    def send(self, data: bytes) -> None:
        """Send all of ``data``; OSError (TimeoutError) when it cannot leave."""
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):  # a large body: wait for room, within the timeout
            sock.settimeout(self.timeout)
            try:
                sock.sendall(memoryview(data)[sent:])
            finally:
                sock.setblocking(False)
        self._sent = time.perf_counter()

    def _fill(self) -> None:
        """Read what has arrived into the buffer, waiting up to the timeout."""
        while True:
            try:
                chunk = self.sock.recv(262144)
            except BlockingIOError:
                if not self._poll(self.timeout * 1000):
                    raise TimeoutError(f"no reply within {self.timeout:g} s") from None
                continue
            if not chunk:
                raise ConnectionError("connection closed")
            self._buffer += chunk
            return

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            self._fill()
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def _line(self) -> bytes:
        buffer = self._buffer
        while (end := buffer.find(b"\n")) < 0:
            if len(buffer) > 65536:
                raise ConnectionError("a line of the reply is too long")
            self._fill()
        return self._take(end + 1)

    def read_response(self, method: str) -> tuple[int, str, bytes, bool]:
        """(status, reason, body, keep-alive) of the next response."""
        buffer = self._buffer
        if self.spin and not buffer:
            self._spin_for_reply()
        while (end := buffer.find(b"\r\n\r\n")) < 0:  # the head, whole
            if len(buffer) > 1 << 20:
                raise ConnectionError("the reply's head is too long")
            self._fill()
        if self.spin:
            self._waited = waited = time.perf_counter() - self._sent
            if self._spinning:
                self._spun_wait += waited
            elif self._trial or self._sent < self._calm_until:
                self._calm_wait += waited
                self._calm_count += 1
                if self._trial:
                    self._trial -= 1
                    self._judge = not self._trial
        if buffer.startswith(_OK_JSON):  # a usual reply (gymhttp's): only its length to read
            digits = buffer[len(_OK_JSON):end]
            if digits.isdigit():
                del buffer[:end + 4]
                self.content_type = "application/json"
                return 200, "OK", self._take(int(digits)), True
        head = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[:end + 4]
        self.content_type = ""
        version, _, rest = head[0].partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        length, chunked, keep = None, False, version == "HTTP/1.1"
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection":
                token = value.strip().lower()
                keep = token != "close" if version == "HTTP/1.1" else token == "keep-alive"
            elif name == "transfer-encoding":
                chunked = value.strip().lower() == "chunked"
            elif name == "content-type":
                self.content_type = value.strip()
        if status == 100:
            return self.read_response(method)
        if method == "HEAD" or status in (204, 304):
            return status, reason, b"", keep
        if chunked:
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n"):
                        pass
                    break
                parts.append(self._take(size))
                self._line()
            return status, reason, b"".join(parts), keep
        if length is None:  # the body ends with the connection
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            return status, reason, self._take(len(buffer)), False
        try:
            return status, reason, self._take(length), keep
        except ConnectionError:
            raise ConnectionError("connection closed in the body") from None

    def close(self) -> None:
        self.sock.close()


# -- the client ---------------------------------------------------------------

# Every live Client, so that a forked child lets go of the connections it
# inherited: two processes reading one socket would take each other's replies.
_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for c in list(_CLIENTS):
        conn, c._conn = c._conn, None  # the next request opens the child's own
        if conn is not None:
            conn.close()  # the child's copy of the socket only: no FIN while the parent holds it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A client of one gymhttp server over one persistent HTTP/1.1 connection.

    ``remote_base`` is the server's URL, e.g. ``http://127.0.0.1:5000``.
    ``token`` (or ``$GYMHTTP_TOKEN``) is sent as ``Authorization: Bearer``.
    ``spin_us``: while replies come within this many microseconds, wait for
    them by busy-polling rather than sleeping, which saves the wake-up of an
    idle core (tens of microseconds, more on a VM); only in a process with
    one Python thread, on two or more cores, and it pauses when the OS keeps
    preempting it.  0 turns it off.
    Use it as a context manager, or call ``close()``.  Not thread-safe: give
    each thread its own Client.  A forked child opens a connection of its own.
    """

    def __init__(
        self, remote_base: str = "http://127.0.0.1:5000", *, token: str | None = None, timeout: float = 60.0,
        spin_us: int = 1000,
    ):
        self.remote_base = remote_base.rstrip("/")
        parts = urlsplit(self.remote_base if "//" in self.remote_base else "http://" + self.remote_base)
        if parts.scheme not in ("http", ""):
            raise ValueError(f"only http:// URLs are supported, not {remote_base!r}")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        if not (type(spin_us) is int and 0 <= spin_us <= MAX_SPIN_US):
            raise ValueError(f"spin_us must be an integer from 0 (off) to {MAX_SPIN_US}, not {spin_us!r}")
        self.spin_us = spin_us
        token = token if token is not None else os.environ.get("GYMHTTP_TOKEN")
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        if ":" in self._host:
            host_header = f"[{self._host}]:{self._port}"
        self._head = f"Host: {host_header}\r\nContent-Type: application/json\r\n"
        if token:
            self._head += f"Authorization: Bearer {token}\r\n"
        self._conn: _Connection | None = None
        self._step_routes: dict[str, str] = {}  # instance id -> its step route, quoted once
        self._starts: dict[tuple[str, str], bytes] = {}  # (method, route) -> the request's start
        _CLIENTS.add(self)

    # -- plumbing ------------------------------------------------------------

    def _request(self, method: str, route: str, data: Any = _NO_BODY, _retry: bool = True, raw_reply: bool = False) -> Any:
        """Send one request; return the decoded JSON reply (None for 204), or
        with ``raw_reply`` the body's bytes.

        Raises ServerError for an error reply, ConnectionError when the server
        cannot be reached or drops the connection before answering.
        """
        if data is _NO_BODY:
            body = b""
        elif type(data) is bytes:
            body = data  # already JSON
        else:
            body = _dumps(data).encode()
        start = self._starts.get((method, route))
        if start is None:  # the request line and fixed headers, made once per route
            if len(self._starts) > 4096:
                self._starts.clear()
            start = self._starts[method, route] = f"{method} {self._prefix}{route} HTTP/1.1\r\n{self._head}".encode("latin-1")
        head = start + b"Content-Length: %d\r\n\r\n" % len(body)
        conn = self._conn
        if conn is None or not conn.usable():
            conn = self._open()
        try:
            conn.send(head + body)
        except OSError as exc:
            # The request did not leave whole, so the server cannot have acted on it: once more.
            conn.close()
            conn = self._open()
            try:
                conn.send(head + body)
            except OSError as exc2:
                self._drop()
                raise ConnectionError(f"cannot send to the gymhttp server at {self.remote_base}: {exc2}") from exc
        try:
            status, reason, raw, keep = conn.read_response(method)
        except (OSError, ValueError) as exc:
            self._drop()
            if method == "GET" and _retry:  # safe to repeat, once
                return self._request(method, route, data, _retry=False, raw_reply=raw_reply)
            raise ConnectionError(
                f"the gymhttp server at {self.remote_base} closed the connection before answering "
                f"{method} {route}; it may or may not have acted on it"
            ) from exc
        if not keep:
            self._drop()
        if not raw:
            if status >= 400:
                raise ServerError(reason, status)
            return None
        if raw_reply and status < 400:
            return raw
        try:
            # Envelopes are decoded while parsing, not in a second walk.
            reply = json.loads(raw, object_hook=_envelope_hook) if b'"__ndarray__"' in raw else json.loads(raw)
        except ValueError:  # not gymhttp's JSON: say so in one line, not with the other server's page
            kind = (conn.content_type.split(";")[0] or "no Content-Type") if conn is not None else "?"
            raise ServerError(f"{self.remote_base} answered {status} {kind}; is this a gymhttp server?", status) from None
        if status >= 400:
            message = reply.get("message", reason) if isinstance(reply, dict) else reason
            raise ServerError(message, status)
        return reply

    def _open(self) -> _Connection:
        self._drop()
        try:
            self._conn = _Connection(self._host, self._port, self.timeout, self.spin_us / 1e6)
        except OSError as exc:
            raise ConnectionError(f"cannot reach the gymhttp server at {self.remote_base}: {exc}") from exc
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post_request(self, route: str, data: Any) -> Any:
        return self._request("POST", route, data)

    def _get_request(self, route: str) -> Any:
        return self._request("GET", route)

    def close(self) -> None:
        """Close the connection (instances on the server stay)."""
        self._drop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the original API ------------------------------------------------------

    def env_create(
        self, env_id: str, *, seed: int | None = None, kwargs: dict | None = None, num_envs: int | None = None,
        encoding: str | None = None, vectorization_mode: str | None = None, vector_kwargs: dict | None = None,
    ) -> str:
        """Create an instance of ``env_id``; returns its instance id.

        ``kwargs`` go to ``gymnasium.make``; ``num_envs`` > 1 makes a vector
        instance; ``encoding="base64"`` sends arrays as base64 envelopes.
        """
        data: dict[str, Any] = {"env_id": env_id}
        for name, value in (("seed", seed), ("kwargs", kwargs), ("num_envs", num_envs), ("encoding", encoding),
                            ("vectorization_mode", vectorization_mode), ("vector_kwargs", vector_kwargs)):
            if value is not None:
                data[name] = value
        return self._post_request("/v1/envs/", data)["instance_id"]

    def env_list_all(self) -> dict:
        """``{instance_id: env_id}`` of every instance on the server."""
        return self._get_request("/v1/envs/")["all_envs"]

    def env_reset(self, instance_id: str, *, seed: int | None = None, options: dict | None = None) -> Any:
        """Reset; returns the observation (use :meth:`reset` for the info too)."""
        return self.reset(instance_id, seed=seed, options=options)[0]

    def env_step(self, instance_id: str, action: Any, render: bool = False) -> list:
        """Step; returns ``[observation, reward, done, info]`` as the original
        did (``done = terminated or truncated``; :meth:`step` splits them)."""
        reply = self._step(instance_id, action, render)
        return [reply["observation"], reply["reward"], reply["done"], reply["info"]]

    def env_action_space_info(self, instance_id: str) -> dict:
        """The action space's description (``name``, ``n``, ``shape``...)."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/")["info"]

    def env_action_space_sample(self, instance_id: str) -> Any:
        """A random action from the server's action space."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/sample")["action"]

    def env_action_space_contains(self, instance_id: str, x: Any) -> bool:
        """Whether ``x`` is in the action space."""
        encoded = quote(_dumps(x), safe="")
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/contains/{encoded}")["member"]

    def env_observation_space_info(self, instance_id: str) -> dict:
        """The observation space's description."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/observation_space/")["info"]

    def env_observation_space_contains(self, instance_id: str, params: dict) -> bool:
        """Whether every field in ``params`` equals the space's description."""
        return self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/observation_space/contains", params)["member"]

    def env_monitor_start(self, instance_id: str, directory: str, force: bool = False, resume: bool = False,
                          video_callable: bool | int = False) -> None:
        """Record episode statistics (and videos) into ``directory`` on the server."""
        data = {"directory": directory, "force": force, "resume": resume, "video_callable": video_callable}
        self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/monitor/start/", data)

    def env_monitor_close(self, instance_id: str) -> None:
        """Flush and stop the monitor."""
        self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/monitor/close/", None)

    def env_close(self, instance_id: str) -> None:
        """Close the instance on the server."""
        self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/close/", None)

    def upload(self, training_dir: str, algorithm_id: str | None = None, api_key: str | None = None) -> None:
        """The old scoreboard upload; the server answers 410 Gone (ServerError)."""
        if not api_key:
            api_key = os.environ.get("OPENAI_GYM_API_KEY")
        data = {"training_dir": training_dir, "algorithm_id": algorithm_id, "api_key": api_key}
        self._post_request("/v1/upload/", data)

    def shutdown_server(self) -> None:
        """Ask the server to stop."""
        self._post_request("/v1/shutdown/", None)
        self.close()

    # -- beyond the original ---------------------------------------------------

    def env_details(self, instance_id: str) -> dict:
        """An instance's details: env_id, steps, episodes, recent returns..."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/")

    def env_render(self, instance_id: str, index: int | None = None) -> bytes | str:
        """The current frame: PNG bytes (render_mode rgb_array) or text (ansi).
        ``index`` picks the sub-env of a vector instance."""
        query = "" if index is None else f"?index={int(index)}"
        body = self._request("GET", f"/v1/envs/{quote(instance_id, safe='')}/render/{query}", raw_reply=True)
        return body if body.startswith(b"\x89PNG") else body.decode("utf-8")

    def registry(self) -> list:
        """The env ids the server can make, with their spec basics."""
        return self._get_request("/v1/registry/")["envs"]

    def openapi(self) -> dict:
        """The server's OpenAPI 3.1 document."""
        return self._get_request("/v1/openapi.json")

    # -- Gymnasium shapes ------------------------------------------------------

    def reset(self, instance_id: str, *, seed: int | list | None = None, options: dict | None = None) -> tuple:
        """``(observation, info)``, like ``gymnasium.Env.reset``."""
        data: dict[str, Any] = {}
        if seed is not None:
            data["seed"] = seed
        if options is not None:
            data["options"] = options
        reply = self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/reset/", data)
        return reply["observation"], reply["info"]

    def step(self, instance_id: str, action: Any, render: bool = False) -> tuple:
        """``(observation, reward, terminated, truncated, info)``, like
        ``gymnasium.Env.step`` (lists of them for a vector instance)."""
        reply = self._step(instance_id, action, render)
        return reply["observation"], reply["reward"], reply["terminated"], reply["truncated"], reply["info"]

    def _step(self, instance_id: str, action: Any, render: bool) -> dict:
        route = self._step_routes.get(instance_id)
        if route is None:
            if len(self._step_routes) > 1024:
                self._step_routes.clear()
            route = self._step_routes[instance_id] = f"/v1/envs/{quote(instance_id, safe='')}/step/"
        if type(action) is Envelope:
            data: Any = b'{"action":' + action.json + (b',"render":true}' if render else b"}")
        elif type(action) is int and not render:
            data = b'{"action":%d}' % action
        else:
            data = {"action": action, "render": True} if render else {"action": action}
        return self._request("POST", route, data)


# -- RemoteEnv: a gymnasium.Env backed by a server instance ---------------------
#
# gymnasium and numpy are imported only when RemoteEnv is first used, so that
# `import client` still needs nothing beyond the standard library.


def space_from_description(info: dict) -> Any:
    """Rebuild a ``gymnasium.spaces`` space from the server's description
    (``GET .../action_space/``), equal to the space the server holds.

    Box bounds of +-1e100 or beyond are infinities (the wire cannot carry
    them); everything else is taken as it is.
    """
    import numpy as np
    from gymnasium import spaces

    name = info.get("name")
    if name == "Discrete":
        return spaces.Discrete(info["n"], start=info.get("start", 0), dtype=np.dtype(info.get("dtype", "int64")))
    if name == "Box":
        dtype = np.dtype(info["dtype"])
        shape = tuple(info["shape"])
        low, high = np.array(info["low"]), np.array(info["high"])
        if dtype.kind == "f":
            low = np.where(low <= -1e100, -np.inf, low)
            high = np.where(high >= 1e100, np.inf, high)
        return spaces.Box(low.reshape(shape).astype(dtype), high.reshape(shape).astype(dtype), shape, dtype)
    if name == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(info["nvec"]), dtype=np.dtype(info.get("dtype", "int64")),
                                    start=np.array(info["start"]) if "start" in info else None)
    if name == "MultiBinary":
        return spaces.MultiBinary(info["n"])
    if name == "Tuple":
        return spaces.Tuple([space_from_description(s) for s in info["spaces"]])
    if name == "Dict":
        return spaces.Dict({k: space_from_description(s) for k, s in info["spaces"].items()})
    if name == "Text":
        return spaces.Text(info["max_length"], min_length=info["min_length"], charset=info["charset"])
    if name == "Sequence":
        return spaces.Sequence(space_from_description(info["feature_space"]), stack=info.get("stack", False))
    if name == "Graph":
        edge = info.get("edge_space")
        return spaces.Graph(space_from_description(info["node_space"]), space_from_description(edge) if edge else None)
    if name == "OneOf":
        return spaces.OneOf([space_from_description(s) for s in info["spaces"]])
    raise ValueError(f"cannot rebuild a space named {name!r} from {info!r}; RemoteEnv knows the spaces Gymnasium ships")


def _from_wire(space: Any, value: Any) -> Any:
    """A value of ``space`` as the server's env returned it: numpy arrays of
    the space's dtype and shape, numpy ints for Discrete, tuples for Tuple."""
    import numpy as np
    from gymnasium import spaces

    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        return np.array(value, dtype=space.dtype).reshape(space.shape)
    if isinstance(space, spaces.Discrete):
        return space.dtype.type(value)
    if isinstance(space, spaces.Tuple):
        return tuple(_from_wire(s, v) for s, v in zip(space.spaces, value))
    if isinstance(space, spaces.Dict):
        return {k: _from_wire(s, value[k]) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Sequence):
        if space.stack:
            return _from_wire(space.stacked_feature_space, value)
        return tuple(_from_wire(space.feature_space, v) for v in value)
    if isinstance(space, spaces.OneOf):
        return (np.int64(value[0]), _from_wire(space.spaces[int(value[0])], value[1]))
    if isinstance(space, spaces.Graph):
        arrays = {k: None if value.get(k) is None else np.array(value[k]) for k in ("nodes", "edges", "edge_links")}
        return spaces.GraphInstance(**arrays)
    return value


def _to_wire(value: Any) -> Any:
    """An action with its large arrays as base64 envelopes; small arrays and
    numpy scalars are left to the JSON encoder's ``_default``."""
    if getattr(value, "size", 0) >= 64 and hasattr(value, "tobytes"):
        return encode_array(value)
    if isinstance(value, (tuple, list)):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if hasattr(value, "nodes") and hasattr(value, "edge_links"):  # a GraphInstance
        return {"nodes": _to_wire(value.nodes), "edges": _to_wire(value.edges), "edge_links": _to_wire(value.edge_links)}
    return value


def decode_png(data: bytes) -> Any:
    """The numpy array (H x W x 3, H x W x 4, or H x W) of a PNG as the server
    writes them: 8-bit, not interlaced, every row unfiltered."""
    import zlib

    import numpy as np

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif tag == b"IDAT":
            idat.append(chunk)
        elif tag == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, color type {color}, interlace {interlace})")
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, 1 + width * channels)
    if rows[:, 0].any():
        raise ValueError("filtered PNG rows are not supported (gymhttp writes unfiltered rows)")
    frame = rows[:, 1:].reshape(height, width, channels).copy()
    return frame[:, :, 0] if channels == 1 else frame


def _close_remote(client: Client, instance_id: str, owner: int) -> None:
    """Close a RemoteEnv's instance, in the process that made it: a forked
    child's copy (collected, closed or at its exit) leaves the parent's be."""
    try:
        if os.getpid() == owner:
            client.env_close(instance_id)
    except (ServerError, ConnectionError, OSError):
        pass  # already gone: closed, reaped, or the server stopped
    finally:
        client.close()


def _vector_info(info: dict, n: int, single_observation_space: Any) -> dict:
    """A vector env's info as Gymnasium builds it, from its JSON: each
    sub-env's values as an array of n (bool, int64 or float64 as the values
    are, or objects), final observations decoded through the single space."""
    import numpy as np

    out: dict = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _vector_info(value, n, single_observation_space)
        elif isinstance(value, list) and len(value) == n:
            if key == "final_obs":
                array = np.empty(n, dtype=object)
                array[:] = [None if v is None else _from_wire(single_observation_space, v) for v in value]
                out[key] = array
            elif all(type(v) is bool for v in value):
                out[key] = np.array(value, dtype=bool)
            elif all(type(v) is int for v in value):
                out[key] = np.array(value, dtype=np.int64)
            elif all(type(v) in (int, float) for v in value):
                out[key] = np.array(value, dtype=np.float64)
            else:
                array = np.empty(n, dtype=object)
                array[:] = value
                out[key] = array
        else:
            out[key] = value
    return out


_NOT_PICKLED = (
    "{cls} holds an instance on the server and a connection to it, which cannot travel to another process; "
    "make the env there instead: send functools.partial(client.{cls}, url, env_id, ...) or the env's spec "
    "(gymnasium.make(spec)), both of which pickle"
)


def _build_remote_classes() -> dict:
    import gymnasium
    import numpy as np
    from gymnasium.envs.registration import EnvSpec

    class _Window:
        """Frames shown in a local window, as Gymnasium's HumanRendering shows them."""

        def __init__(self, fps: float | None):
            self.fps, self.screen, self.clock = fps, None, None

        def show(self, frame: Any) -> None:
            try:
                import pygame
            except ImportError as exc:
                raise gymnasium.error.DependencyNotInstalled(
                    'render_mode="human" shows frames with pygame: pip install "gymnasium[classic-control]"') from exc
            rgb = np.transpose(np.asarray(frame)[..., :3], (1, 0, 2))
            if self.screen is None:
                pygame.display.init()  # only the display: pygame.init() would open the sound card too
                self.screen = pygame.display.set_mode(rgb.shape[:2])
                self.clock = pygame.time.Clock()
            pygame.surfarray.blit_array(self.screen, rgb)
            pygame.event.pump()
            if self.fps:
                self.clock.tick(self.fps)
            pygame.display.flip()

        def close(self) -> None:
            if self.screen is not None:
                import pygame

                pygame.display.quit()
                self.screen = None

    def make_spec(env_id: str, details: dict, kwargs: dict) -> EnvSpec:
        """The spec of a remote twin: the server's horizon and threshold, and
        kwargs that gymnasium.make(spec) passes back to the entry point."""
        spec = details.get("spec") or {}
        return EnvSpec(
            id=env_id.rpartition(":")[2],
            entry_point=f"{__name__}:RemoteEnv",
            reward_threshold=spec.get("reward_threshold"),
            nondeterministic=bool(spec.get("nondeterministic", False)),
            max_episode_steps=spec.get("max_episode_steps"),
            order_enforce=False,
            disable_env_checker=True,
            kwargs=kwargs,
        )

    def connection_kwargs(remote_base: str, token: str | None, timeout: float, spin_us: int) -> dict:
        kwargs: dict[str, Any] = {"remote_base": remote_base}
        if token is not None:  # only when given: $GYMHTTP_TOKEN stays out of specs
            kwargs["token"] = token
        if timeout != 60.0:
            kwargs["timeout"] = timeout
        if spin_us != 1000:
            kwargs["spin_us"] = spin_us
        return kwargs

    class _Remote:
        """What RemoteEnv and RemoteVectorEnv share: the instance on the server,
        closed by close() or when the object is collected, and no pickling."""

        def _attach(self, remote_base: str, env_id: str, token: str | None, timeout: float, spin_us: int,
                    **create: Any) -> dict:
            """Make the instance (``create`` goes to env_create); its details."""
            self._client = Client(remote_base, token=token, timeout=timeout, spin_us=spin_us)
            try:
                self.instance_id: str | None = self._client.env_create(env_id, encoding="base64", **create)
            except BaseException:
                self._client.close()  # nothing was made; don't leave the connection behind
                raise
            self._finalizer = weakref.finalize(self, _close_remote, self._client, self.instance_id, os.getpid())
            self.remote_base = remote_base
            return self._client.env_details(self.instance_id)

        def _detach(self) -> None:
            """Close the instance on the server (twice is fine)."""
            if self.instance_id is not None:
                self.instance_id = None
                self._finalizer()

        def _id(self) -> str:
            if self.instance_id is None:
                raise gymnasium.error.ClosedEnvironmentError(f"this {type(self).__name__} is closed")
            return self.instance_id

        def __reduce_ex__(self, protocol: Any) -> Any:
            raise TypeError(_NOT_PICKLED.format(cls=type(self).__name__))

    class RemoteEnv(_Remote, gymnasium.Env):
        """A ``gymnasium.Env`` whose environment runs on a gymhttp server.

            env = RemoteEnv("http://127.0.0.1:5000", "CartPole-v1", render_mode="rgb_array")
            observation, info = env.reset(seed=0)
            observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
            frame = env.render()
            env.close()

        Keyword arguments other than ``token``, ``timeout`` and ``spin_us`` go to
        ``gymnasium.make`` on the server.  The spaces are rebuilt from the
        server's descriptions and compare equal to a local ``make``'s, and
        ``spec`` carries the server's ``max_episode_steps``.  Arrays travel as
        base64, so observations keep their dtype exactly.  ``render_mode="human"``
        makes the server's env with ``rgb_array`` and shows its frames in a
        local window.  The class pickles (by reference), and so do its spec and
        ``functools.partial(RemoteEnv, ...)``; a live instance does not: make
        the env in the process that uses it.  A forked child's copy reaches the
        same instance over its own connection, and only the process that made
        the env closes the instance.
        """

        metadata = {"render_modes": ["human", "rgb_array", "ansi"]}  # what gymnasium.make checks; instances know theirs

        def __init__(self, remote_base: str, env_id: str, *, token: str | None = None, timeout: float = 60.0,
                     spin_us: int = 1000, render_mode: str | None = None, **make_kwargs: Any):
            kwargs = dict(make_kwargs)
            if render_mode is not None:
                kwargs["render_mode"] = "rgb_array" if render_mode == "human" else render_mode
            details = self._attach(remote_base, env_id, token, timeout, spin_us, kwargs=kwargs or None)
            self.action_space = space_from_description(self._client.env_action_space_info(self.instance_id))
            self.observation_space = space_from_description(self._client.env_observation_space_info(self.instance_id))
            self.render_mode = render_mode
            fps = details["metadata"].get("render_fps")
            modes = [m for m in details["metadata"]["render_modes"] if m != "human"]
            if "rgb_array" in modes:
                modes.append("human")  # shown here, from the server's rgb_array frames
            self.metadata = {"render_modes": modes, "render_fps": fps}
            self._window = _Window(fps) if render_mode == "human" else None
            spec_kwargs = {**connection_kwargs(remote_base, token, timeout, spin_us), "env_id": env_id, **make_kwargs}
            if render_mode is not None:
                spec_kwargs["render_mode"] = render_mode
            self.spec = make_spec(env_id, details, spec_kwargs)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            """Reset the remote env: ``(observation, info)``."""
            super().reset(seed=seed)
            observation, info = self._client.reset(self._id(), seed=seed, options=options)
            if self._window is not None:
                self._window.show(decode_png(self._client.env_render(self._id())))
            return _from_wire(self.observation_space, observation), info

        def step(self, action: Any) -> tuple:
            """Step the remote env: ``(observation, reward, terminated, truncated, info)``."""
            reply = self._client._step(self._id(), _to_wire(action), False)
            if self._window is not None:
                self._window.show(decode_png(self._client.env_render(self._id())))
            return (_from_wire(self.observation_space, reply["observation"]), float(reply["reward"]),
                    bool(reply["terminated"]), bool(reply["truncated"]), reply["info"])

        def render(self) -> Any:
            """The remote env's frame: an ``rgb_array`` as a uint8 array, ``ansi``
            as text; None without a render mode or before the first reset, and
            in ``human`` mode, whose frames show at each reset and step."""
            if self.render_mode is None:
                gymnasium.logger.warn("RemoteEnv.render() without a render_mode: pass render_mode='rgb_array' when creating it")
                return None
            if self.render_mode == "human":
                return None
            try:
                frame = self._client.env_render(self._id())
            except ServerError as exc:
                if exc.status_code == 409:  # not reset yet: a local env gives None too
                    return None
                raise
            return decode_png(frame) if isinstance(frame, bytes) else frame

        def close(self) -> None:
            """Close the remote instance (twice is fine), and the window."""
            if self._window is not None:
                self._window.close()
            self._detach()

        def __repr__(self) -> str:
            return f"<RemoteEnv {self.spec.kwargs['env_id'] if self.spec else '?'} {self.instance_id} at {self.remote_base}>"

    class RemoteVectorEnv(_Remote, gymnasium.vector.VectorEnv):
        """A ``gymnasium.vector.VectorEnv`` backed by one vector instance on a
        gymhttp server: ``num_envs`` sub-envs stepped in one round trip, arrays
        in base64.

            envs = RemoteVectorEnv("http://127.0.0.1:5000", "CartPole-v1", 8)
            observations, infos = envs.reset(seed=0)
            observations, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())

        Keyword arguments are those of ``gymnasium.make_vec``
        (``vectorization_mode``, ``vector_kwargs``, and the env's own), plus
        ``token``, ``timeout`` and ``spin_us``.  Spaces, dtypes, the autoreset
        mode and infos are those of a local ``make_vec`` with the same
        arguments, and so are trajectories, step for step.
        """

        def __init__(self, remote_base: str, env_id: str, num_envs: int = 1, *, vectorization_mode: str | None = None,
                     vector_kwargs: dict | None = None, token: str | None = None, timeout: float = 60.0,
                     spin_us: int = 1000, **make_kwargs: Any):
            if num_envs < 2:
                raise ValueError(f"RemoteVectorEnv needs num_envs of 2 or more, not {num_envs}; use RemoteEnv for one env")
            details = self._attach(remote_base, env_id, token, timeout, spin_us, kwargs=make_kwargs or None,
                                   num_envs=num_envs, vectorization_mode=vectorization_mode, vector_kwargs=vector_kwargs or None)
            actions = self._client._get_request(f"/v1/envs/{self.instance_id}/action_space/")
            observations = self._client._get_request(f"/v1/envs/{self.instance_id}/observation_space/")
            self.num_envs = num_envs
            self.action_space = space_from_description(actions["info"])
            self.single_action_space = space_from_description(actions["single_info"])
            self.observation_space = space_from_description(observations["info"])
            self.single_observation_space = space_from_description(observations["single_info"])
            self.render_mode = details["render_mode"]
            metadata = details["metadata"]
            self.metadata = {"render_modes": metadata["render_modes"], "render_fps": metadata.get("render_fps"),
                             "autoreset_mode": gymnasium.vector.AutoresetMode(metadata["autoreset_mode"])}
            self.spec = make_spec(env_id, details, {**connection_kwargs(remote_base, token, timeout, spin_us),
                                                    "env_id": env_id, **make_kwargs})
            self.closed = False

        def reset(self, *, seed: int | list | None = None, options: dict | None = None) -> tuple:
            """Reset every sub-env (or those in ``options["reset_mask"]``)."""
            if isinstance(seed, np.ndarray):
                seed = seed.tolist()
            if options and "reset_mask" in options:
                options = dict(options, reset_mask=np.asarray(options["reset_mask"], dtype=bool).tolist())
            observations, infos = self._client.reset(self._id(), seed=seed, options=options)
            return _from_wire(self.observation_space, observations), _vector_info(infos, self.num_envs, self.single_observation_space)

        def step(self, actions: Any) -> tuple:
            """One step of every sub-env, in one round trip."""
            if isinstance(actions, np.ndarray):
                actions = encode_array(np.ascontiguousarray(actions, dtype=self.action_space.dtype)
                                       if getattr(self.action_space, "dtype", None) is not None else actions)
            else:
                actions = _to_wire(actions)
            reply = self._client._step(self._id(), actions, False)
            return (_from_wire(self.observation_space, reply["observation"]), np.asarray(reply["reward"]),
                    np.asarray(reply["terminated"], dtype=bool), np.asarray(reply["truncated"], dtype=bool),
                    _vector_info(reply["info"], self.num_envs, self.single_observation_space))

        def render(self) -> tuple | None:
            """Each sub-env's frame, as a tuple (None without a render mode)."""
            if self.render_mode is None:
                return None
            frames = [self._client.env_render(self._id(), index=k) for k in range(self.num_envs)]
            return tuple(decode_png(f) if isinstance(f, bytes) else f for f in frames)

        def close_extras(self, **kwargs: Any) -> None:
            self._detach()

        def __repr__(self) -> str:
            return f"<RemoteVectorEnv {self.spec.kwargs['env_id']} x{self.num_envs} {self.instance_id} at {self.remote_base}>"

    classes = {"RemoteEnv": RemoteEnv, "RemoteVectorEnv": RemoteVectorEnv}
    for name, cls in classes.items():  # pickle finds them as client.RemoteEnv, through __getattr__ below
        cls.__module__, cls.__qualname__ = __name__, name
    return classes


def __getattr__(name: str) -> Any:
    if name in ("RemoteEnv", "RemoteVectorEnv"):  # built on first use: they import gymnasium and numpy
        globals().update(_build_remote_classes())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
