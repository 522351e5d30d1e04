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
import copy
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
            return known.copy() if shape else known
    raw = binascii.a2b_base64(text)
    if numpy is not None:
        dtypes = _WIRE_DTYPES.get(dtype)
        if dtypes is None:
            native = numpy.dtype(dtype)
            dtypes = _WIRE_DTYPES[dtype] = (native.newbyteorder("<"), native)
        # A writable array in native byte order, like any other observation.
        value = numpy.frombuffer(raw, dtype=dtypes[0]).astype(dtypes[1]).reshape(shape)
        if not shape:  # a numpy scalar (typed instances send them so), immutable like any scalar
            value = value[()]
        if small:
            if len(_SMALL) >= 256:
                _SMALL.clear()
            _SMALL[key] = value.copy() if shape else value
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
        # recv() into one reused buffer: sock.recv(n) allocates n bytes a call, and past glibc's mmap
        # threshold (128 KiB) that is an mmap and munmap, some 15 us, for a reply of 200 bytes.
        self._chunk = memoryview(bytearray(262144))
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
                n = self.sock.recv_into(self._chunk)
            except BlockingIOError:
                if not self._poll(self.timeout * 1000):
                    raise TimeoutError(f"no reply within {self.timeout:g} s") from None
                continue
            if not n:
                raise ConnectionError("connection closed")
            self._buffer += self._chunk[:n]
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
        wrappers: list | None = None,
    ) -> str:
        """Create an instance of ``env_id``; returns its instance id.

        ``kwargs`` go to ``gymnasium.make``; ``num_envs`` > 1 makes a vector
        instance; ``encoding="base64"`` sends arrays as base64 envelopes
        (``"typed"``: numpy scalars too).  ``wrappers`` are applied on the
        server, in order: wrapper specs ``{"name", "entry_point", "kwargs"}``
        (Gymnasium's ``WrapperSpec`` objects are taken too) or bare names of
        ``gymnasium.wrappers``.
        """
        data: dict[str, Any] = {"env_id": env_id}
        if wrappers is not None:
            wrappers = [_wrapper_spec(w) for w in wrappers]
        for name, value in (("seed", seed), ("kwargs", kwargs), ("num_envs", num_envs), ("encoding", encoding),
                            ("vectorization_mode", vectorization_mode), ("vector_kwargs", vector_kwargs),
                            ("wrappers", wrappers)):
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

    def env_action_space_info(self, instance_id: str, compact: bool = False) -> dict:
        """The action space's description (``name``, ``n``, ``shape``...);
        with ``compact``, a Box bound whose elements are all equal is one number."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/{'?compact=true' if compact else ''}")["info"]

    def env_action_space_sample(self, instance_id: str) -> Any:
        """A random action from the server's action space."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/sample")["action"]

    def env_action_space_contains(self, instance_id: str, x: Any) -> bool:
        """Whether ``x`` is in the action space."""
        encoded = quote(_dumps(x), safe="")
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/action_space/contains/{encoded}")["member"]

    def env_observation_space_info(self, instance_id: str, compact: bool = False) -> dict:
        """The observation space's description (``compact``: see :meth:`env_action_space_info`)."""
        return self._get_request(f"/v1/envs/{quote(instance_id, safe='')}/observation_space/{'?compact=true' if compact else ''}")["info"]

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
        if body.startswith(b"\x89PNG"):
            return body
        if self._conn is not None and self._conn.content_type.startswith("application/json"):
            # depth_array, rgbd_tuple and the like: arrays in envelopes
            return json.loads(body, object_hook=_envelope_hook)["frame"]
        return body.decode("utf-8")

    def space_sample(self, instance_id: str, space: str = "action", path: list | tuple = (), *, seed: int | None = None) -> Any:
        """A sample of one of the instance's spaces ("action", "observation",
        "single_action", "single_observation"), or of the part of it that
        ``path`` leads to (Dict keys, Tuple indices), seeded first with ``seed``."""
        data: dict[str, Any] = {"space": space, "path": list(path)}
        if seed is not None:
            data["seed"] = seed
        return self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/spaces/sample", data)["value"]

    def space_contains(self, instance_id: str, value: Any, space: str = "action", path: list | tuple = ()) -> bool:
        """Whether ``value`` is in one of the instance's spaces, or a part of it
        (see :meth:`space_sample`), as the server's own space says."""
        data = {"space": space, "path": list(path), "value": _to_wire(value)}
        return self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/spaces/contains", data)["member"]

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


