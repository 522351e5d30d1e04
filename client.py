"""Python client for gymhttp (and the original gym-http-api).

Standard library only.  ``Client`` keeps the original client's class, method
names and return shapes, so code written for openai/gym-http-api runs
unchanged; ``reset``/``step`` give the Gymnasium shapes.

    from client import Client
    with Client("http://127.0.0.1:5000") as c:
        env = c.env_create("CartPole-v1", seed=0)
        observation, info = c.reset(env)
        observation, reward, terminated, truncated, info = c.step(env, 0)

License: MIT.
"""

from __future__ import annotations

import array
import base64
import binascii
import json
import os
import select
import socket
import struct
import sys
from typing import Any
from urllib.parse import quote, urlsplit

__all__ = ["Client", "ServerError", "Envelope", "decode_envelopes", "encode_array"]

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
    return _envelope_to_value(obj) if ENVELOPE in obj else obj


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


class _Connection:
    """One persistent HTTP/1.1 connection, lean on purpose.

    ``http.client`` parses every response's headers with the email package;
    a step's round trip is short enough that this shows.  This reads just the
    status line, the headers it needs and the body.
    """

    def __init__(self, host: str, port: int, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=65536)

    def usable(self) -> bool:
        """False when the server closed this connection while it sat idle.

        Checked before a request is sent, so that no request is sent twice:
        an idle connection has nothing to read unless the server closed it.
        """
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, method: str) -> tuple[int, str, bytes, bool]:
        """(status, reason, body, keep-alive) of the next response."""
        rfile = self.rfile
        line = rfile.readline(65537)
        if not line:
            raise ConnectionError("connection closed")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        length, chunked, keep = None, False, version == "HTTP/1.1"
        while True:
            line = rfile.readline(65537)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise ConnectionError("connection closed in the headers")
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                token = value.strip().lower()
                keep = token != b"close" if version == "HTTP/1.1" else token == b"keep-alive"
            elif name == b"transfer-encoding":
                chunked = value.strip().lower() == b"chunked"
        if status == 100:
            return self.read_response(method)
        if method == "HEAD" or status in (204, 304):
            return status, reason, b"", keep
        if chunked:
            parts = []
            while True:
                size = int(rfile.readline(65537).split(b";")[0], 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(rfile.read(size))
                rfile.readline(3)
            return status, reason, b"".join(parts), keep
        if length is None:
            return status, reason, rfile.read(), False
        body = rfile.read(length)
        if len(body) < length:
            raise ConnectionError("connection closed in the body")
        return status, reason, body, keep

    def close(self) -> None:
        try:
            self.rfile.close()
        finally:
            self.sock.close()


# -- the client ---------------------------------------------------------------


class Client:
    """A client of one gymhttp server over one persistent HTTP/1.1 connection.

    ``remote_base`` is the server's URL, e.g. ``http://127.0.0.1:5000``.
    ``token`` (or ``$GYMHTTP_TOKEN``) is sent as ``Authorization: Bearer``.
    Use it as a context manager, or call ``close()``.  Not thread-safe: give
    each thread its own Client.
    """

    def __init__(self, remote_base: str = "http://127.0.0.1:5000", *, token: str | None = None, timeout: float = 60.0):
        self.remote_base = remote_base.rstrip("/")
        parts = urlsplit(self.remote_base if "//" in self.remote_base else "http://" + self.remote_base)
        if parts.scheme not in ("http", ""):
            raise ValueError(f"only http:// URLs are supported, not {remote_base!r}")
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        token = token if token is not None else os.environ.get("GYMHTTP_TOKEN")
        host_header = self._host if parts.port is None else f"{self._host}:{self._port}"
        if ":" in self._host:
            host_header = f"[{self._host}]:{self._port}"
        self._head = f"Host: {host_header}\r\nContent-Type: application/json\r\n"
        if token:
            self._head += f"Authorization: Bearer {token}\r\n"
        self._conn: _Connection | None = None

    # -- plumbing ------------------------------------------------------------

    def _request(self, method: str, route: str, data: Any = _NO_BODY, _retry: bool = True) -> Any:
        """Send one request; return the decoded JSON reply (None for 204).

        Raises ServerError for an error reply, ConnectionError when the server
        cannot be reached or drops the connection before answering.
        """
        if data is _NO_BODY:
            body = b""
        elif type(data) is bytes:
            body = data  # already JSON
        else:
            body = _dumps(data).encode()
        head = (
            f"{method} {self._prefix}{route} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
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
                return self._request(method, route, data, _retry=False)
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
        try:
            # Envelopes are decoded while parsing, not in a second walk.
            reply = json.loads(raw, object_hook=_envelope_hook) if b'"__ndarray__"' in raw else json.loads(raw)
        except ValueError:
            if status >= 400:
                raise ServerError(raw.decode("utf-8", "replace")[:500], status) from None
            raise
        if status >= 400:
            message = reply.get("message", reason) if isinstance(reply, dict) else reason
            raise ServerError(message, status)
        return reply

    def _open(self) -> _Connection:
        self._drop()
        try:
            self._conn = _Connection(self._host, self._port, self.timeout)
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
        if type(action) is Envelope:
            data: Any = b'{"action":' + action.json + (b',"render":true}' if render else b"}")
        else:
            data = {"action": action, "render": True} if render else {"action": action}
        return self._post_request(f"/v1/envs/{quote(instance_id, safe='')}/step/", data)