def _wrapper_spec(wrapper: Any) -> Any:
    """A wrapper as a create's ``wrappers`` lists it: a name or a spec dict as
    it is; Gymnasium's ``WrapperSpec`` (or a wrapper class) as the spec dict."""
    if isinstance(wrapper, (str, dict)):
        return wrapper
    if isinstance(wrapper, type):
        return {"name": wrapper.__name__, "entry_point": f"{wrapper.__module__}:{wrapper.__qualname__}"}
    if hasattr(wrapper, "entry_point") and hasattr(wrapper, "name"):  # a WrapperSpec
        spec = {"name": wrapper.name, "entry_point": wrapper.entry_point}
        if getattr(wrapper, "kwargs", None):
            spec["kwargs"] = dict(wrapper.kwargs)
        return spec
    raise TypeError(f"a wrapper must be a name, a dict like {{'name': 'FlattenObservation', 'kwargs': {{}}}}, "
                    f"a gymnasium WrapperSpec or a wrapper class, not {wrapper!r}")


class SpaceLink:
    """Where a rebuilt space lives on the server: a client, an instance, which
    of its spaces ("action", "observation", "single_..."), and the path of
    Dict keys and Tuple indices down to it.  A :class:`RemoteSpace` asks the
    server through it what it cannot tell itself."""

    __slots__ = ("client", "instance_id", "space", "path", "typed")

    def __init__(self, client: Client, instance_id: str, space: str, path: tuple = (), typed: bool = False):
        self.client, self.instance_id, self.space, self.path = client, instance_id, space, tuple(path)
        self.typed = typed  # the instance sends values with their types (encoding "typed")

    def child(self, step: Any) -> SpaceLink:
        return SpaceLink(self.client, self.instance_id, self.space, self.path + (step,), self.typed)


def space_from_description(info: dict, link: SpaceLink | None = None) -> Any:
    """Rebuild a ``gymnasium.spaces`` space from the server's description
    (``GET .../action_space/``), equal to the space the server holds.

    Box bounds of +-1e100 or beyond are infinities (the wire cannot carry
    them), and a bound may be one number for all elements (``?compact=true``).
    A space of a kind Gymnasium does not ship (a custom ``Space`` subclass,
    MiniGrid's ``MissionSpace``) becomes a :class:`RemoteSpace`, which asks
    the server through ``link`` what it cannot tell from the description.
    """
    import numpy as np
    from gymnasium import spaces

    def part(description: dict, step: Any) -> Any:
        return space_from_description(description, link.child(step) if link is not None else None)

    # A subclass of one of Gymnasium's kinds is named by that kind (its "class" says which): rebuilt as that kind.
    kind = info.get("name")
    if kind == "Discrete":
        return spaces.Discrete(info["n"], start=info.get("start", 0), dtype=np.dtype(info.get("dtype", "int64")))
    if kind == "Box":
        dtype = np.dtype(info["dtype"])
        shape = tuple(info["shape"])

        def bound(value: Any) -> Any:
            array = np.array(value)
            array = np.full(shape, array) if array.ndim == 0 else array.reshape(shape)
            if dtype.kind == "f":
                array = np.where(array >= 1e100, np.inf, np.where(array <= -1e100, -np.inf, array))
            return array.astype(dtype)

        return spaces.Box(bound(info["low"]), bound(info["high"]), shape, dtype)
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(info["nvec"]), dtype=np.dtype(info.get("dtype", "int64")),
                                    start=np.array(info["start"]) if "start" in info else None)
    if kind == "MultiBinary":
        return spaces.MultiBinary(info["n"])
    if kind == "Tuple":
        return spaces.Tuple([part(s, k) for k, s in enumerate(info["spaces"])])
    if kind == "Dict":
        return spaces.Dict({k: part(s, k) for k, s in info["spaces"].items()})
    if kind == "Text":
        return spaces.Text(info["max_length"], min_length=info["min_length"], charset=info["charset"])
    if kind == "Sequence":
        return spaces.Sequence(part(info["feature_space"], "feature_space"), stack=info.get("stack", False))
    if kind == "Graph":
        edge = info.get("edge_space")
        return spaces.Graph(part(info["node_space"], "node_space"), part(edge, "edge_space") if edge else None)
    if kind == "OneOf":
        return spaces.OneOf([part(s, k) for k, s in enumerate(info["spaces"])])
    if "class" in info:
        return __getattr__("RemoteSpace")(info, link)
    raise ValueError(f"cannot rebuild a space named {kind!r} from {info!r}: it names no class; the server is older "
                     "than this client, or not gymhttp")


def _from_wire(space: Any, value: Any, typed: bool = False) -> Any:
    """A value of ``space`` as the server's env returned it: numpy arrays of
    the space's dtype and shape, numpy ints for Discrete, tuples for Tuple.
    ``typed``: the reply came from a typed instance, whose arrays and numpy
    scalars already have the env's own types, and whose Python numbers were
    Python numbers in the env too."""
    import numpy as np
    from gymnasium import spaces

    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        if typed and type(value) is np.ndarray:
            return value
        return np.array(value, dtype=space.dtype).reshape(space.shape)
    if isinstance(space, spaces.Discrete):
        return value if typed else space.dtype.type(value)
    if isinstance(space, spaces.Tuple):
        return tuple(_from_wire(s, v, typed) for s, v in zip(space.spaces, value))
    if isinstance(space, spaces.Dict):  # in the order the env gave the keys
        return {k: _from_wire(space.spaces[k], v, typed) for k, v in value.items()}
    if isinstance(space, spaces.Sequence):
        if space.stack:
            return _from_wire(space.stacked_feature_space, value, typed)
        return tuple(_from_wire(space.feature_space, v, typed) for v in value)
    if isinstance(space, spaces.OneOf):
        return (np.int64(value[0]), _from_wire(space.spaces[int(value[0])], value[1], typed))
    if isinstance(space, spaces.Graph):
        arrays = {k: None if value.get(k) is None else np.array(value[k]) for k in ("nodes", "edges", "edge_links")}
        return spaces.GraphInstance(**arrays)
    from_wire = getattr(space, "from_wire", None)  # a RemoteSpace
    return from_wire(value) if from_wire is not None and not typed else value


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


def _frame(mode: str | None, frame: Any) -> Any:
    """A frame from the render route as the env's render() returns it: PNG
    bytes decoded, a list (rgbd_tuple) a tuple again."""
    if isinstance(frame, bytes):
        return decode_png(frame)
    if isinstance(frame, list) and not (mode or "").endswith("_list"):
        return tuple(frame)
    return frame


def _vector_info(info: dict, n: int, single_observation_space: Any, typed: bool = False) -> dict:
    """A vector env's info as Gymnasium builds it, from its JSON: each
    sub-env's values as an array of n (arrays that came as envelopes keep
    their dtype; lists become bool, int64 or float64 as the values are, or
    objects), final observations decoded through the single space."""
    import numpy as np

    out: dict = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _vector_info(value, n, single_observation_space, typed)
        elif isinstance(value, list) and len(value) == n:
            if key == "final_obs":
                array = np.empty(n, dtype=object)
                array[:] = [None if v is None else _from_wire(single_observation_space, v, typed) for v in value]
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
            self._typed = True  # every value comes with its type (numpy scalars in envelopes too)
            try:
                try:
                    self.instance_id: str | None = self._client.env_create(env_id, encoding="typed", **create)
                except ServerError as exc:
                    if not (exc.status_code == 400 and "'encoding'" in exc.message):
                        raise
                    self._typed = False  # a server older than this client: arrays keep their types, scalars don't
                    self.instance_id = self._client.env_create(env_id, encoding="base64", **create)
            except BaseException:
                self._client.close()  # nothing was made; don't leave the connection behind
                raise
            self._finalizer = weakref.finalize(self, _close_remote, self._client, self.instance_id, os.getpid())
            self.remote_base = remote_base
            return self._client.env_details(self.instance_id)

        def _spaces(self, which: str, vector: bool) -> tuple:
            """A space of the instance (and its single-env space), rebuilt."""
            route = f"/v1/envs/{quote(self.instance_id, safe='')}/{which}_space/?compact=true"
            reply = self._client._get_request(route)
            space = space_from_description(reply["info"], SpaceLink(self._client, self.instance_id, which, (), self._typed))
            if not vector:
                return space, None
            single = SpaceLink(self._client, self.instance_id, f"single_{which}", (), self._typed)
            return space, space_from_description(reply["single_info"], single)

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

        # What gymnasium.make checks (instances know theirs): every mode the server sends.  The _list modes are
        # left to make, which collects them here with RenderCollection instead of sending every frame each time.
        metadata = {"render_modes": ["human", "rgb_array", "ansi", "depth_array", "rgbd_tuple"]}

        def __init__(self, remote_base: str, env_id: str, *, token: str | None = None, timeout: float = 60.0,
                     spin_us: int = 1000, render_mode: str | None = None, wrappers: list | None = None,
                     **make_kwargs: Any):
            kwargs = dict(make_kwargs)
            if render_mode is not None:
                kwargs["render_mode"] = "rgb_array" if render_mode == "human" else render_mode
            wrappers = [_wrapper_spec(w) for w in wrappers] if wrappers else None
            details = self._attach(remote_base, env_id, token, timeout, spin_us, kwargs=kwargs or None, wrappers=wrappers)
            self.action_space = self._spaces("action", False)[0]
            self.observation_space = self._spaces("observation", False)[0]
            self.render_mode = render_mode
            fps = details["metadata"].get("render_fps")
            # Every mode the server's env has, which it sends (PNG, text, or arrays), but "human": its window
            # would open on the server.  That one is shown here instead, from the server's rgb_array frames.
            modes = [m for m in details["metadata"]["render_modes"] if m != "human"]
            if "rgb_array" in modes:
                modes.append("human")
            self.metadata = {"render_modes": modes, "render_fps": fps}
            self._window = _Window(fps) if render_mode == "human" else None
            spec_kwargs = {**connection_kwargs(remote_base, token, timeout, spin_us), "env_id": env_id, **make_kwargs}
            if render_mode is not None:
                spec_kwargs["render_mode"] = render_mode
            if wrappers:
                spec_kwargs["wrappers"] = wrappers
            self.spec = make_spec(env_id, details, spec_kwargs)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            """Reset the remote env: ``(observation, info)``."""
            super().reset(seed=seed)
            observation, info = self._client.reset(self._id(), seed=seed, options=options)
            if self._window is not None:
                self._window.show(decode_png(self._client.env_render(self._id())))
            return _from_wire(self.observation_space, observation, self._typed), info

        def step(self, action: Any) -> tuple:
            """Step the remote env: ``(observation, reward, terminated, truncated, info)``."""
            reply = self._client._step(self._id(), _to_wire(action), False)
            if self._window is not None:
                self._window.show(decode_png(self._client.env_render(self._id())))
            reward = reply["reward"]
            if not self._typed or type(reward) is str:  # "NaN" and the infinities travel as strings
                reward = float(reward)
            return (_from_wire(self.observation_space, reply["observation"], self._typed), reward,
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
            return _frame(self.render_mode, frame)

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
                     vector_kwargs: dict | None = None, wrappers: list | None = None, token: str | None = None,
                     timeout: float = 60.0, spin_us: int = 1000, **make_kwargs: Any):
            if num_envs < 2:
                raise ValueError(f"RemoteVectorEnv needs num_envs of 2 or more, not {num_envs}; use RemoteEnv for one env")
            wrappers = [_wrapper_spec(w) for w in wrappers] if wrappers else None
            details = self._attach(remote_base, env_id, token, timeout, spin_us, kwargs=make_kwargs or None,
                                   num_envs=num_envs, vectorization_mode=vectorization_mode, vector_kwargs=vector_kwargs or None,
                                   wrappers=wrappers)
            self.num_envs = num_envs
            self.action_space, self.single_action_space = self._spaces("action", True)
            self.observation_space, self.single_observation_space = self._spaces("observation", True)
            self.render_mode = details["render_mode"]
            metadata = details["metadata"]
            self.metadata = {"render_modes": metadata["render_modes"], "render_fps": metadata.get("render_fps"),
                             "autoreset_mode": gymnasium.vector.AutoresetMode(metadata["autoreset_mode"])}
            spec_kwargs = {**connection_kwargs(remote_base, token, timeout, spin_us), "env_id": env_id, **make_kwargs}
            if wrappers:
                spec_kwargs["wrappers"] = wrappers
            self.spec = make_spec(env_id, details, spec_kwargs)
            self.closed = False

        def reset(self, *, seed: int | list | None = None, options: dict | None = None) -> tuple:
            """Reset every sub-env (or those in ``options["reset_mask"]``)."""
            if isinstance(seed, np.ndarray):
                seed = seed.tolist()
            if options and "reset_mask" in options:
                options = dict(options, reset_mask=np.asarray(options["reset_mask"], dtype=bool).tolist())
            observations, infos = self._client.reset(self._id(), seed=seed, options=options)
            return (_from_wire(self.observation_space, observations, self._typed),
                    _vector_info(infos, self.num_envs, self.single_observation_space, self._typed))

        def step(self, actions: Any) -> tuple:
            """One step of every sub-env, in one round trip."""
            if isinstance(actions, np.ndarray) and getattr(self.action_space, "dtype", None) is not None:
                actions = encode_array(np.ascontiguousarray(actions, dtype=self.action_space.dtype))
            elif isinstance(actions, np.ndarray):  # one action per sub-env of a space with no dtype (a Tuple)
                actions = _to_wire(list(actions))
            else:
                actions = _to_wire(actions)
            reply = self._client._step(self._id(), actions, False)
            return (_from_wire(self.observation_space, reply["observation"], self._typed), np.asarray(reply["reward"]),
                    np.asarray(reply["terminated"], dtype=bool), np.asarray(reply["truncated"], dtype=bool),
                    _vector_info(reply["info"], self.num_envs, self.single_observation_space, self._typed))

        def render(self) -> tuple | None:
            """Each sub-env's frame, as a tuple (None without a render mode)."""
            if self.render_mode is None:
                return None
            frames = [self._client.env_render(self._id(), index=k) for k in range(self.num_envs)]
            return tuple(_frame(self.render_mode, f) for f in frames)

        def close_extras(self, **kwargs: Any) -> None:
            self._detach()

        def __repr__(self) -> str:
            return f"<RemoteVectorEnv {self.spec.kwargs['env_id']} x{self.num_envs} {self.instance_id} at {self.remote_base}>"

    class RemoteSpace(gymnasium.spaces.Space):
        """A space of a kind Gymnasium does not ship (a custom ``Space``
        subclass, MiniGrid's ``MissionSpace``), rebuilt from the server's
        description of it: ``class_path`` names its class, ``description``
        holds the rest (``shape``, ``dtype``, an ``example`` value, plain
        ``attributes``).

        ``contains`` answers locally where it can tell (a value of another
        type or shape than the example is not a member) and asks the server's
        own space otherwise; ``sample`` asks the server, and ``seed`` seeds the
        server's space for the next sample, as it would seed a local env's.
        A copy that left its process (pickled) has no server to ask: it
        samples the example and judges by type and shape alone.
        """

        def __init__(self, description: dict, link: SpaceLink | None = None):
            self.description = description
            self.class_path = description.get("class")
            try:
                dtype = np.dtype(description["dtype"]) if description.get("dtype") else None
            except TypeError:
                dtype = None
            shape = description.get("shape")
            super().__init__(tuple(shape) if shape is not None else None, dtype)
            self._link = link
            self._seed: int | None = None
            self._members: dict[str, bool] = {}  # the server's verdicts, by the value's JSON

        def from_wire(self, value: Any) -> Any:
            """A value as the env gave it: an array of the space's dtype and
            shape where the space has them, else the value as it came."""
            if self.dtype is not None and self.dtype.kind in "biuf" and self._shape is not None:
                return np.asarray(value, dtype=self.dtype).reshape(self._shape)
            return value

        @property
        def is_np_flattenable(self) -> bool:
            return False

        def seed(self, seed: int | None = None) -> list:
            """Seed the server's space for the next :meth:`sample`."""
            self._seed = seed
            return [seed]

        def sample(self, mask: Any = None, probability: Any = None) -> Any:
            """A sample of the server's space (of the example, without a server)."""
            if mask is not None or probability is not None:
                raise NotImplementedError(f"{self!r} samples on the server, which takes no mask or probability")
            if self._link is None:
                if "example" not in self.description:
                    raise NotImplementedError(f"{self!r} has no server to sample from and no example")
                return self.from_wire(copy.deepcopy(self.description["example"]))
            link, seed, self._seed = self._link, self._seed, None
            value = link.client.space_sample(link.instance_id, link.space, link.path, seed=seed)
            return value if link.typed else self.from_wire(value)

        def contains(self, x: Any) -> bool:
            """Whether ``x`` is a member, as the server's space says."""
            example = self.description.get("example", _NO_BODY)
            if example is not _NO_BODY and isinstance(example, str) != isinstance(x, str):
                return False
            if self._shape is not None and self.dtype is not None and self.dtype.kind in "biuf":
                if np.shape(x) != self._shape:
                    return False
            if self._link is None:
                return True  # nothing more can be told here
            key = _dumps(_to_wire(x))
            member = self._members.get(key)
            if member is None:
                link = self._link
                member = link.client.space_contains(link.instance_id, x, link.space, link.path)
                if len(self._members) < 1024:
                    self._members[key] = member
            return member

        def __eq__(self, other: Any) -> bool:
            return isinstance(other, RemoteSpace) and other.description == self.description

        def __repr__(self) -> str:
            return f"RemoteSpace({self.class_path})"

        def __deepcopy__(self, memo: dict) -> RemoteSpace:
            # One server space: a copy (batch_space makes them) asks the same one.
            return RemoteSpace(copy.deepcopy(self.description, memo), self._link)

        def __getstate__(self) -> dict:
            state = dict(self.__dict__)
            state["_link"] = None  # a connection does not travel
            return state

    classes = {"RemoteEnv": RemoteEnv, "RemoteVectorEnv": RemoteVectorEnv, "RemoteSpace": RemoteSpace}
    for name, cls in classes.items():  # pickle finds them as client.RemoteEnv, through __getattr__ below
        cls.__module__, cls.__qualname__ = __name__, name
    return classes


def __getattr__(name: str) -> Any:
    if name in ("RemoteEnv", "RemoteVectorEnv", "RemoteSpace"):  # built on first use: they import gymnasium and numpy
        globals().update(_build_remote_classes())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
