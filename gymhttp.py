"""gymhttp: an HTTP server for Gymnasium reinforcement-learning environments.

Programs in any language create, reset and step Gymnasium environments over
plain JSON.  It keeps the v1 API of openai/gym-http-api, so existing clients
work unchanged, and runs on today's Gymnasium and numpy.

This is one file that you can copy into a project: standard library +
gymnasium + numpy, nothing else.  By default each instance runs in a process
of its own (see "Instance processes" below), so that an env that crashes,
hangs or leaks stays with its instance and envs step on every core; a
client stepping one instance is answered by that process directly.

    python gymhttp.py --port 5000

then open http://127.0.0.1:5000/ for a live dashboard of the instances, or
GET /v1/openapi.json for the API's OpenAPI 3.1 description.  The details
are in the project's docs/: server.md (the command line), api.md (every
route), isolation.md, performance.md, security.md, cluster.md, suites.md.

License: MIT (see LICENSE).
"""

# ---------------------------------------------------------------------------
# Imports
# ---------------------------------------------------------------------------

from __future__ import annotations

import argparse
import ast
import binascii
import collections
import contextlib
import copy
import difflib
import errno
import faulthandler
import functools
import gc
import hmac
import http.client
import importlib
import importlib.util
import io
import ipaddress
import itertools
import json
import logging
import math
import mmap
import os
import pickle
import queue
import re
import secrets
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

# Envs that render use pygame: keep its greeting off stdout, and on a machine
# with no display let SDL draw off-screen instead of complaining on stderr.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

try:
    import gymnasium
    import numpy as np
    from gymnasium import spaces
except ImportError as exc:  # run as a script without its two dependencies: say so in one line
    if __name__ != "__main__":
        raise
    print(f"gymhttp: {exc}; install its dependencies with: pip install -r requirements.txt", file=sys.stderr)
    sys.exit(2)

__version__ = "1.1.0"
__all__ = ["GymHTTPServer", "HTTPError", "make_server", "serve", "run", "main", "__version__"]

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_MAX_ENVS = 1024
DEFAULT_MAX_BODY = 16 * 1024 * 1024  # a 1024-env step of 84x84x3 actions still fits
DEFAULT_TIMEOUT = 120.0  # seconds a connection may sit idle or stall
# Microseconds to busy-poll for the next request of a client that steps fast.
# A core that blocks goes idle, and waking an idle core costs tens of
# microseconds (far more on a VM) per request.
DEFAULT_SPIN_US = 500
SOLE_SECONDS = 0.1  # a connection is polled for once it has been the only one sending POSTs this long
HANDOFF_AFTER = 2  # steps or resets in a row for one instance: then its process takes the connection over
REPORT_SECONDS = 0.05  # how often an instance process reports what it did on the connections it owns
WORKERS_RELIST = 2.0  # seconds between listings of an async vector's workers, for --max-env-memory
OWNED_REPORT_WAIT = 0.5  # seconds a look at an instance waits for its process to hand its connections back
# The OS preempting a spinning thread often means other processes need the
# core (see _spin_for_request); a thread with a core to itself is preempted
# in about 1 of 3,000 spins, by timers and daemons.
SPIN_SAMPLE = 256  # spins per verdict
SPIN_PREEMPTED_MAX = 4  # more preemptions than this in a sample: the cores are contended
SPIN_BACKOFF = 1.0  # seconds without spinning after that, doubling while it recurs
SPIN_BACKOFF_MAX = 30.0
MAX_SPIN_US = 100_000  # longer polling would only burn CPU: that client is not fast
MAX_NUM_ENVS = 4096  # sub-environments in one vector instance
MAX_WRAPPERS = 64  # wrappers one create may apply
# Each instance in a process of its own where the OS can fork one; else threads.
DEFAULT_ISOLATION = "process" if hasattr(os, "fork") and hasattr(socket, "send_fds") else "thread"
DEFAULT_DRAIN = 30.0  # seconds a shutdown waits for requests in flight before it kills what still runs
CLOSE_SECONDS = 5.0  # at shutdown, after the drain: time to close every env
CLOSE_WAIT = 1.0  # close of an instance stuck in a call: wait this long, then kill it
MONITOR_FLUSH = 0.5  # seconds between flushes of monitors with new episodes
MONITOR_PART = 10_000  # episodes per stats file: a flush's cost, and a monitor's memory, never grow past one's
MEMORY_POLL = 0.05  # seconds between RSS checks of instance processes in a call (--max-env-memory)
PEER_TIMEOUT = 2.0  # seconds a node waits for a peer's list (--peers)
MAX_REQUEST_LINE = 8192
MAX_HEADER_LINE = 8192
MAX_HEADERS = 100
MAX_ECHO = 200  # characters of a client's value quoted back in a message
MAX_JSON_DEPTH = 64  # arrays and objects nested in a request: deeper would recurse (pickling, encoding, envs)
MAX_PATH_LENGTH = 4096  # characters of a monitor directory's path, as Linux's PATH_MAX has bytes
MAX_PATH_PARTS = 128  # its slashes: os.makedirs recurses once per missing component
INFINITY_BOUND = 1e100  # how infinite Box bounds travel, as the original did
ID_LENGTH = 8
ENCODINGS = ("list", "base64", "typed")  # how an instance sends values (see "JSON encoding" below)
MAX_DESCRIBED = 65536  # characters of an unknown space's example and attributes, each, in its description
RECENT_EPISODES = 100
JSON_TYPE = "application/json"
PNG_TYPE = "image/png"
TEXT_TYPE = "text/plain; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
PUBLIC_PATHS = frozenset({"/", "/v1/openapi.json"})  # static documents, served without the token


def default_max_connections() -> int:
    """Half the open files this process may have (each connection takes one,
    and instance processes take one each), between 16 and 4096."""
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        return 512
    if limit == getattr(resource, "RLIM_INFINITY", -1):
        return 4096
    return max(16, min(4096, (limit - 64) // 2))


def default_max_env_memory() -> int:
    """Half the machine's physical memory, in MiB: what one instance process
    may hold by default (--max-env-memory), so that no one request can take
    the machine's memory."""
    try:
        return max(64, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 21)
    except (AttributeError, ValueError, OSError):
        return 4096


def default_max_processes() -> int:
    """One process (instance or async worker) per 32 MiB of the machine's
    memory, between 64 and 4096."""
    try:
        mib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (AttributeError, ValueError, OSError):
        return 256
    return max(64, min(4096, mib // 32))


_MISSING = object()  # "no such value", where None is a value

# MuJoCo renders through OpenGL, and with no display its default (GLFW)
# cannot make a context: a frame then fails with "an OpenGL platform library
# has not been loaded".  These render without one, best first.
HEADLESS_GL = ("egl", "osmesa")
_GL_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"
headless_gl: str | None = None  # what pick_headless_gl() chose, once it has


def pick_headless_gl() -> str | None:
    """On a machine with no display, where MuJoCo is installed and MUJOCO_GL
    is unset: set MUJOCO_GL (for this process and the instance processes it
    starts) to the first backend of HEADLESS_GL that makes an OpenGL context
    here, tried in a child process.  Returns it, or None when nothing was
    chosen.  Must run before mujoco is imported, which reads MUJOCO_GL once."""
    global headless_gl
    if headless_gl is not None or "MUJOCO_GL" in os.environ or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return headless_gl
    try:
        if importlib.util.find_spec("mujoco") is None:
            return None
    except (ImportError, ValueError):
        return None
    if "mujoco" in sys.modules:
        log.warning("mujoco was imported before the server could pick a headless OpenGL backend; start it with "
                    "MUJOCO_GL=egl (or osmesa) for MuJoCo frames")
        return None
    for backend in HEADLESS_GL:
        env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
        try:
            ok = subprocess.run([sys.executable, "-c", _GL_PROBE], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            os.environ["MUJOCO_GL"] = headless_gl = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    log.warning("no headless OpenGL backend (%s) works here: MuJoCo envs will step, but not render; install "
                "libegl1 or libosmesa6", ", ".join(HEADLESS_GL))
    return None

log = logging.getLogger("gymhttp")

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class HTTPError(Exception):
    """An error with an HTTP status; raise it anywhere, it becomes the reply.

    The body is always ``{"message": message}``.  ``headers`` are extra
    response headers (``Allow`` for 405, for instance).
    """

    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = HTTPStatus(status)
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> HTTPError:
    """The 400 that the v1 contract uses for every client mistake."""
    return HTTPError(HTTPStatus.BAD_REQUEST, message)


def short(value: Any) -> str:
    """``repr`` of a client's value, cut so that a message stays readable."""
    text = value if isinstance(value, str) else json_text(value)
    if len(text) > MAX_ECHO:
        text = text[:MAX_ECHO] + f"... ({len(text)} characters)"
    return text


def cut(text: str, limit: int = 2 * MAX_ECHO) -> str:
    """A message part cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def json_text(value: Any) -> str:
    """Render a decoded JSON value back as text for messages."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------
# JSON encoding of spaces and values
# ---------------------------------------------------------------------------
#
# Responses are encoded with allow_nan=False so that every reply is RFC 8259
# JSON.  The fast path hands plain lists to the C encoder; only when it
# refuses (a NaN, an odd key, an object JSON cannot hold) do we walk the value
# and replace what it choked on.  CartPole never pays for the slow path.

NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
ENVELOPE = "__ndarray__"
ENVELOPE_DTYPES = frozenset(
    "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split()
)


def safe_repr(value: Any) -> str:
    """``repr(value)``, or what stands for it where repr fails: the hex digits
    of an int too long to print in decimal, a note for a value nested too
    deeply or whose ``__repr__`` raises."""
    try:
        return repr(value)
    except Exception:  # ValueError (int too long), RecursionError, a broken __repr__
        if isinstance(value, int):
            return hex(value)
        return f"<{type(value).__name__} that cannot be shown>"


def _default(obj: Any) -> Any:
    """Hook for the JSON encoder: numpy values and anything else."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, spaces.GraphInstance):
        return {"nodes": obj.nodes, "edges": obj.edges, "edge_links": obj.edge_links}
    return safe_repr(obj)


_encode_fast = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_default).encode


def _float_text(x: float) -> Any:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _key(key: Any) -> str:
    """A dict key that is not a string, as a string."""
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, int) and key.bit_length() >= 14_000:
        return hex(key)
    try:
        return str(key)
    except Exception:
        return safe_repr(key)


def sanitize(value: Any, depth: int = 0, _inside: set | None = None) -> Any:
    """Make any value strict-JSON-safe: non-finite floats become the strings
    ``"NaN"``/``"Infinity"``/``"-Infinity"``, keys become strings, and what JSON
    cannot hold becomes its ``repr``: a container that holds itself, one
    nested past 64 levels, an int too long for decimal digits."""
    if depth > 64:
        return f"<{type(value).__name__} nested too deeply to send>" if isinstance(value, (dict, list, tuple)) else safe_repr(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):  # past Python's 4300 digits an int cannot be printed in decimal
        return value if value.bit_length() < 14_000 else safe_repr(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, (dict, list, tuple)):
        inside = set() if _inside is None else _inside  # the containers we are in: one seen again is a cycle
        if id(value) in inside:
            return safe_repr(value)
        inside.add(id(value))
        try:
            if isinstance(value, dict):
                return {(k if isinstance(k, str) else _key(k)): sanitize(v, depth + 1, inside) for k, v in value.items()}
            return [sanitize(v, depth + 1, inside) for v in value]
        finally:
            inside.discard(id(value))
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biu" or value.dtype == object:
            return sanitize(value.tolist(), depth + 1)
        if value.dtype.kind == "f":
            return sanitize(value.tolist(), depth + 1)
        return safe_repr(value)
    if isinstance(value, np.generic):
        return sanitize(value.item(), depth + 1)
    converted = _default(value)
    if isinstance(converted, str):
        return converted
    return sanitize(converted, depth + 1)


class Raw(bytes):
    """JSON that is already encoded (an array envelope, say), spliced into a
    reply as it is.  Base64 needs no escaping, and the C encoder would spend
    ~2.4 ns a character finding that out."""

    __slots__ = ()


def _encode_value(value: Any) -> bytes:
    if type(value) is Raw:
        return value
    try:
        return _encode_fast(value).encode()
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        return json.dumps(sanitize(value), allow_nan=False, separators=(",", ":")).encode()
    except (ValueError, TypeError, RecursionError):  # never reached, as far as we know: the value's repr then
        return _encode_fast(safe_repr(value)).encode()


def encode_json(payload: Any) -> bytes:
    """Encode a response payload as strict JSON bytes (never NaN/Infinity).

    Top-level values of a dict may be :class:`Raw`; they are spliced in.
    """
    if type(payload) is dict:
        for value in payload.values():
            if type(value) is Raw:
                return b"{" + b",".join(
                    _encode_fast(key).encode() + b":" + _encode_value(value) for key, value in payload.items()
                ) + b"}"
    return _encode_value(payload)


def _reject_constant(name: str) -> Any:
    raise ValueError(
        f"{name} is not valid JSON; send non-finite numbers as the strings "
        '"NaN", "Infinity" or "-Infinity"'
    )


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(text: bytes) -> int:
    """How deep arrays and objects nest in JSON ``text`` (a bound, exact for
    valid JSON), from the text alone: decoding it deeper would recurse."""
    opened = text.count(b"[") + text.count(b"{")
    if opened <= MAX_JSON_DEPTH:
        return opened  # the usual case: no deeper than that
    brackets = np.frombuffer(_JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKETS), np.uint8)
    if not brackets.size:
        return 0
    return int(np.cumsum(np.where((brackets == 91) | (brackets == 123), 1, -1)).max())  # 91 "[", 123 "{"


def check_depth(text: bytes, what: str) -> None:
    """A 400 for JSON nested past MAX_JSON_DEPTH, before anything walks it."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise bad_request(f"{what} nests arrays and objects {depth} deep; at most {MAX_JSON_DEPTH} levels are taken, "
                          "for every field (kwargs, options, actions, wrappers)")
_decode_strict = json.JSONDecoder(parse_constant=_reject_constant).decode  # built once: json.loads(**kw) builds one per call


def decode_json_body(body: bytes) -> dict:
    """Parse a request body; empty, ``{}`` and ``null`` all mean no parameters."""
    if not body or body.isspace():
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"Request body is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON")
    check_depth(body, "Request body")
    try:
        params = _decode_strict(text)
    except RecursionError:  # not reached past check_depth, as far as we know
        raise bad_request("Request body is nested too deeply; flatten the JSON")
    except ValueError as exc:
        raise bad_request(f"Request body is not valid JSON: {cut(str(exc))}")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise bad_request(f"Request body must be a JSON object of parameters, not a JSON {json_type(params)}")
    if _SURROGATE.search(text):  # \ud800 and its kind: valid pairs are one character once decoded, lone ones are not
        try:
            json.dumps(params, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise bad_request(f"Request body holds text that is not Unicode: a lone surrogate ({exc.object[exc.start]!a}); "
                              "send each character whole (UTF-8, or a \\u escape pair)")
    return params


# -- the array envelope ------------------------------------------------------


_DTYPE_NAMES: dict = {}  # dtype -> name (bytes); numpy's dtype.name is slow enough to show in a step
_LITTLE = sys.byteorder == "little"


def _little(array: Any) -> tuple[np.ndarray, bytes | None]:
    """The array and its dtype's wire name, or None when it has no envelope."""
    if type(array) is not np.ndarray:
        array = np.asarray(array)
    dtype = array.dtype
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        if dtype.kind not in "biuf":
            return array, None
        name = _DTYPE_NAMES[dtype] = dtype.name.encode()
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and not _LITTLE):
        array = array.astype(dtype.newbyteorder("<"))
    return array, name


def to_envelope(array: Any) -> Any:
    """``{"__ndarray__": base64, "dtype", "shape"}`` of an array: little-endian,
    C order.  Arrays of other kinds (strings, objects) stay plain values."""
    array, name = _little(array)
    if name is None:
        return sanitize(array)
    return {ENVELOPE: binascii.b2a_base64(array.tobytes(), newline=False).decode("ascii"),
            "dtype": name.decode(), "shape": list(array.shape)}


_FALSE_ENVELOPES: dict[int, Raw] = {}  # n -> the envelope of n False values


def raw_false_envelope(n: int) -> Raw:
    """The envelope of ``n`` False values: terminated/truncated/done batches
    are nearly always all False, so their encoding is kept."""
    raw = _FALSE_ENVELOPES.get(n)
    if raw is None:
        raw = raw_envelope(np.zeros(n, dtype=bool))
        if len(_FALSE_ENVELOPES) < 64:
            _FALSE_ENVELOPES[n] = raw
    return raw


def raw_envelope(array: Any) -> Any:
    """:func:`to_envelope`, already encoded as JSON (a :class:`Raw`)."""
    array, name = _little(array)
    if name is None:
        return Raw(encode_json(sanitize(array)))
    shape = ",".join(map(str, array.shape)).encode()
    return Raw(b'{"__ndarray__":"' + binascii.b2a_base64(array.tobytes(), newline=False)
               + b'","dtype":"' + name + b'","shape":[' + shape + b"]}")


_WIRE_DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ENVELOPE_DTYPES}
_NATIVE_DTYPES = {name: np.dtype(name) for name in ENVELOPE_DTYPES}


def from_envelope(value: dict) -> np.ndarray:
    """Inverse of :func:`to_envelope`; raises ``ValueError`` naming what is wrong."""
    dtype, shape, data = value.get("dtype"), value.get("shape"), value.get(ENVELOPE)
    wire = _WIRE_DTYPES.get(dtype) if type(dtype) is str else None
    if wire is None:
        raise Invalid(f"envelope dtype {short(dtype)} is not one of {sorted(ENVELOPE_DTYPES)}")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise Invalid(f"envelope shape {short(shape)} is not a list of non-negative integers")
    if type(data) is not str:
        raise Invalid("envelope __ndarray__ must be a base64 string")
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise Invalid("envelope __ndarray__ is not valid base64")
    count = math.prod(shape)
    if len(raw) != count * wire.itemsize:
        raise Invalid(f"envelope holds {len(raw)} bytes but dtype {dtype} and shape {shape} need {count * wire.itemsize}")
    return np.frombuffer(raw, dtype=wire).astype(_NATIVE_DTYPES[dtype]).reshape(shape)


def is_envelope(value: Any) -> bool:
    """Whether a decoded JSON value is an array envelope."""
    return isinstance(value, dict) and ENVELOPE in value


# -- frames --------------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(frame: Any, level: int = 6) -> bytes:
    """A PNG of an ``rgb_array`` frame (H x W x 3, or x 4, or H x W grey),
    with zlib and struct only.  Floats are taken as 0..1 intensities."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"a frame must be H x W x 3 (or x 4, or H x W), not of shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            a = np.nan_to_num(a, nan=0.0) * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    height, width, channels = a.shape
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = a.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2, 4: 6}[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
        + _png_chunk(b"IEND", b"")
    )


# -- describing spaces -------------------------------------------------------


def _bound(x: float) -> float:
    if x == float("inf"):
        return INFINITY_BOUND
    if x == float("-inf"):
        return -INFINITY_BOUND
    return x


def _bounds(array: np.ndarray, compact: bool) -> Any:
    """A Box bound: the flattened list, or with ``compact`` one number when
    every element is the same (Pong's 100,800 zeros become ``0``)."""
    flat = array.reshape(-1)
    if compact and flat.size and (flat == flat[0]).all():
        return _bound(flat[0].item())
    return [_bound(x) for x in flat.tolist()]


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data when it is plain data (numbers, strings, lists,
    string-keyed dicts, small numeric arrays), else :data:`_MISSING`."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _MISSING
    if depth > 16:
        return _MISSING
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return _plain(value.item(), depth + 1)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= 4096:
        return _plain(value.tolist(), depth + 1)
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return _MISSING if any(v is _MISSING for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v, depth + 1) for k, v in value.items()}
        return _MISSING if any(v is _MISSING for v in items.values()) else items
    return _MISSING


def _fits(value: Any) -> bool:
    return len(json_text(value)) <= MAX_DESCRIBED


def class_path(obj: Any) -> str:
    """``module:QualName`` of an object's class, as Gymnasium writes entry points."""
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _describe_unknown(space: Any, info: dict) -> None:
    """What a client can learn of a space this server does not know: its
    shape and dtype where it has them, an example value (a sample of a
    seeded copy, so that the env's own space is left as it was) and its
    public attributes that are plain data."""
    shape, dtype = getattr(space, "shape", None), getattr(space, "dtype", None)
    if shape is not None:
        info["shape"] = list(shape)
    if dtype is not None:
        info["dtype"] = np.dtype(dtype).name
    try:
        twin = copy.deepcopy(space)
        twin.seed(0)
        example = sanitize(twin.sample())
    except Exception:  # no sample(), or one that needs what a copy lacks: no example then
        example = _MISSING
    if example is not _MISSING and _fits(example):
        info["example"] = example
    attributes = {}
    for name, value in (vars(space) if hasattr(space, "__dict__") else {}).items():
        if not name.startswith("_") and name not in ("np_random", "shape", "dtype"):
            value = _plain(value)
            if value is not _MISSING:
                attributes[name] = value
    if attributes and _fits(attributes):
        info["attributes"] = attributes


_KINDS = (spaces.Discrete, spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Tuple, spaces.Dict, spaces.Text,
          spaces.Sequence, spaces.Graph, spaces.OneOf)


def describe_space(space: Any, compact: bool = False) -> dict:
    """A JSON description of a space, with everything needed to rebuild it.

    Fields follow the original server (``name``, ``n``, ``shape``, flattened
    ``low``/``high`` with infinities as +-1e100) plus what Gymnasium added
    (``start``, ``dtype``, nested ``spaces``...).  With ``compact``, a Box
    bound whose elements are all equal is one number.  A space not of
    Gymnasium's own classes also names its ``class``: a subclass of one of
    Gymnasium's kinds is named by that kind, and one of no kind this server
    knows is described by its shape, dtype, an ``example`` value and its
    plain ``attributes`` (see :func:`_describe_unknown`).
    """
    # A subclass of one of Gymnasium's kinds is named by its kind, so that any client can rebuild it as that.
    kind = next((k for k in _KINDS if isinstance(space, k)), type(space))
    info: dict[str, Any] = {"name": kind.__name__}
    if not type(space).__module__.startswith("gymnasium.spaces"):
        info["class"] = class_path(space)
    if isinstance(space, spaces.Discrete):
        info.update(n=int(space.n), start=int(space.start), dtype=space.dtype.name)
    elif isinstance(space, spaces.Box):
        info.update(shape=list(space.shape), dtype=space.dtype.name,
                    low=_bounds(space.low, compact), high=_bounds(space.high, compact))
    elif isinstance(space, spaces.MultiDiscrete):
        info.update(
            nvec=space.nvec.tolist(), start=space.start.tolist(), shape=list(space.shape), dtype=space.dtype.name
        )
    elif isinstance(space, spaces.MultiBinary):
        info.update(n=space.n if isinstance(space.n, int) else list(space.n), shape=list(space.shape), dtype=space.dtype.name)
    elif isinstance(space, spaces.Tuple):
        info["spaces"] = [describe_space(s, compact) for s in space.spaces]
    elif isinstance(space, spaces.Dict):
        info["spaces"] = {k: describe_space(s, compact) for k, s in space.spaces.items()}
    elif isinstance(space, spaces.Text):
        info.update(min_length=space.min_length, max_length=space.max_length, charset="".join(space.character_list))
    elif isinstance(space, spaces.Sequence):
        info.update(feature_space=describe_space(space.feature_space, compact), stack=bool(space.stack))
    elif isinstance(space, spaces.Graph):
        info.update(
            node_space=describe_space(space.node_space, compact),
            edge_space=describe_space(space.edge_space, compact) if space.edge_space is not None else None,
        )
    elif isinstance(space, spaces.OneOf):
        info["spaces"] = [describe_space(s, compact) for s in space.spaces]
    elif isinstance(space, spaces.Space):
        _describe_unknown(space, info)
    return info


def expand_bounds(info: dict) -> dict:
    """A compact description (see :func:`describe_space`) with every Box
    bound a flattened list again, as old clients parse it."""
    out = dict(info)
    if info.get("name") == "Box" or "low" in info:
        size = math.prod(info["shape"])
        for key in ("low", "high"):
            if key in info and not isinstance(info[key], list):
                out[key] = [info[key]] * size
        return out
    for key in ("feature_space", "node_space", "edge_space"):
        if isinstance(info.get(key), dict):
            out[key] = expand_bounds(info[key])
    parts = info.get("spaces")
    if isinstance(parts, dict):
        out["spaces"] = {k: expand_bounds(v) for k, v in parts.items()}
    elif isinstance(parts, list):
        out["spaces"] = [expand_bounds(v) for v in parts]
    return out


# -- values out: compiled per space ------------------------------------------


def encode_extras(value: Any, typed: bool = False, depth: int = 0) -> Any:
    """``info`` (or a value of a space this server does not know) as a base64
    or typed instance sends it: numeric arrays as envelopes, arrays of
    objects as lists, and with ``typed`` numpy scalars as envelopes of shape
    ``[]`` too.  The rest is left to the JSON encoder."""
    kind = type(value)
    if depth > 64:
        return value  # a dict that holds itself, say: the encoder's fallback cuts it short
    if kind is dict:
        return {k: encode_extras(v, typed, depth + 1) for k, v in value.items()} if value else value
    if kind is list or kind is tuple:
        return [encode_extras(v, typed, depth + 1) for v in value]
    if kind is np.ndarray:
        if value.dtype.kind in "biuf":
            return to_envelope(value)
        if value.dtype == object:  # final_obs of a vector: one observation (or None) per sub-env
            return [encode_extras(v, typed, depth + 1) for v in value] if value.ndim else encode_extras(value.item(), typed, depth + 1)
        return value
    if typed and isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return to_envelope(value)
    return value


def _typed_scalar(value: Any) -> Any:
    """A Python number as it is; a numpy scalar as an envelope of shape []."""
    return value if type(value) in (int, float, bool) else raw_envelope(value)


def make_encoder(space: Any, encoding: str = "list") -> Callable[[Any], Any]:
    """Compile a function that turns a value of ``space`` into JSON-ready data.

    With ``encoding`` "list", Box/MultiDiscrete/MultiBinary become nested
    lists in their shape, Discrete an int, Tuple a list, Dict an object.
    With "base64" arrays become envelopes, and with "typed" numpy scalars
    (a Discrete value an env gave as ``np.int64``) too.  Non-finite floats are
    left to :func:`encode_json`, which replaces them only when they occur.
    """
    arrays, typed = encoding != "list", encoding == "typed"
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        if arrays:
            return raw_envelope
        return lambda v: np.asarray(v).tolist()
    if isinstance(space, spaces.Discrete):
        return _typed_scalar if typed else int
    if isinstance(space, spaces.Tuple):
        parts = [make_encoder(s, encoding) for s in space.spaces]
        if arrays:  # parts may be Raw: assemble the JSON here
            return lambda v: Raw(b"[" + b",".join(_encode_value(enc(x)) for enc, x in zip(parts, v)) + b"]")
        return lambda v: [enc(x) for enc, x in zip(parts, v)]
    if isinstance(space, spaces.Dict):
        # In the value's own key order, which is the env's (the space's is sorted).
        encoders = {k: make_encoder(s, encoding) for k, s in space.spaces.items()}
        if arrays:
            keyed = {k: (_encode_fast(k).encode() + b":", enc) for k, enc in encoders.items()}

            def dict_encoder(v):
                parts = []
                for k, x in v.items():
                    key, enc = keyed[k]
                    parts.append(key + _encode_value(enc(x)))
                return Raw(b"{" + b",".join(parts) + b"}")

            return dict_encoder
        return lambda v: {k: encoders[k](x) for k, x in v.items()}
    if isinstance(space, spaces.Text):
        return str
    if isinstance(space, spaces.Sequence):
        feature = make_encoder(space.feature_space, encoding)
        if space.stack:
            return make_encoder(space.stacked_feature_space, encoding)
        if arrays:
            return lambda v: Raw(b"[" + b",".join(_encode_value(feature(x)) for x in v) + b"]")
        return lambda v: [feature(x) for x in v]
    if isinstance(space, spaces.OneOf):
        parts = [make_encoder(s, encoding) for s in space.spaces]
        if arrays:
            return lambda v: Raw(b"[%d," % int(v[0]) + _encode_value(parts[int(v[0])](v[1])) + b"]")
        return lambda v: [int(v[0]), parts[int(v[0])](v[1])]
    if isinstance(space, spaces.Graph):
        array = to_envelope if arrays else (lambda a: None if a is None else np.asarray(a).tolist())
        return lambda g: {"nodes": array(g.nodes), "edges": array(g.edges), "edge_links": array(g.edge_links)}
    if arrays:  # a space of no kind we know: its arrays as envelopes all the same
        return lambda v: encode_extras(v, typed)
    return lambda v: v  # the generic encoder copes


# -- values in: through the space --------------------------------------------


class Invalid(ValueError):
    """A JSON value that does not fit a space; the text says why."""


def _integral(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{what} must be an integer, not a JSON {json_type(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise Invalid(f"{what} must be an integer, not {value!r}")
        value = int(value)
    return value


def _array(value: Any, dtype: np.dtype, shape: tuple) -> np.ndarray:
    """A JSON list (nested in ``shape``, or flat of the right size), a number
    for a one-element space, or an envelope, as an array of ``dtype``."""
    if is_envelope(value):
        arr = from_envelope(value)
        if arr.dtype == dtype and arr.shape == shape:
            return arr  # the common case: the client sent exactly the space's array
    else:
        if isinstance(value, (str, bool, dict)) or value is None:
            raise Invalid(f"expected numbers in shape {list(shape)}, not a JSON {json_type(value)}")
        try:
            arr = np.array(value, dtype=object if dtype.kind in "biu" else np.float64)
        except (ValueError, TypeError, OverflowError) as exc:
            raise Invalid(f"expected numbers in shape {list(shape)}: {exc}")
        if arr.dtype == object:
            flat = arr.reshape(-1).tolist()
            if any(isinstance(x, (bool, str, list, dict)) or x is None for x in flat):
                raise Invalid(f"expected integers in shape {list(shape)}")
            if any(isinstance(x, float) and not x.is_integer() for x in flat):
                raise Invalid(f"expected integers in shape {list(shape)}, got a fraction")
            try:
                arr = arr.astype(np.int64)
            except (OverflowError, TypeError):
                raise Invalid(f"integers out of range for {dtype.name}")
    if arr.shape != shape:
        if arr.size == int(np.prod(shape, dtype=np.int64)):
            arr = arr.reshape(shape)
        else:
            raise Invalid(f"expected shape {list(shape)}, got shape {list(arr.shape)}")
    if dtype.kind in "biu" and arr.dtype.kind == "f":  # integral floats only
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise Invalid(f"expected integers for dtype {dtype.name}")
    if dtype.kind in "iu" and arr.size and arr.dtype.kind in "iu" and arr.dtype != dtype:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise Invalid(f"integers out of range for {dtype.name}")
    return arr.astype(dtype, copy=False)


def make_decoder(space: Any) -> Callable[[Any], Any]:
    """Compile a function that turns JSON into a value of ``space``'s own types.

    It raises :class:`Invalid` when the JSON cannot be such a value; callers
    still check membership with ``space.contains``.
    """
    if isinstance(space, spaces.Discrete):
        low, high = int(space.start), int(space.start) + int(space.n)

        def discrete_decoder(v):
            if type(v) is not int:
                if is_envelope(v):  # a numpy scalar, as typed instances send them
                    scalar = from_envelope(v)
                    if scalar.shape != ():
                        raise Invalid(f"a Discrete value must be one number, not an array of shape {list(scalar.shape)}")
                    v = scalar.item()
                v = _integral(v, "a Discrete value")
            if not low <= v < high:
                raise Invalid(f"a Discrete value must be in {low}..{high - 1}")
            return v

        return discrete_decoder
    if isinstance(space, (spaces.MultiDiscrete, spaces.MultiBinary)):
        dtype, shape = space.dtype, space.shape
        if isinstance(space, spaces.MultiBinary):
            low, span = np.zeros(shape, dtype=np.int64), np.full(shape, 2, dtype=np.uint64)
        else:
            low, span = space.start.astype(np.int64), space.nvec.astype(np.uint64)

        from_zero = not low.any()

        def integer_array_decoder(v):
            arr = _array(v, dtype, shape)
            # One comparison: below the start wraps around to a huge unsigned number.
            if from_zero and arr.dtype == np.int64:
                offset = arr
            else:
                offset = np.subtract(arr, low, dtype=np.int64)
            if np.count_nonzero(offset.view(np.uint64) >= span):
                raise Invalid(f"values must lie in [start, start + nvec) of {space}")
            return arr

        return integer_array_decoder
    if isinstance(space, spaces.Box):
        dtype, shape = space.dtype, space.shape
        return lambda v: _array(v, dtype, shape)
    if isinstance(space, spaces.Tuple):
        parts = [make_decoder(s) for s in space.spaces]

        def tuple_decoder(v):
            if not isinstance(v, list) or len(v) != len(parts):
                raise Invalid(f"a Tuple value must be a list of {len(parts)} items, not {short(v)}")
            return tuple(dec(x) for dec, x in zip(parts, v))

        return tuple_decoder
    if isinstance(space, spaces.Dict):
        items = {k: make_decoder(s) for k, s in space.spaces.items()}

        def dict_decoder(v):
            if not isinstance(v, dict) or set(v) != set(items):
                raise Invalid(f"a Dict value must be an object with the keys {sorted(items)}")
            return {k: dec(v[k]) for k, dec in items.items()}

        return dict_decoder
    if isinstance(space, spaces.Text):

        def text_decoder(v):
            if not isinstance(v, str):
                raise Invalid(f"a Text value must be a string, not a JSON {json_type(v)}")
            return v

        return text_decoder
    if isinstance(space, spaces.Sequence):
        feature = make_decoder(space.feature_space)
        stacked = space.stack and isinstance(space.feature_space, spaces.Box)

        def sequence_decoder(v):
            if stacked and is_envelope(v):
                arr = from_envelope(v)
                if arr.shape[1:] != space.feature_space.shape:
                    raise Invalid(f"stacked Sequence items must have shape {list(space.feature_space.shape)}")
                return arr.astype(space.feature_space.dtype, copy=False)
            if not isinstance(v, list):
                raise Invalid(f"a Sequence value must be a list, not a JSON {json_type(v)}")
            items = tuple(feature(x) for x in v)
            if space.stack:
                return gymnasium.vector.utils.concatenate(
                    space.feature_space, items, gymnasium.vector.utils.create_empty_array(space.feature_space, len(items))
                )
            return items

        return sequence_decoder
    if isinstance(space, spaces.OneOf):
        parts = [make_decoder(s) for s in space.spaces]

        def oneof_decoder(v):
            if not isinstance(v, list) or len(v) != 2:
                raise Invalid("a OneOf value must be [index, value]")
            index = _integral(v[0], "a OneOf index")
            if not 0 <= index < len(parts):
                raise Invalid(f"OneOf index {index} is out of range 0..{len(parts) - 1}")
            return (np.int64(index), parts[index](v[1]))

        return oneof_decoder
    if isinstance(space, spaces.Graph):

        def graph_decoder(v):
            if not isinstance(v, dict) or "nodes" not in v:
                raise Invalid("a Graph value must be an object with nodes, edges and edge_links")
            nodes = np.asarray(from_envelope(v["nodes"]) if is_envelope(v["nodes"]) else v["nodes"], dtype=space.node_space.dtype)
            edges = v.get("edges")
            if edges is not None and space.edge_space is not None:
                edges = np.asarray(from_envelope(edges) if is_envelope(edges) else edges, dtype=space.edge_space.dtype)
            links = v.get("edge_links")
            if links is not None:
                links = np.asarray(from_envelope(links) if is_envelope(links) else links, dtype=np.int64)
            return spaces.GraphInstance(nodes, edges, links)

        return graph_decoder
    return lambda v: from_envelope(v) if is_envelope(v) else v


def contains(space: Any, value: Any) -> bool:
    """``space.contains`` that answers False instead of raising."""
    try:
        return bool(space.contains(value))
    except Exception:
        return False


# What the decoder alone proves acceptable: the integer spaces check their
# ranges; a Box of the right shape and dtype is taken whatever its values.
_DECODER_CHECKS = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Box)


def acceptable(space: Any, value: Any) -> bool:
    """Whether a decoded action may go to the env: as ``contains``, except
    that a Box's values may lie outside its bounds, as a local env takes them
    (most clip; Gymnasium's own checker only warns)."""
    if isinstance(space, spaces.Box):
        return True
    if isinstance(space, spaces.Tuple):
        return all(acceptable(s, v) for s, v in zip(space.spaces, value))
    if isinstance(space, spaces.Dict):
        return all(acceptable(s, value[k]) for k, s in space.spaces.items())
    return contains(space, value)


def _checked_by_decoder(space: Any) -> bool:
    if type(space) is spaces.Tuple:
        return all(map(_checked_by_decoder, space.spaces))
    if type(space) is spaces.Dict:
        return all(map(_checked_by_decoder, space.spaces.values()))
    return type(space) in _DECODER_CHECKS


class Codec:
    """Encoder and decoder of one space, compiled once per instance.

    ``checked``: the decoder alone proves an action acceptable (see
    :func:`acceptable`), so no check need run after it.
    """

    __slots__ = ("space", "encode", "decode", "checked")

    def __init__(self, space: Any, encoding: str):
        self.space = space
        self.encode = make_encoder(space, encoding)
        self.decode = make_decoder(space)
        self.checked = _checked_by_decoder(space)


# ---------------------------------------------------------------------------
# The environment side
# ---------------------------------------------------------------------------
#
# Every call into an environment goes through an EnvSide: make, reset, step,
# render, sample, contains, video, close.  With --isolation thread the server
# holds it directly; with --isolation process it lives in the instance's own
# process, and the server reaches it only through the message protocol of the
# next section.  Its methods take and return plain data, replies already
# encoded as JSON bytes, so both ways behave the same and a server process
# only relays bytes.


# How a failure message ends: what the client can do about it.
BROKEN = "the instance is broken: reset it to start a fresh process, or close it"
BROKEN_IN_THREAD = "the instance is broken: reset it to make a fresh env, or close it"
NOT_MADE = "no instance was made, so there is nothing to reset or close: create it again"


class EnvFailure(HTTPError):
    """A call that failed on the environment's side: its code raised, its
    process died, or it ran past --env-timeout.

    ``summary`` completes "its environment ..." in the 409 that later steps
    get; ``dead`` means the env is gone (a reset starts a fresh one);
    ``trace`` is the traceback to log on the server.
    """

    def __init__(self, status: HTTPStatus, message: str, summary: str, *, dead: bool = False, trace: str = ""):
        super().__init__(status, message)
        self.summary = summary
        self.dead = dead
        self.trace = trace


def env_failure(exc: BaseException, op: str) -> HTTPError:
    """The reply to an exception raised by an environment's code during ``op``.

    Gymnasium refusing what it was asked outside reset and step (a bad render
    index, say) is the client's mistake, a 400; anything else is a 500 that
    carries the exception's text.
    """
    name, text = type(exc).__name__, str(exc)
    if isinstance(exc, gymnasium.error.Error) and op not in ("step", "reset"):
        return bad_request(f"{name}: {cut(text)}")
    if len(text) > 2000:
        text = text[:2000] + "..."
    return EnvFailure(
        HTTPStatus.INTERNAL_SERVER_ERROR, f"The environment raised {name}: {text}",
        f"raised {name} during {op}: {cut(text)}", trace=traceback.format_exc(),
    )


# -- making: missing packages, wrappers ------------------------------------------

# Import names whose pip package is called otherwise.
PIP_NAMES = {"cv2": "opencv-python", "Box2D": "box2d", "PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn",
             "skimage": "scikit-image"}


def _present(name: str) -> bool:
    try:
        return name in sys.modules or importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _imports(tree: ast.AST, package: str) -> list[str]:
    """The modules that the statements of ``tree`` import (not those of
    functions nested in it), relative ones resolved against ``package``."""
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    found.append(f"{base}.{child.module}" if child.module else base)
                elif child.module:
                    found.append(child.module)
            else:
                todo.append(child)
    return found


def _parse(filename: str) -> ast.AST | None:
    try:
        with open(filename, "rb") as f:
            return ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return None


def missing_modules(exc: BaseException) -> list[str]:
    """The modules whose absence made ``exc``, all of them: the one it names,
    and every other that the code it ran (and the not yet imported modules
    of the same package that code imports) imports and this machine lacks.

    Found by reading that code, not by running it, so that one message
    names them all instead of one per try.
    """
    missing: list[str] = []
    errors: list[BaseException] = []
    while exc is not None and exc not in errors and len(errors) < 8:
        errors.append(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            missing.append(exc.name.split(".")[0])
        exc = exc.__cause__ or exc.__context__
    wanted: list[str] = []
    todo: list[tuple[str, str]] = []  # (file, package) of modules to read whole
    for error in errors:
        for frame, _ in traceback.walk_tb(error.__traceback__):
            code, module = frame.f_code, frame.f_globals.get("__name__", "")
            top = module.split(".")[0]
            if not code.co_filename.endswith(".py") or top in sys.stdlib_module_names or module in (__name__, "gymhttp"):
                continue
            package = frame.f_globals.get("__package__") or module.rpartition(".")[0]
            if code.co_name == "<module>":
                todo.append((code.co_filename, package))
                continue
            tree = _parse(code.co_filename)  # a function that imports lazily: its own imports
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name \
                        and min([d.lineno for d in node.decorator_list] + [node.lineno]) == code.co_firstlineno:
                    wanted.extend(_imports(node, package))
                    break
    read: set[str] = set()
    while todo and len(read) < 32:
        filename, package = todo.pop()
        if filename in read:
            continue
        read.add(filename)
        tree = _parse(filename)
        for name in _imports(tree, package) if tree is not None else ():
            wanted.append(name)
            # A module of the same package not imported yet runs next: read it too.  Found on
            # disk beside this one, since find_spec() would import (run) its parent package.
            if package and name.startswith(package + ".") and name not in sys.modules:
                here = os.path.join(os.path.dirname(filename), *name[len(package) + 1:].split("."))
                for candidate, its_package in ((here + ".py", name.rpartition(".")[0]), (os.path.join(here, "__init__.py"), name)):
                    if os.path.isfile(candidate):
                        todo.append((candidate, its_package))
                        break
    for name in wanted:
        top = name.split(".")[0]
        if top and top not in missing and top not in sys.stdlib_module_names and not _present(top):
            missing.append(top)
    return missing


def missing_message(what: str, exc: BaseException) -> str:
    """The 400 for a make (or a wrapper) that failed for want of packages:
    every missing one named, with the pip line, and the library's own hint."""
    names = missing_modules(exc)
    text = cut(str(exc))
    if names:
        pip = " ".join(PIP_NAMES.get(n, n) for n in names)
        listed = ", ".join(names)
        hint = f" ({text})" if "pip install" in text or not isinstance(exc, ModuleNotFoundError) else ""
        return (f"{what} needs {'a package' if len(names) == 1 else 'packages'} the server does not have: {listed}{hint}; "
                f"install {'it' if len(names) == 1 else 'them'} there (pip install {pip}) and try again: "
                "no restart is needed")
    return f"{what} needs a package the server does not have: {text}; install it there and try again: no restart is needed"


# Wrappers a create may not ask for: they reach beyond the instance.
REFUSED_WRAPPERS = {
    "RecordVideo": "it writes files wherever its video_folder says; record videos with monitor/start and "
                   "video_callable, which keeps to --monitor-root",
    "HumanRendering": "it draws in a window on the server's screen, where nobody is watching; watch the frames on the "
                      'dashboard, or from Python with client.RemoteEnv(..., render_mode="human")',
}


class Wrapping:
    """One entry of a create's ``wrappers``, resolved: called on an env, it
    wraps it, and a refusal becomes a 400 that names the wrapper.  It
    pickles, for an async vector's workers."""

    def __init__(self, index: int, name: str, entry_point: str, kwargs: dict):
        self.index, self.name, self.entry_point, self.kwargs = index, name, entry_point, kwargs
        module_name, _, qualname = entry_point.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise bad_request(missing_message(f"Wrapper {short(name)} ({short(entry_point)})", exc))
        target: Any = module
        try:
            for part in qualname.split("."):
                target = getattr(target, part, None)  # gymnasium.wrappers imports a wrapper's module here
        except ImportError as exc:
            raise bad_request(missing_message(f"Wrapper {short(name)} ({short(entry_point)})", exc))
        if not callable(target):
            known = [n for n in dir(module) if isinstance(getattr(module, n, None), type)
                     and issubclass(getattr(module, n), gymnasium.Wrapper)]
            close = difflib.get_close_matches(qualname, known, n=2, cutoff=0.75)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise bad_request(f"Wrapper {short(name)}: {short(module_name)} has no wrapper {short(qualname)}{hint}")
        self.factory = target

    def __call__(self, env: Any) -> Any:
        try:
            return self.factory(env, **self.kwargs)
        except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
            raise bad_request(missing_message(f"Wrapper {short(self.name)}", exc))
        except (TypeError, ValueError, AssertionError, KeyError, gymnasium.error.Error) as exc:
            text = f"{type(exc).__name__}: {cut(str(exc))}"
            hint = ""
            if self.name == "AtariPreprocessing" and "frame-skip" in str(exc):
                hint = '; an ALE v5 env skips 4 frames itself: make it with "kwargs": {"frameskip": 1}'
            raise bad_request(f"Wrapper {short(self.name)} (wrappers[{self.index}]) with kwargs {short(self.kwargs)} "
                              f"refused the env: {text}{hint}")


def make_env(env_id: str, kwargs: dict, num_envs: int, mode: str | None, vector_kwargs: dict,
             wrappers: tuple = ()) -> Any:
    """``gymnasium.make`` (or ``make_vec``), then ``wrappers`` (resolved
    :class:`Wrapping` arguments: index, name, entry point, kwargs) in order,
    around each sub-env of a vector as ``make_vec(wrappers=...)`` applies
    them; refusals are 400s."""
    wrapping = [Wrapping(*w) for w in wrappers]
    try:
        if num_envs == 1:
            env = gymnasium.make(env_id, **kwargs)
            try:
                for wrap in wrapping:
                    env = wrap(env)
            except BaseException:
                env.close()
                raise
            return env
        if wrapping and mode in (None, "vector_entry_point"):
            spec = gymnasium.spec(env_id.rpartition(":")[2]) if env_id.rpartition(":")[2] in gymnasium.registry else None
            if mode == "vector_entry_point" or (spec is not None and spec.vector_entry_point is not None):
                raise bad_request(f"{short(env_id)} is vectorized by its vector entry point, which has no sub-envs to wrap; "
                                  'pass "vectorization_mode": "sync" (or "async") with wrappers, as gymnasium.make_vec wants')
        return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs,
                                  wrappers=wrapping or None, **kwargs)
    except gymnasium.error.UnregisteredEnv as exc:
        raise bad_request(f"Environment ID '{short(env_id)}' is not registered: {cut(str(exc))}")
    except (ImportError, gymnasium.error.DependencyNotInstalled) as exc:
        importlib.invalidate_caches()  # so that the next try finds what gets installed meanwhile
        raise bad_request(missing_message(f"Cannot make {short(env_id)}: it", exc))
    except gymnasium.error.Error as exc:
        if "No registered env" in str(exc):
            raise bad_request(f"Environment ID '{short(env_id)}' is not registered: {cut(str(exc))}")
        raise bad_request(f"Cannot make {short(env_id)}: {type(exc).__name__}: {cut(str(exc))}")
    except (TypeError, ValueError, AssertionError) as exc:
        raise bad_request(f"Cannot make {short(env_id)} with kwargs {short(kwargs)}: {type(exc).__name__}: {cut(str(exc))}")


def autoreset_mode(env: Any) -> str | None:
    """A vector env's autoreset mode by name ("NextStep", "SameStep", "Disabled")."""
    mode = (getattr(env, "metadata", None) or {}).get("autoreset_mode")
    return None if mode is None else str(getattr(mode, "value", mode))


def _metadata(env: Any) -> dict:
    """The JSON-safe part of an env's metadata that clients act on."""
    metadata = getattr(env, "metadata", None) or {}
    out = {"render_modes": [str(m) for m in metadata.get("render_modes", [])]}
    if metadata.get("render_fps") is not None:
        out["render_fps"] = sanitize(metadata["render_fps"])
    if "autoreset_mode" in metadata:
        out["autoreset_mode"] = autoreset_mode(env)
    return out


def _spec(spec: Any) -> dict | None:
    """Spec basics of a registered env (or of an instance's env)."""
    if spec is None:
        return None
    entry = spec.entry_point
    if callable(entry):
        entry = f"{getattr(entry, '__module__', '?')}:{getattr(entry, '__qualname__', repr(entry))}"
    out = {
        "id": spec.id,
        "entry_point": entry,
        "max_episode_steps": spec.max_episode_steps,
        "reward_threshold": sanitize(spec.reward_threshold),
        "nondeterministic": bool(spec.nondeterministic),
        "vector_entry_point": spec.vector_entry_point is not None,
    }
    # Wrappers applied (a create's "wrappers"), in WrapperSpec's shape; a vector's are in its kwargs.
    applied = [(w.name, w.entry_point, w.kwargs) for w in getattr(spec, "additional_wrappers", ())]
    applied += [(w.name, w.entry_point, w.kwargs) for w in (spec.kwargs or {}).get("wrappers", ()) if isinstance(w, Wrapping)]
    if applied:
        out["additional_wrappers"] = [{"name": n, "entry_point": e, "kwargs": sanitize(k)} for n, e, k in applied]
    return out


def flag_param(params: dict, name: str) -> bool:
    """An optional boolean parameter; old clients send "true"/"false" strings."""
    value = params.get(name)
    if value is None:
        return False
    if type(value) is bool:
        return value
    if value in ("true", "false"):
        return value == "true"
    raise bad_request(f"Parameter '{name}' must be true or false, not {short(value)}")


_RENDERING = threading.Lock()


def _render(render: Callable[[], Any]) -> Any:
    """Call ``render``, one render at a time in this process.

    pygame, which draws the built-in envs, is not thread-safe: two envs
    rendering for the first time at once fail with AttributeError (its lazy
    imports), and envs drawing at once now and then get wrong pixels (with
    four threads drawing CartPole, about 1 frame in 50).  An instance
    process has its own pygame, so this lock serializes nothing there.
    """
    with _RENDERING:
        return render()


def _bools(value: Any) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype == np.bool_:
        return value
    return np.asarray(value, dtype=bool)


_FLAGS = {  # (done, terminated, truncated) -> their part of a single env's step reply
    (d, te, tr): f',"done":{str(d).lower()},"terminated":{str(te).lower()},"truncated":{str(tr).lower()},"info":'.encode()
    for d in (False, True) for te in (False, True) for tr in (False, True)
}


class EnvSide:
    """One environment (or vector of them) and every call into it.

    It also counts episodes, since only it sees every reward: calls report
    the episodes that ended as ``(return, length)`` pairs, and the server
    keeps the statistics.  Steps taken after an episode ended and before the
    next reset (Gymnasium calls them undefined behaviour) belong to no
    episode.
    """

    def __init__(self, instance_id: str, env_id: str, kwargs: dict, num_envs: int, mode: str | None,
                 vector_kwargs: dict, encoding: str, wrappers: tuple = (), seed: int | None = None):
        self.instance_id = instance_id
        # What a step or reset must know, decided here whoever relays it: a step before any reset
        # resets first (with the create's seed), and one after the env raised is refused.
        self.needs_reset = True
        self.pending_seed = seed
        self.broken: str | None = None
        self.env = env = make_env(env_id, kwargs, num_envs, mode, vector_kwargs, wrappers)
        self.num_envs = num_envs
        self.vector = num_envs > 1
        self.encoding = encoding
        arrays, self.typed = encoding != "list", encoding == "typed"
        self.action = Codec(env.action_space, encoding)
        self.observation = Codec(env.observation_space, encoding)
        self.array = raw_envelope if arrays else (lambda a: a.tolist())
        # info (and reset info): its arrays as envelopes too, except in list mode
        self.info = functools.partial(encode_extras, typed=self.typed) if arrays else None
        self.recorder = None  # the RecordVideo wrapper, while recording
        if self.vector:
            self._t = 0  # vector steps, to measure episode lengths
            self._returns = np.zeros(num_envs, dtype=np.float64)
            self._starts = np.zeros(num_envs, dtype=np.int64)  # self._t when each episode began
            # In NextStep autoreset the step after an episode's end is the reset: part of neither episode.
            self._reset_step = int(autoreset_mode(env) == "NextStep")
        else:
            self._return, self._length, self._in_episode = 0.0, 0, False

    def facts(self) -> dict:
        """What the server needs to know without calling in again."""
        env = self.env
        facts = {
            "render_mode": env.render_mode,
            "metadata": _metadata(env),
            "spec": _spec(getattr(env, "spec", None)),
            # Compact: the server expands Box bounds for the clients that want them flat.
            "action_space": describe_space(env.action_space, compact=True),
            "observation_space": describe_space(env.observation_space, compact=True),
            "pid": os.getpid(),
        }
        if self.vector:
            facts["single_action_space"] = describe_space(env.single_action_space, compact=True)
            facts["single_observation_space"] = describe_space(env.single_observation_space, compact=True)
            # Sync and async vector envs take a seed per sub-env; vector entry points (CartPole's) take one int.
            facts["seed_lists"] = isinstance(env.unwrapped, (gymnasium.vector.SyncVectorEnv, gymnasium.vector.AsyncVectorEnv))
        return facts

    # -- episodes -------------------------------------------------------------

    def _start_episodes(self, mask: np.ndarray | None) -> tuple | None:
        """A reset: new episodes for every sub-env, or those in a reset_mask.
        Returns the single env's episode it interrupted, as (return, length)."""
        if self.vector:
            which = slice(None) if mask is None else mask
            self._returns[which] = 0.0
            self._starts[which] = self._t
            return None
        interrupted = (self._return, self._length) if self._in_episode and self._length else None
        self._return, self._length, self._in_episode = 0.0, 0, True
        return interrupted

    def _count(self, reward: Any, done: Any, ended: int = 0) -> tuple:
        """Count a step; returns the episodes it ended.  For vectors, ``ended``
        is how many sub-envs are done."""
        if self.vector:
            self._t += 1
            self._returns += reward
            if not ended:
                return ()
            which = np.flatnonzero(done)
            episodes = tuple(zip(self._returns[which].tolist(), (self._t - self._starts[which]).tolist()))
            self._returns[which] = 0.0
            self._starts[which] = self._t + self._reset_step
            return episodes
        if not self._in_episode:
            return ()
        self._return += reward
        self._length += 1
        if done:
            self._in_episode = False
            return ((self._return, self._length),)
        return ()

    # -- calls ----------------------------------------------------------------

    def _reset(self, seed: Any, options: dict | None) -> tuple:
        mask = options.get("reset_mask") if self.vector and options else None  # SyncVectorEnv pops it
        observation, info = self.env.reset(seed=seed, options=options)
        return observation, info, self._start_episodes(mask)

    def reset(self, seed: Any, options: dict | None) -> tuple[tuple | None, bytes]:
        """Reset (with the create's seed when none is given, the first time);
        returns (the episode it interrupted or None, the reply)."""
        try:
            observation, info, interrupted = self._reset(self.pending_seed if seed is None else seed, options)
        except Exception as exc:
            raise self._failed(exc, "reset") from exc
        self.needs_reset, self.pending_seed, self.broken = False, None, None
        if self.info is not None:
            info = self.info(info)
        return interrupted, encode_json({"observation": self.observation.encode(observation), "info": info})

    def _failed(self, exc: Exception, op: str) -> HTTPError:
        """The env raised during a step or reset: the instance is broken until a reset works."""
        error = env_failure(exc, op)
        if isinstance(error, EnvFailure):
            self.broken = error.summary
        return error

    def broken_message(self) -> str:
        return (f"Instance {self.instance_id} is broken: its environment {self.broken}; "
                "reset it (POST /v1/envs/<id>/reset/) to try again, or close it")

    def _decode_action(self, action: Any) -> Any:
        codec = self.action
        try:
            value = codec.decode(action)
        except Invalid as exc:
            raise bad_request(f"Action {short(action)} is not in the action space {codec.space}: {exc}")
        if not codec.checked and not acceptable(codec.space, value):
            raise bad_request(f"Action {short(action)} is not in the action space {codec.space}")
        return value

    def step(self, body: bytes) -> tuple[tuple, bytes, bool]:
        """Step with the action in a request body, after a reset when none
        came before (as the original server did); returns (the episodes it
        ended, the reply, whether it reset first)."""
        if self.broken:
            raise HTTPError(HTTPStatus.CONFLICT, self.broken_message())
        params = decode_json_body(body)
        action = params.get("action")
        if action is None:
            raise bad_request("A required request parameter 'action' was not provided")
        render = flag_param(params, "render")
        value = self._decode_action(action)
        reset_first = self.needs_reset
        env = self.env
        try:
            if reset_first:
                self._reset(self.pending_seed, None)
                self.needs_reset, self.pending_seed = False, None
            observation, reward, terminated, truncated, info = env.step(value)
        except Exception as exc:
            raise self._failed(exc, "step") from exc
        if render and env.render_mode not in (None, "human"):
            try:
                _render(env.render)
            except Exception as exc:  # rendering is a side show; the step stands
                log.warning("render of %s failed: %s", self.instance_id, exc)
        if self.vector:
            terminated, truncated = _bools(terminated), _bools(truncated)
            done = terminated | truncated
            ended = np.count_nonzero(done)  # ndarray.any() has a slow Python wrapper
            episodes = self._count(reward, done, ended)
            reward = np.asarray(reward)
            if reward.dtype.kind != "f" and not self.typed:  # rewards are floats on the wire, whatever the env said
                reward = reward.astype(np.float64)
            if info and self.info is not None:
                info = self.info(info)
            array = self.array
            if array is raw_envelope and not ended:
                done = terminated = truncated = raw_false_envelope(self.num_envs)
            else:
                done, terminated, truncated = array(done), array(terminated), array(truncated)
            # Assembled here, as for one env: the encoder would walk a dict for the same bytes.
            return episodes, b"".join((
                b'{"observation":', _encode_value(self.observation.encode(observation)),
                b',"reward":', _encode_value(array(reward)), b',"done":', _encode_value(done),
                b',"terminated":', _encode_value(terminated), b',"truncated":', _encode_value(truncated),
                b',"info":', _encode_value(info) if info else b"{}", b"}",
            )), reset_first
        given, reward, terminated, truncated = reward, float(reward), bool(terminated), bool(truncated)
        done = terminated or truncated
        episodes = self._count(reward, done)
        if self.typed and type(given) is not float:  # an int, or a numpy scalar: sent as it is
            reward_json = _encode_value(_typed_scalar(given))
        else:
            reward_json = repr(reward).encode() if reward - reward == 0 else _encode_value(sanitize(reward))
        if info and self.info is not None:
            info = self.info(info)
        # Assembled here: the encoder would walk a dict for the same bytes.
        return episodes, b"".join((
            b'{"observation":', _encode_value(self.observation.encode(observation)),
            b',"reward":', reward_json,
            _FLAGS[done, terminated, truncated],
            _encode_value(info) if info else b"{}", b"}",
        )), reset_first

    def sample(self) -> bytes:
        return encode_json({"action": self.action.encode(self.env.action_space.sample())})

    def contains(self, text: str) -> bytes:
        """Whether the JSON ``text`` (from the path) is an action."""
        check_depth(text.encode("utf-8", "surrogatepass"), "The action in the path")
        try:
            value = _decode_strict(text)
        except (ValueError, RecursionError):
            raise bad_request(f"Action {short(text)} in the path is not JSON; send e.g. contains/1 or contains/%5B0.5%5D")
        try:
            member = contains(self.action.space, self.action.decode(value))
        except Invalid:
            member = False
        return encode_json({"member": member})

    def render(self, index: int | None) -> tuple[str, bytes]:
        """The current frame as (content type, bytes): a PNG for rgb_array,
        text for ansi, and for any other mode (depth_array, rgbd_tuple,
        rgb_array_list...) JSON ``{"frame": ...}`` with its arrays as envelopes."""
        if self.needs_reset:
            raise HTTPError(HTTPStatus.CONFLICT, f"Instance {self.instance_id} has not been reset yet; reset or step it, then render")
        env = self.env
        if index is None:
            frame = _render(env.render)
        elif hasattr(env, "envs"):  # SyncVectorEnv: render just the one asked for
            frame = _render(env.envs[index].render)
        else:
            frame = _render(env.render)[index]
        mode = env.render_mode
        if mode == "ansi":
            return TEXT_TYPE, str(frame).encode("utf-8")
        if frame is None:
            raise HTTPError(HTTPStatus.CONFLICT, f"Instance {self.instance_id} has no frame to show yet; reset or step it, then render")
        if mode != "rgb_array":
            return JSON_TYPE, encode_json({"frame": encode_extras(frame)})
        try:
            return PNG_TYPE, encode_png(frame)
        except ValueError as exc:
            raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"The env's rgb_array frame cannot be shown: {exc}")

    # -- any space, and any part of it (for clients that rebuild spaces they don't know)

    def _space(self, which: str, path: list) -> Any:
        """The space ``which`` ("action", "observation", or "single_..." of a
        vector), then the part of it that ``path`` leads to: Dict keys,
        Tuple and OneOf indices, "feature_space", "node_space", "edge_space"."""
        space = getattr(self.env, f"{which}_space")
        for depth, step in enumerate(path):
            part = None
            if isinstance(space, spaces.Dict) and isinstance(step, str):
                part = space.spaces.get(step)
            elif isinstance(space, (spaces.Tuple, spaces.OneOf)) and type(step) is int and 0 <= step < len(space.spaces):
                part = space.spaces[step]
            elif isinstance(space, spaces.Sequence) and step == "feature_space":
                part = space.feature_space
            elif isinstance(space, spaces.Graph) and step in ("node_space", "edge_space"):
                part = getattr(space, step)
            if part is None:
                raise bad_request(f"Parameter 'path' {short(path)} leads nowhere: step {depth} ({short(step)}) is not a "
                                  f"part of {cut(str(space), MAX_ECHO)}")
            space = part
        return space

    def space_sample(self, which: str, path: list, seed: int | None) -> bytes:
        """A sample of a space (or a part of it), after seeding it with ``seed``."""
        space = self._space(which, path)
        if seed is not None:
            space.seed(seed)
        return encode_json({"value": make_encoder(space, self.encoding)(space.sample())})

    def space_contains(self, which: str, path: list, value: Any) -> bytes:
        """Whether a decoded JSON value is in a space (or a part of it)."""
        space = self._space(which, path)
        try:
            member = contains(space, make_decoder(space)(value))
        except Invalid:
            member = False
        return encode_json({"member": member})

    def record_video(self, directory: str, every: int, prefix: str) -> None:
        """Wrap the env in Gymnasium's RecordVideo, writing ``prefix-episode-N.mp4``
        files into ``directory``."""
        mode = self.env.render_mode
        if mode != "rgb_array":
            raise bad_request(
                f"Recording video needs an env made with render_mode 'rgb_array' (this one has {mode!r}); "
                'create it with "kwargs": {"render_mode": "rgb_array"}, or pass video_callable=false'
            )
        try:
            importlib.import_module("moviepy")
        except ImportError:
            raise bad_request("Recording video needs moviepy, which is not installed on the server (pip install moviepy); or pass video_callable=false")
        from gymnasium.wrappers import RecordVideo

        trigger = None if every < 0 else (lambda episode: episode % every == 0)
        with warnings.catch_warnings():  # the directory may well exist: force and resume say what happens to its files
            warnings.filterwarnings("ignore", message=".*Overwriting existing videos", category=UserWarning)
            self.recorder = self.env = RecordVideo(self.env, directory, episode_trigger=trigger, name_prefix=prefix,
                                                   disable_logger=True)

    def stop_video(self) -> None:
        """Finish the video being recorded, if an episode is (RecordVideo
        asserts that one is), and unwrap the env."""
        if self.recorder is not None:
            if self.recorder.recording:
                self.recorder.stop_recording()
            self.env, self.recorder = self.recorder.env, None

    def close(self) -> None:
        """Finish a video being recorded, then close the env."""
        try:
            self.stop_video()
        finally:
            self.env.close()

    OPS = frozenset({"facts", "reset", "step", "sample", "contains", "render", "space_sample", "space_contains",
                     "record_video", "stop_video", "close"})


# ---------------------------------------------------------------------------
# Instance processes
# ---------------------------------------------------------------------------
#
# With --isolation process (the default) each instance's EnvSide lives in a
# process of its own, so that no env can crash, hang or starve the others,
# and envs step on every core:
#
#   server --control socket--> starter --fork--> one process per instance
#   server <=============== a socket per instance ===============> instance
#
# The starter is a fork of the server made before it serves, with gymnasium,
# numpy, every --import module and every env registered by then already
# loaded, so an instance process costs one fork of it.  It also reaps them,
# so it can tell the server how each one ended (a signal, an exit status).
# The server keeps HTTP, auth, limits, the registry, statistics and monitor
# files; no env object is reachable from it, only a pid and a socket.
#
# The message protocol, on an instance's socket: the server sends
# (op, args), where op names an EnvSide method (or "make", or "adopt"); the
# instance answers (True, value) or (False, error parts).  Every message is
# a 4-byte little-endian length and a pickle: both ends are this file's
# code, and the socket is private to the pair.  The control socket carries
# the same framing, plus the instance's socket (SCM_RIGHTS) with each "start".
#
# Who owns a client's connection, and when (--handoff on, the default):
#
#   * The server, at first: its thread reads each request and answers it,
#     relaying env calls to the instance's process as above.
#   * After HANDOFF_AFTER steps or resets in a row for one instance (an actor
#     stepping its env), that instance's process.  The server's thread sends
#     "adopt" with three descriptors (SCM_RIGHTS): the client's socket, one
#     end of a new report socket, and the busy page; and with them the bytes
#     it had read ahead and the settings the edge needs (token, origins,
#     limits).  Then it waits on the report socket.  The process reads that
#     connection itself and answers the requests for its own instance (step,
#     reset, spaces, sample, contains, render) with the server's own code:
#     the same read_head, Edge, dispatch and response_bytes.  One hop a step.
#   * The server again, when a request on it is for anything else (another
#     instance, a create, the list, a close, the dashboard), or the server
#     asks for it: the process sends "returned" with the bytes it had read of
#     the next request, and the server's thread goes on from there.
#
# On the report socket the process sends ("ledger" | "reported" |
# "returned", [bytes,] | "closed", ledger, polls): what the server counts
# (steps, episodes and resets with their times, last activity, whether the
# env needs a reset or is broken), every REPORT_SECONDS, before the reply
# that ends an episode while a monitor records, and when asked.  The server
# sends ("report",), a look at the details, or ("release",): a close, a
# monitor's start or end, a shutdown.  The busy page, shared memory, holds
# the request the process is serving and since when: the server reads it to
# hold it to --env-timeout and --max-env-memory, to answer it if the process
# dies (a JSON 500 naming the signal, on the client's own connection), and
# to drain at shutdown, all without a message a request.

_LENGTH = struct.Struct("<I")


class Channel:
    """One end of the message protocol on a connected socket.  With
    ``takes_fds``, it reads the file descriptors sent along (an "adopt"'s)
    into ``fds``: read otherwise, they would be lost."""

    __slots__ = ("sock", "_buffer", "_poll", "takes_fds", "fds")

    def __init__(self, sock: socket.socket, takes_fds: bool = False):
        self.sock = sock
        self._buffer = bytearray()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        self._poll = poller.poll
        self.takes_fds = takes_fds
        self.fds: list[int] = []

    def send(self, message: Any, fds: tuple = ()) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        if fds:  # with the first bytes of the message, which the other end reads with recv_fds
            data = _LENGTH.pack(len(data)) + data
            sent = socket.send_fds(self.sock, [data], list(fds))
            self.sock.sendall(data[sent:])
        elif len(data) < 65536:
            self.sock.sendall(_LENGTH.pack(len(data)) + data)  # one write
        else:
            self.sock.sendall(_LENGTH.pack(len(data)))
            self.sock.sendall(data)

    def pending(self) -> bool:
        """Whether a message (or part of one) is read and waiting here."""
        return bool(self._buffer)

    def recv(self, deadline: float | None = None, watch: socket.socket | None = None) -> Any:
        """The next message.  EOFError when the other end is gone,
        TimeoutError past ``deadline`` (a time.monotonic() value),
        ClientGone when the client on ``watch`` hangs up meanwhile."""
        if watch is not None:
            self._wait_watching(deadline, watch)
        buffer = self._buffer
        while True:
            if len(buffer) >= 4:
                end = 4 + _LENGTH.unpack_from(buffer)[0]
                if len(buffer) >= end:
                    with memoryview(buffer) as view, view[4:end] as data:
                        message = pickle.loads(data)
                    del buffer[:end]
                    return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                if not self._poll(math.ceil(left * 1000)):
                    continue
            if self.takes_fds:
                chunk, fds, _, _ = socket.recv_fds(self.sock, 65536, 8)
                self.fds += fds
            else:
                chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            if not buffer and len(chunk) >= 4 and len(chunk) == 4 + _LENGTH.unpack_from(chunk)[0]:
                return pickle.loads(memoryview(chunk)[4:])  # the usual case: one whole message
            buffer += chunk


    def _wait_watching(self, deadline: float | None, watch: socket.socket) -> None:
        """Wait until a message starts to arrive, watching ``watch`` (the
        client's connection) for its end: a client that hangs up while an env
        is made should not leave the process and its slot behind."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(watch, select.POLLIN | _POLLRDHUP)
        watching = True
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(poller.poll(None if left is None else math.ceil(left * 1000)))
            if self.sock.fileno() in events:
                return
            if not events:
                if left is not None and left <= 0:
                    raise TimeoutError
                continue
            flags = events.get(watch.fileno(), 0) if watching else 0
            if flags & (select.POLLHUP | select.POLLERR | _POLLRDHUP):
                raise ClientGone
            if flags:
                try:
                    peeked = watch.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    peeked = b"?"
                except OSError:
                    peeked = b""
                if not peeked:
                    raise ClientGone
                poller.unregister(watch)  # it sent its next request already: it is there
                watching = False


class ClientGone(Exception):
    """The client hung up while its create was making the env."""


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer of a connection has closed it (nothing left to read)."""
    try:
        poller = select.poll()  # not select(): a server's descriptors go past its 1023
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer shut its end


def _send_control(sock: socket.socket, message: Any, fds: tuple = ()) -> None:
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    data = _LENGTH.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def _recv_control(sock: socket.socket) -> tuple[Any, list[int]]:
    data, fds, _, _ = socket.recv_fds(sock, 65536, 4)
    while len(data) < 4 or len(data) < 4 + _LENGTH.unpack_from(data)[0]:
        more = sock.recv(65536)
        if not more:
            raise EOFError
        data += more
    return pickle.loads(data[4:]), fds


def exit_text(code: int) -> str:
    """How a process ended, from ``os.waitstatus_to_exitcode``: "was killed by SIGSEGV"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _open_fds() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return [int(name) for name in os.listdir(folder)]
        except OSError:
            continue
    fds = []
    for fd in range(3, 4096):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            pass
    return fds


def _fresh_fork(keep: tuple[int, ...]) -> None:
    """In a fork of the server: let go of every file the server had open but
    stdout, stderr and ``keep``, and renew what another thread may have held.

    Sockets and pipes held by a fork stay open: the server's listening port
    would stay taken and closed connections would not end.  Each such fd is
    pointed at /dev/null, not closed, so its number stays taken: a stale
    socket object closing it later can't close a file of ours.
    """
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _open_fds():
        if fd not in keep and fd not in (1, 2, null):
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass
    os.dup2(null, 0)
    os.close(null)
    # Locks held by other server threads at the fork stay held in it: new
    # stream objects, a new render lock, our own log handler.
    global _RENDERING
    _RENDERING = threading.Lock()
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, name)
        if old is not None:
            setattr(sys, name, open(fd, "w", buffering=1, encoding=getattr(old, "encoding", None),
                                    errors=getattr(old, "errors", None), closefd=False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s gymhttp[%(process)d] %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.propagate = False


def _kill_group(pid: int, sig: int) -> None:
    """Signal an instance process and whatever it started (its process group)."""
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


# Linux's prctl(2) options: a subreaper adopts its orphaned descendants
# (setsid ones too) instead of init; a death signal ends a child with its parent.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    """prctl(option, value) where Linux has it; False elsewhere or on failure."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children(parent: int) -> list[int]:
    """The pids of a process's living children, from /proc (Linux)."""
    return _children_index().get(parent, [])


def _children_index() -> dict[int, list[int]]:
    """Every living process's children, by parent pid, from one scan of /proc (Linux)."""
    index: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return index
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != b"Z":
                index.setdefault(int(fields[1]), []).append(int(name))
    return index


def _end_adopted(keep: Any = (), seconds: float = 2.0) -> None:
    """Kill every child of this process but ``keep``, and what they started:
    a subreaper's orphaned descendants come to it as its children, so it
    sweeps until none is left (or ``seconds`` pass)."""
    me = os.getpid()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        strays = [pid for pid in _children(me) if pid not in keep]
        if not strays:
            return
        for pid in strays:
            _kill_group(pid, signal.SIGKILL)
        for pid in strays:  # collect each by its pid (never another's: a waitpid(-1) here would take an instance's status)
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.002)


def _reap(children: dict[int, int | None]) -> None:
    """Collect ended instance processes; whatever they left running in their
    group (an async vector env's workers, say) is killed, and so is what they
    started outside it (setsid), which comes to the starter, a subreaper."""
    ended = False
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid in children:
            children[pid] = os.waitstatus_to_exitcode(status)
            _kill_group(pid, signal.SIGKILL)
            ended = True
    if ended:
        _end_adopted(keep={pid for pid, code in children.items() if code is None})


def _starter_main(sock: socket.socket, settings: dict) -> None:
    """The starter process: fork instance processes on request, reap them,
    and end them all when the server goes away."""
    _fresh_fork(keep=(sock.fileno(),))
    # Ctrl-C and a SIGTERM to the server's process group (a shell's kill %1, timeout, a supervisor) are the
    # server's: it closes the instances itself, through the starter, which ends when the server does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # what an instance process leaves (setsid or not) comes here to be ended
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # a child's end wakes select()
    for name in ("gymnasium.envs.classic_control", "gymnasium.vector", "gymnasium.wrappers", "pygame"):
        try:  # what making and rendering a built-in env would import in every instance process
            importlib.import_module(name)
        except Exception:
            pass
    # pygame's "parachute" turns a segfault into an abort(): a crash should name its own signal.
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if faulthandler.is_enabled():  # python -X faulthandler: its tracebacks on a crash are worth keeping
        faulthandler.enable()
    gc.freeze()  # instance processes then don't copy the pages that only the collector touches
    children: dict[int, int | None] = {}  # pid -> exit code once reaped
    while True:
        ready = select.select([sock, wake_r], [], [])[0]
        if wake_r in ready:
            os.read(wake_r, 4096)
        _reap(children)
        if sock not in ready:
            continue
        try:
            (op, *args), fds = _recv_control(sock)
        except (EOFError, OSError):
            break
        reply: Any = None
        if op == "start":
            try:
                pid = os.fork()
            except OSError as exc:  # out of processes or memory: the server says so
                reply = exc.strerror or str(exc)
            else:
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the starter ignores it; an instance (and its children) must not
                    os.close(wake_r)
                    os.close(wake_w)
                    _instance_main(fds[0], sock.fileno(), settings)
                try:
                    os.setpgid(pid, pid)  # the child does the same: whichever runs first
                except OSError:
                    pass
                children[pid] = None
                reply = pid
            for fd in fds:
                os.close(fd)
        elif op == "kill":
            pid, sig = args
            reply = pid in children and children[pid] is None
            if reply:
                _kill_group(pid, sig)
        elif op == "wait":  # -> the exit code, None while it runs, False for a pid not ours
            pid, timeout = args
            deadline = time.monotonic() + timeout
            while children.get(pid, 0) is None and time.monotonic() < deadline:
                time.sleep(0.002)
                _reap(children)
            reply = False if pid not in children else children[pid]
            if reply is not None:
                children.pop(pid, None)
        try:
            _send_control(sock, reply)
        except OSError:
            break
    # The server is gone, or done: no instance outlives it, nor anything they started.
    for pid, code in children.items():
        if code is None:
            _kill_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(code is None for code in children.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
        _reap(children)
    _end_adopted(seconds=max(0.5, deadline - time.monotonic()))


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _pid_rss(pid: int) -> int | None:
    """A process's resident memory in bytes, or None if it is gone."""
    try:  # opened each time: an fd per instance would add up to thousands
        fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return _statm_rss(fd)
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


def _statm_rss(fd: int) -> int:
    """Resident memory in bytes, from an open /proc/<pid>/statm."""
    return int(os.pread(fd, 100, 0).split()[1]) * _PAGE


def _error_parts(exc: HTTPError) -> tuple:
    """An error as it crosses the protocol; :func:`_error_from` rebuilds it."""
    if isinstance(exc, EnvFailure):
        return exc.status.value, exc.message, exc.headers, exc.summary, exc.trace, exc.dead
    return exc.status.value, exc.message, exc.headers, None, "", False


def _error_from(parts: tuple) -> HTTPError:
    status, message, headers, summary, trace, dead = parts
    if summary is None:
        return HTTPError(HTTPStatus(status), message, headers)
    return EnvFailure(HTTPStatus(status), message, summary, dead=dead, trace=trace)


def _instance_main(fd: int, control_fd: int, settings: dict) -> None:
    """An instance process, forked by the starter: serve the env's calls
    until the server closes it or goes away.  Never returns."""
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, control_fd)  # the starter's control socket is not ours
        os.close(null)
        try:
            os.setpgid(0, 0)  # its own process group: a kill takes its workers too
        except OSError:
            pass
        # It dies with the starter, whatever kills it, and adopts what its env leaves behind (setsid or
        # not), to end it all when the instance ends.
        starter = os.getppid()
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != starter:  # the starter died before that took effect
            os._exit(1)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        np.random.seed()  # numpy's legacy global generator: this process's own, not a copy of the starter's
        with socket.socket(fileno=fd) as sock:
            InstanceProcess(Channel(sock, takes_fds=True), settings).run()
    except SystemExit as exc:  # the env called sys.exit()
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _end_adopted()  # nothing it started outlives it
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


# -- connections an instance process owns ----------------------------------------


class BusyPage:
    """A page of memory that the server and one instance process share: the
    request of an owned connection that the process is serving, and since
    when.  The server reads it to answer that request if the process dies,
    and to hold it to --env-timeout and --max-env-memory, without a message
    per request."""

    LAYOUT = struct.Struct("<BBxxxxxxd")  # busy, the op's index in OPS, time.monotonic() when it started
    OPS = ("step", "reset", "render", "sample", "contains", "space_sample", "space_contains")
    _INDEX = {op: i for i, op in enumerate(OPS)}

    def __init__(self, fd: int | None = None):
        if fd is None:
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create("gymhttp-busy")
            else:
                import tempfile
                with tempfile.TemporaryFile() as f:
                    fd = os.dup(f.fileno())
            os.ftruncate(fd, mmap.PAGESIZE)
        self.fd = fd
        self.map = mmap.mmap(fd, mmap.PAGESIZE)

    def mark(self, op: str) -> None:
        self.LAYOUT.pack_into(self.map, 0, 1, self._INDEX.get(op, 0), time.monotonic())

    def clear(self) -> None:
        self.map[0] = 0

    def read(self) -> tuple[str, float] | None:
        """(op, when it started) of the request in progress, or None."""
        busy, index, started = self.LAYOUT.unpack_from(self.map, 0)
        return (self.OPS[index], started) if busy else None


class _Alive:
    ended = None
    pid = None


class OwnInstance:
    """What the routes see of the instance in its own process, which serves
    a connection it owns: calls go straight to the env side, and what the
    server counts (steps, episodes, resets, activity) goes into a ledger that
    the process reports to the server."""

    closed = False
    runner = _Alive()
    counting = contextlib.nullcontext()  # one thread here

    def __init__(self, side: EnvSide, page: BusyPage):
        self.side, self.page = side, page
        self.instance_id, self.num_envs, self.vector = side.instance_id, side.num_envs, side.vector
        self.facts = side.facts()
        self.described: dict[tuple[str, bool], bytes] = {}
        self.steps, self.events, self.last_used = 0, [], 0.0

    def __enter__(self) -> OwnInstance:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def describe(self, which: str, compact: bool) -> bytes:
        return Instance.describe(self, which, compact)  # type: ignore[arg-type]

    def call(self, op: str, *args: Any) -> Any:
        self.page.mark(op)
        try:
            return getattr(self.side, op)(*args)
        except HTTPError:
            raise
        except Exception as exc:
            raise env_failure(exc, op) from exc
        finally:
            self.page.clear()

    def reset_done(self, interrupted: tuple | None) -> None:
        self.events.append(("reset", interrupted, time.time()))

    def count(self, episodes: tuple) -> None:
        self.events.append(("episodes", episodes, time.time()))

    def take_ledger(self) -> tuple:
        """What happened since the last ledger: (steps, events, last activity,
        needs_reset, broken); then a fresh one."""
        ledger = (self.steps, self.events, self.last_used, self.side.needs_reset, self.side.broken)
        self.steps, self.events = 0, []
        return ledger


class OwnHost:
    """The ``server`` that routes get in an instance process: only its own
    instance is there."""

    def __init__(self, instance: OwnInstance):
        self.instance = instance
        self.envs = self
        self.router = ROUTER
        self.lines: dict[bytes, bool] = {}  # request lines seen -> whether they are this process's to answer

    def get(self, instance_id: str) -> OwnInstance:
        if instance_id != self.instance.instance_id:
            raise bad_request(f"Instance_id {short(instance_id)} unknown")
        return self.instance


class Reader:
    """A connection's bytes, read in large pieces, with what is read but not
    yet taken in sight: a connection that changes hands takes it along."""

    def __init__(self, sock: socket.socket, already: bytes = b""):
        self.sock, self.buffer = sock, bytearray(already)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)  # TimeoutError past --timeout, OSError when cut
        self.buffer += chunk
        return bool(chunk)

    def readline(self, limit: int) -> bytes:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\n", 0, limit)
            if end >= 0 or len(buffer) >= limit or not self._fill():
                end = len(buffer) if end < 0 else end + 1
                line = bytes(buffer[:min(end, limit)])
                del buffer[:len(line)]
                return line

    def peek(self, size: int) -> bytearray:
        """What is buffered (reading once if nothing is), not taken."""
        if not self.buffer:
            self._fill()
        return self.buffer

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and self._fill():
            pass
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class _Prepended(io.RawIOBase):
    """A socket's bytes, after some that were read from it already."""

    def __init__(self, data: bytes, raw: Any):
        self.data, self.raw = data, raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.data:
            n = min(len(buffer), len(self.data))
            buffer[:n], self.data = self.data[:n], self.data[n:]
            return n
        return self.raw.readinto(buffer)


def socket_reader(sock: socket.socket, already: bytes = b"") -> Any:
    """A buffered reader of a connection, ``already`` first."""
    if not already:
        return sock.makefile("rb", buffering=65536)
    return io.BufferedReader(_Prepended(already, socket.SocketIO(sock, "rb")), 65536)


def take_buffered(rfile: Any, sock: socket.socket) -> bytes:
    """What a buffered reader (the server's) holds of a connection, read but
    not yet taken, without waiting for more: a connection changing hands
    takes it along."""
    sock.setblocking(False)
    try:
        return bytes(rfile.peek(1 << 20))
    except (BlockingIOError, OSError, ValueError):
        return b""
    finally:
        try:
            sock.setblocking(True)
        except OSError:
            pass


class OwnedConnection:
    """A client connection an instance process owns (see the section's top):
    it reads its requests, answers those for its instance, and gives the
    connection back to the server, with what it read of the next request,
    when one is for anything else or the server asks."""

    def __init__(self, host: OwnHost, sock: socket.socket, report: socket.socket, already: bytes, peer: str, settings: dict):
        self.host, self.sock, self.peer = host, sock, peer
        self.report = Channel(report)
        self.rfile = Reader(sock, already)
        self.edge = Edge(*settings["edge"])
        self.max_body, self.timeout = settings["max_body"], settings["timeout"]
        sock.settimeout(self.timeout)  # no read or write may stall past --timeout
        self.spin, self.log_requests = settings["spin"], settings["log_requests"]
        # A monitor's episodes are reported before the reply that ends them; other counts every
        # REPORT_SECONDS, since a message a step costs a vector of cheap envs a fifth of its speed.
        self.monitored = settings["monitored"]
        self.polling = Polling()
        self.deadline = time.monotonic() + self.timeout  # for the next request to arrive whole
        self.reported = time.monotonic()

    def ours(self, line: bytes) -> bool:
        """Whether a request line asks for what this process answers."""
        known = self.host.lines.get(line)
        if known is not None:
            return known
        words = line.split()
        if len(words) != 3:
            return False
        try:
            route, args = ROUTER.match(words[0].decode("ascii"), words[1].decode("ascii").partition("?")[0])
        except (HTTPError, UnicodeDecodeError):
            return False  # the server answers these as it always does
        ours = route in OWNABLE and args[0] == self.host.instance.instance_id
        if len(self.host.lines) >= 256:
            self.host.lines.clear()
        self.host.lines[line] = ours
        return ours

    def serve(self) -> str | None:
        """Answer the requests that have come; "returned" or "closed" when
        the connection has left this process."""
        polling = self.polling
        while True:
            try:
                line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            except (TimeoutError, OSError):
                return self.close()
            polling._gap = time.perf_counter() - polling._replied
            if not line:
                return self.close()
            if not self.ours(line):
                return self.give_back(line)
            started = time.perf_counter()
            try:
                command, target, version, headers = read_head(self.rfile, line)
                close = not keeps_alive(version, headers)
                cors = self.edge.admit(command, target, headers, self.peer)
                body = read_body(self.rfile, headers, self.max_body, self.sock.sendall)
            except PeerGone:
                return self.close()
            except (FramingError, HTTPError) as exc:
                self.send(exc.status, encode_json({"message": exc.message}), JSON_TYPE, exc.headers, "", True)
                return self.close()
            self.host.instance.last_used = time.time()
            status, extra, payload, content_type = dispatch(self.host, command, target, body, None)
            try:
                check_memory(command, target.partition("?")[0], every=MEMORY_CHECK_SECONDS)
            except _OverMemory as exc:  # the reply is the limit's, and the process ends
                error = exc.error()
                self.send(error.status, encode_json({"message": error.message}), JSON_TYPE, {}, command, True)
                self.close()
                os._exit(3)
            if self.monitored and self.host.instance.events:  # an episode ended (or one began): the server has it
                self.report_ledger()  # before the client does, so it reaches the monitor's files whatever dies next
            polling._succeeded = status < HTTPStatus.BAD_REQUEST
            close = self.send(status, payload, content_type, {**extra, **cors} if cors else extra, command, close)
            polling._replied = time.perf_counter()
            self.deadline = time.monotonic() + self.timeout
            if self.log_requests:
                log.info("%s %s %s %d %.1fms", self.peer, command, target, status, (time.perf_counter() - started) * 1000)
            if close:
                return self.close()
            if not self.rfile.buffer:
                return None  # nothing more read yet: back to the loop, which sees what comes

    def send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict, command: str, close: bool) -> bool:
        data, close = response_bytes(status, body, content_type, headers, command, close)
        try:
            self.sock.sendall(data)
        except OSError:
            return True
        return close

    def report_ledger(self, message: tuple = ("ledger",)) -> None:
        """Tell the server what happened (see :meth:`OwnInstance.take_ledger`)."""
        self.reported = time.monotonic()
        try:
            self.report.send((*message, self.host.instance.take_ledger(), self.polling.spun))
        except OSError:
            pass

    def give_back(self, line: bytes = b"") -> str:
        """The connection goes back to the server, with what was read of it."""
        already = line + bytes(self.rfile.buffer)
        self.report_ledger(("returned", already))
        self.end()
        return "returned"

    def close(self) -> str:
        """The connection ends (the client hung up, or asked, or failed): the
        server closes its end too."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.report_ledger(("closed",))
        self.end()
        return "closed"

    def end(self) -> None:
        for thing in (self.sock, self.report.sock):
            try:
                thing.close()
            except OSError:
                pass


_memory: list | None = None  # [the open /proc/<pid>/statm, --max-env-memory in bytes, when last read], in an instance process
# Between two requests of an owned connection less often than this, it is not read: a read of /proc costs
# as much as a cheap step, and the server's watch covers the time between.
MEMORY_CHECK_SECONDS = 0.001


def check_memory(*during: str, every: float = 0.0) -> None:
    """In an instance process, after each call (``during``, words naming it),
    unless it was read less than ``every`` seconds ago: past
    --max-env-memory, it ends itself (the server names the flag to whoever
    waits)."""
    if _memory is not None:
        now = time.monotonic()
        if now - _memory[2] < every:
            return
        _memory[2] = now
        rss = _statm_rss(_memory[0])
        if rss > _memory[1]:
            raise _OverMemory(rss, _memory[1], " ".join(during))


class _OverMemory(Exception):
    def __init__(self, rss: int, limit: int, during: str):
        super().__init__(during)
        self.rss, self.limit, self.during = rss, limit, during

    def error(self) -> EnvFailure:
        pid, mib = os.getpid(), self.limit >> 20
        return EnvFailure(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"The environment's process (pid {pid}) went past --max-env-memory {mib} MiB (it held "
            f"{self.rss >> 20} MiB) during {self.during}, and was ended; {BROKEN}",
            f"process went past --max-env-memory {mib} MiB during {self.during}", dead=True)


class InstanceProcess:
    """An instance process's loop: the server's calls on its socket, one at
    a time as the protocol says, and the requests of the connections it
    owns, between them."""

    def __init__(self, channel: Channel, settings: dict):
        global _memory
        self.channel = channel
        limit = settings.get("max_memory")
        if limit and os.path.exists("/proc/self/statm"):
            _memory = [os.open(f"/proc/{os.getpid()}/statm", os.O_RDONLY), limit, -math.inf]
        self.side: EnvSide | None = None
        self.host: OwnHost | None = None
        self.owned: dict[int, OwnedConnection] = {}  # by socket fd
        self.reports: dict[int, OwnedConnection] = {}  # by report socket fd
        self.poller = select.poll()  # the call socket, and every owned connection and its report
        self.poller.register(channel.sock, select.POLLIN)
        self.calls = channel.sock.fileno()

    def run(self) -> None:
        while True:
            if self.owned:
                if self.wait_and_serve():
                    return
                continue
            try:
                op, args = self.channel.recv()
            except EOFError:
                return  # the server is gone, or closed its end
            if self.call(op, args):
                return

    def call(self, op: str, args: tuple) -> bool:
        """Answer one of the server's calls; True when the process should end."""
        fds, self.channel.fds = self.channel.fds, []
        try:
            if op == "make":
                self.side = EnvSide(*args)
                result = self.side.facts()
            elif op == "adopt" and self.side is not None:
                result = self.adopt(fds, *args)
            elif self.side is not None and op in EnvSide.OPS:
                result = getattr(self.side, op)(*args)
            else:
                raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"No such call {op!r} on an instance process")
            reply = (True, result)
        except HTTPError as exc:
            reply = (False, _error_parts(exc))
        except Exception as exc:
            reply = (False, _error_parts(env_failure(exc, op)))
        try:
            check_memory(op)
        except _OverMemory as exc:
            self.channel.send((False, _error_parts(exc.error())))
            os._exit(3)
        if op == "close":
            for owned in list(self.owned.values()):  # back to the server, before the process ends
                self.drop(owned)
                owned.give_back()
        self.channel.send(reply)
        return self.side is None or op == "close"  # a refused make, or closed

    def adopt(self, fds: list[int], already: bytes, peer: str, settings: dict) -> None:
        """Take a connection over from the server (see the section's top)."""
        client, report, page = fds
        if self.host is None:
            self.host = OwnHost(OwnInstance(self.side, BusyPage(page)))
        else:
            os.close(page)
        owned = OwnedConnection(self.host, socket.socket(fileno=client), socket.socket(fileno=report), already, peer, settings)
        owned.fd, owned.report_fd = owned.sock.fileno(), owned.report.sock.fileno()
        self.owned[owned.fd] = self.reports[owned.report_fd] = owned
        self.poller.register(owned.fd, select.POLLIN)
        self.poller.register(owned.report_fd, select.POLLIN)
        if already:
            self.serve(owned)

    def drop(self, owned: OwnedConnection) -> None:
        """The connection leaves this process: no more waiting on it."""
        if self.owned.pop(owned.fd, None) is not None:
            self.reports.pop(owned.report_fd, None)
            for fd in (owned.fd, owned.report_fd):
                try:
                    self.poller.unregister(fd)
                except (KeyError, ValueError, OSError):
                    pass

    def serve(self, owned: OwnedConnection) -> None:
        self.drop(owned) if owned.serve() is not None else None

    def asked(self, owned: OwnedConnection) -> None:
        """The server asks, about a connection: for a report now (a look at
        the instance's details), or for the connection back (a shutdown, a
        close, a monitor's start); gone, it wants it back too."""
        while True:
            try:
                (ask,) = owned.report.recv()
            except (EOFError, OSError, ValueError):
                ask = "release"
            if ask != "report":
                self.drop(owned)
                owned.give_back()
                return
            owned.report_ledger(("reported",))
            if not owned.report.pending():
                return

    def wait_and_serve(self) -> bool:
        """Wait for a call, a request, or a report's turn; serve it.  True
        when the process should end."""
        instance = self.host.instance
        now = time.monotonic()
        timeout = min(o.deadline for o in self.owned.values())
        if instance.steps or instance.events:
            timeout = min(timeout, min(o.reported for o in self.owned.values()) + REPORT_SECONDS)
        if len(self.owned) == 1 and not self.channel.pending():
            (owned,) = self.owned.values()
            if owned.polling.may_poll(owned.spin):
                owned.polling.poll_for(self.poller.poll, owned.spin, _never)
        if self.channel.pending():
            events = [(self.calls, select.POLLIN)]
        else:
            events = self.poller.poll(max(0, math.ceil((timeout - now) * 1000)))
        # The server's asks first: a request that comes after a release (at shutdown, say) is the server's.
        for fd, _ in sorted(events, key=lambda event: event[0] not in self.reports) if len(events) > 1 else events:
            if fd == self.calls:
                try:
                    op, args = self.channel.recv()
                except EOFError:
                    return True
                if self.call(op, args):
                    return True
            elif fd in self.owned:
                self.serve(self.owned[fd])
            elif fd in self.reports:
                self.asked(self.reports[fd])
        now = time.monotonic()
        for owned in list(self.owned.values()):
            if now > owned.deadline:  # --timeout: idle (or stalled) too long
                self.drop(owned)
                owned.close()
            elif (instance.steps or instance.events) and now - owned.reported >= REPORT_SECONDS:
                owned.report_ledger()
        return False


def _never() -> bool:
    return False


class ProcessStarter:
    """The server's handle on its starter process (see the section's top)."""

    def __init__(self, settings: dict):
        self.settings = settings  # what instance processes need: the memory limit
        self.lock = threading.Lock()  # one request at a time on the control socket
        self.closed = False
        self.pid, self.sock = self._fork()

    def _fork(self) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair()
        for stream in (sys.stdout, sys.stderr):  # or the fork would write what is buffered once more
            try:
                stream.flush()
            except Exception:
                pass
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _starter_main(theirs, self.settings)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        return pid, ours

    def _request(self, message: tuple, fds: tuple = ()) -> Any:
        with self.lock:
            try:
                _send_control(self.sock, message, fds)
                return _recv_control(self.sock)[0]
            except (OSError, EOFError):
                if message[0] != "start" or self.closed:
                    return False
            # The starter died (someone killed it): fork a new one and try once more.
            log.warning("the process starter (pid %d) ended; starting a new one", self.pid)
            self.sock.close()
            try:
                os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            self.pid, self.sock = self._fork()
            _send_control(self.sock, message, fds)
            return _recv_control(self.sock)[0]

    def start(self) -> tuple[int, socket.socket]:
        """A new instance process: its pid and the server's end of its socket."""
        ours, theirs = socket.socketpair()
        try:
            pid = self._request(("start",), (theirs.fileno(),))
        finally:
            theirs.close()
        if type(pid) is not int:
            ours.close()
            if self.closed:
                raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, "The server is shutting down")
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"Cannot start a process for the instance: {pid}; close some instances")
        return pid, ours

    def kill(self, pid: int) -> None:
        """SIGKILL an instance process and its group, unless it already ended."""
        self._request(("kill", pid, signal.SIGKILL))

    def wait(self, pid: int, timeout: float) -> int | None:
        """An ended instance process's exit code (negative: the signal); None
        while it still runs after ``timeout`` seconds, or when unknown."""
        code = self._request(("wait", pid, timeout))
        return None if code is False else code

    def close(self, timeout: float = 5.0) -> None:
        """End the starter, which ends every instance process left."""
        self.closed = True
        # A thread blocked on the socket is woken (EOF) before its number is
        # freed: closed under it, the number could name a new file by the
        # time its call is restarted (after a stop, say), which it would read.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self.lock:
            self.sock.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.01)
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass


class ProcessRunner:
    """The server's handle on one instance process: a pid and a socket.
    Every call is a message; no env is reachable from here."""

    def __init__(self, server: GymHTTPServer, pid: int, sock: socket.socket):
        self.starter = server.starter
        self.runners = server.runners  # the server's set of live instance processes, which --max-env-memory watches
        self.pid = pid
        self.channel = Channel(sock)
        self.timeout = server.env_timeout
        self.busy = False  # a call is in flight
        self.ended: str | None = None  # "was killed by SIGSEGV during step", once it has
        self.why: str | None = None  # why the server killed it: timeout, memory, closed, shutdown
        self.held = 0  # its memory (see memory()) when the server killed it for memory
        self.page: BusyPage | None = None  # shared with the process once it owns a connection
        self.workers: dict[int, int] | None = None  # an async vector's worker pids -> their RSS when first seen
        self._workers_seen = -math.inf  # time.monotonic() when its children were last listed
        self.runners.add(self)

    def adopt(self, connection: socket.socket, report: socket.socket, already: bytes, peer: str, settings: dict) -> None:
        """Hand a client's connection over to the process (see the section's top)."""
        if self.page is None:
            self.page = BusyPage()
        self.call("adopt", already, peer, settings, fds=(connection.fileno(), report.fileno(), self.page.fd))

    def owned_busy(self) -> tuple[str, float] | None:
        """(op, since when) of a request on a connection it owns, while it serves one."""
        return self.page.read() if self.page is not None and self.ended is None else None

    def call(self, op: str, *args: Any, watch: socket.socket | None = None, fds: tuple = ()) -> Any:
        """Run ``op`` in the instance process; raises what it raised there.
        With ``watch`` (a client's connection), the client's hanging up
        kills the process and ends the call; ``fds`` go along (SCM_RIGHTS)."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self.busy = True
        try:
            self.channel.send((op, args), fds)
            ok, value = self.channel.recv(deadline, watch)
        except ClientGone:
            self.kill("abandoned")
            self.finish(op)
            log.info("the client of %s hung up during its %s; its process (pid %d) was killed", op, op, self.pid)
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"The client hung up during {op}; its process was killed")
        except TimeoutError:
            self.kill("timeout")
            self.finish(op)
            raise self._gone(op)
        except (EOFError, OSError):
            self.finish(op)
            raise self._gone(op)
        finally:
            self.busy = False
        if ok:
            return value
        error = _error_from(value)
        if isinstance(error, EnvFailure) and error.dead:
            self.finish(op)
        raise error

    def _gone(self, op: str) -> HTTPError:
        """Why a call got no answer: the process ended, or was ended."""
        pid, why = self.pid, self.why
        if why == "timeout":
            return EnvFailure(
                HTTPStatus.GATEWAY_TIMEOUT,
                f"The environment took longer than --env-timeout {self.timeout:g} s to {op}, so its process "
                f"(pid {pid}) was killed; {BROKEN}",
                f"ran past --env-timeout {self.timeout:g} s during {op} (its process was killed)", dead=True,
            )
        if why == "closed":
            return HTTPError(HTTPStatus.GONE, f"The instance was closed while its {op} ran; its process (pid {pid}) was killed")
        if why == "shutdown":
            return HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"The server is shutting down; the environment's process was killed during {op}")
        if why == "memory":
            mib = self.starter.settings["max_memory"] >> 20
            return EnvFailure(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                f"The environment's process (pid {pid}) went past --max-env-memory {mib} MiB (it held {self.held >> 20} MiB"
                f"{', its workers included' if self.workers else ''}) "
                f"during {op}, and was killed; {BROKEN}",
                f"process went past --max-env-memory {mib} MiB during {op}", dead=True,
            )
        return EnvFailure(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"The environment's process (pid {pid}) {self.ended}; {BROKEN}",
            f"process (pid {pid}) {self.ended}", dead=True,
        )

    def kill(self, why: str) -> None:
        """End the process from another thread; a call in flight then fails saying ``why``."""
        if self.ended is None:
            self.why = self.why or why
            self.starter.kill(self.pid)

    def finish(self, op: str = "") -> None:
        """After the process ended (or to end it): close our end, learn how it ended."""
        if self.ended is not None:
            return
        try:
            self.channel.sock.close()
        except OSError:
            pass
        code = self.starter.wait(self.pid, 1.0)
        if code is None:  # it closed its socket but lives on: end it
            self.starter.kill(self.pid)
            code = self.starter.wait(self.pid, 1.0)
        where = f" during {op}" if op else ""
        self.ended = (exit_text(code) if code is not None else "ended") + where
        self.runners.discard(self)

    def close(self, seconds: float) -> None:
        """Close the env (within ``seconds``) and end the process."""
        if self.ended is None:
            self.busy = True
            try:
                self.channel.send(("close", ()))
                self.channel.recv(time.monotonic() + seconds)
            except (TimeoutError, EOFError, OSError):
                self.kill("closed")
            finally:
                self.busy = False
        self.finish()

    def rss(self) -> int | None:
        """The process's resident memory in bytes, or None once it ended."""
        return None if self.ended is not None else _pid_rss(self.pid)

    def memory(self, children: Callable[[int], list[int]] | None = None) -> int | None:
        """What --max-env-memory holds the instance to: its process's RSS,
        and for an async vector what each of its workers has grown since it
        was first seen (their RSS then is mostly pages shared with this
        process, which a sum would count once a worker).  ``children`` lists
        a pid's children (one scan of /proc for all the instances)."""
        rss = self.rss()
        if rss is None or self.workers is None:
            return rss
        if time.monotonic() - self._workers_seen > WORKERS_RELIST:  # listing /proc costs; workers live as long as the vector
            self.list_workers(children)
        for pid, first in self.workers.items():
            rss += max(0, (_pid_rss(pid) or first) - first)
        return rss

    def list_workers(self, children: Callable[[int], list[int]] | None = None) -> None:
        """Find an async vector's workers (once its make is done, and now and
        then after), each with its RSS when first seen."""
        self._workers_seen = time.monotonic()
        known = self.workers or {}
        self.workers = {pid: known.get(pid) or _pid_rss(pid) or 0 for pid in (children or _children)(self.pid)}


class Owner:
    """The server's side of a connection an instance process owns: the
    server's thread that handed it over waits here, counting what the
    process reports, until the connection comes back or ends."""

    def __init__(self, handler: GymHTTPRequestHandler, instance: Instance, runner: ProcessRunner, report: socket.socket):
        self.handler, self.instance, self.runner = handler, instance, runner
        self.report = Channel(report)
        self.done = threading.Event()
        self.spun = handler.spun  # the handler's polls before; the process's are added to them
        self._released = False
        self._lock = threading.Lock()
        self._answers = threading.Condition(self._lock)
        self._answered = 0  # reports sent because we asked for one

    def ask_report(self, seconds: float) -> bool:
        """Ask for what the process has not reported yet, and wait for it (up
        to ``seconds``); True once it is counted.  The connection stays there."""
        with self._lock:
            if not (self._released or self.done.is_set()):
                before = self._answered
                try:
                    self.report.send(("report",))
                except OSError:
                    return False
                return self._answers.wait_for(lambda: self._answered > before or self.done.is_set(), seconds)
        return self.done.wait(seconds)  # it is coming back, and its last report with it

    def release(self) -> None:
        """Ask for the connection back, once."""
        with self._lock:
            if self._released or self.done.is_set():
                return
            self._released = True
            try:
                self.report.send(("release",))
            except OSError:
                pass

    def wait(self) -> bytes | None:
        """Until the connection is back (then what was read of it) or gone (None)."""
        server = self.handler.server
        try:
            while True:
                if server._shutdown_started.is_set():
                    self.release()
                try:
                    message = self.report.recv(time.monotonic() + 0.25)
                except TimeoutError:
                    continue
                except (EOFError, OSError):
                    return self._lost()
                kind, ledger, spun = message[0], message[-2], message[-1]
                self.instance.apply_ledger(ledger)
                self.handler.spun = self.spun + spun
                if kind == "reported":
                    with self._lock:
                        self._answered += 1
                        self._answers.notify_all()
                elif kind == "returned":
                    return message[1]
                elif kind == "closed":
                    return None
        finally:
            self.report.sock.close()
            with self._lock:
                self.done.set()
                self._answers.notify_all()

    def _lost(self) -> bytes | None:
        """The process ended while it owned the connection: a request it was
        serving gets its answer here, as a relayed one would; an idle
        connection is the server's again."""
        runner = self.runner
        busy = runner.page.read() if runner.page is not None else None  # whoever noticed the death first
        op = busy[0] if busy else ""
        runner.finish(op)
        if busy is None:
            self.instance.broken = self.instance.broken or f"process {runner.ended}"
            return b""
        error = runner._gone(op)
        if isinstance(error, EnvFailure):  # what the 409s after it say, as for a relayed call
            self.instance.broken = error.summary
        handler = self.handler
        handler.close_connection, handler.command = True, "POST"
        handler.reply(error.status, encode_json({"message": error.message}), JSON_TYPE, {})
        return None


class LocalRunner:
    """Thread isolation: the EnvSide in the server process.

    With --env-timeout each call runs on the instance's own thread, so the
    request can stop waiting for it.  A call past the deadline answers 504
    and the env is abandoned: a thread stuck in an env cannot be stopped.
    """

    pid = None
    busy = False

    def __init__(self, side: EnvSide | None, timeout: float | None):
        self.side = side
        self.timeout = timeout
        self.ended: str | None = None
        self.why: str | None = None
        self._jobs: queue.SimpleQueue | None = None

    @classmethod
    def make(cls, make_args: tuple, timeout: float | None) -> tuple[LocalRunner, dict]:
        runner = cls(None, timeout)
        try:
            runner.side = runner._call(EnvSide, make_args, "make")
            return runner, runner._call(runner.side.facts, (), "make")
        except BaseException:
            if runner._jobs is not None:
                runner._jobs.put(None)  # a refused make: its thread ends too
            raise

    def call(self, op: str, *args: Any) -> Any:
        return self._call(getattr(self.side, op), args, op)

    def _call(self, function: Callable, args: tuple, op: str) -> Any:
        if self.timeout is None:
            return self._run(function, args, op)
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(self._jobs,), name="gymhttp-env", daemon=True).start()
        done = threading.Event()
        job = [function, args, op, done, None]
        self._jobs.put(job)
        if not done.wait(self.timeout):
            self.ended = f"ran past --env-timeout {self.timeout:g} s during {op}"
            self.why = "timeout"
            raise EnvFailure(
                HTTPStatus.GATEWAY_TIMEOUT,
                f"The environment took longer than --env-timeout {self.timeout:g} s to {op}; with --isolation thread its "
                f"thread cannot be stopped and is left behind; {BROKEN_IN_THREAD}",
                f"{self.ended} (its thread is left behind)", dead=True,
            )
        ok, value = job[4]
        if ok:
            return value
        raise value

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return  # the env was closed
            function, args, op, done = job[:4]
            try:
                job[4] = (True, self._run(function, args, op))
            except BaseException as exc:
                job[4] = (False, exc)
            done.set()
            if self.ended is not None:
                return  # abandoned: the request stopped waiting

    @staticmethod
    def _run(function: Callable, args: tuple, op: str) -> Any:
        try:
            return function(*args)
        except HTTPError:
            raise
        except Exception as exc:
            raise env_failure(exc, op) from exc

    def kill(self, why: str) -> None:
        """Nothing to kill in a thread; a stuck call is left behind."""
        self.why = self.why or why

    def close(self, seconds: float) -> None:
        if self.ended is None and self.side is not None:
            try:
                self._call(self.side.close, (), "close")
            except HTTPError as exc:
                log.warning("closing an env failed: %s", exc.message)
            finally:
                self.ended = self.ended or "closed"
                if self._jobs is not None:
                    self._jobs.put(None)  # its thread ends (or, stuck in the close, ends when it comes back)

    def rss(self) -> None:
        return None

    def owned_busy(self) -> None:
        return None  # threads own no connection


# ---------------------------------------------------------------------------
# Instances: the server's registry, statistics and monitors
# ---------------------------------------------------------------------------


_STATS_FIELDS = (b"timestamps", b"episode_lengths", b"episode_rewards", b"episode_types")  # of a stats file, in order


class Monitor:
    """What gym's old ``Monitor`` wrote, for a Gymnasium env: per-episode
    lengths, returns and timestamps in ``openaigym.*.stats.json`` plus a
    manifest, and videos through Gymnasium's ``RecordVideo``.

    Its files are written relative to the directory opened once at start,
    never following a symlink, so a directory swapped for a link later is
    not written through.  Each write is atomic (a temporary file, fsync,
    rename); the server flushes new episodes within a second.
    """

    _counter = itertools.count(1)

    def __init__(self, directory: str, env_id: str, force: bool, resume: bool, batch: int | None = None):
        self.directory = directory
        self.env_id = env_id
        os.makedirs(directory, exist_ok=True)
        self.fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            existing = [f for f in os.listdir(self.fd) if f.startswith("openaigym.")]
            if existing and force:
                for name in existing:
                    if not stat.S_ISDIR(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                        os.unlink(name, dir_fd=self.fd)
            elif existing and not resume:
                raise bad_request(
                    f"Monitor directory {short(directory)} already holds monitor files ({short(sorted(existing)[:3])}); "
                    "pass force=true to clear them, resume=true to keep them, or use a new directory"
                )
        except BaseException:
            os.close(self.fd)
            raise
        self.batch = next(Monitor._counter) if batch is None else batch
        self.video_prefix = Monitor.video_name(self.batch)
        self.initial_reset_timestamp: float | None = None
        # The episodes of the part being filled, each field as its JSON text so far; full parts wait in
        # ``sealed`` for the next flush, which writes them once and lets them go.
        self.part = 0
        self.count = 0  # episodes in the part being filled
        self.fields = [bytearray() for _ in _STATS_FIELDS]
        self.sealed: list[tuple[int, list[bytes]]] = []
        self.episodes = 0  # all told
        self.video_every = 0  # the env side records videos on this schedule (record_video's ``every``); 0: none
        self.video_runs = 0  # fresh envs since (their videos get a name of their own)
        self.dirty = True  # episodes not yet in the file
        self._lock = threading.Lock()  # the lists (request threads add, the flusher reads)
        self._writing = threading.RLock()  # one flush at a time, and none after close

    @staticmethod
    def video_name(batch: int) -> str:
        """The start of a batch's video files: ``<it>-episode-N.mp4``."""
        return f"openaigym.video.{batch}.{os.getpid()}"

    def on_reset(self, interrupted: tuple | None, when: float | None = None) -> None:
        """A reset (at ``when``, now by default); an episode it cut short
        counts, as gym's Monitor counted it."""
        when = time.time() if when is None else when
        with self._lock:
            if self.initial_reset_timestamp is None:
                self.initial_reset_timestamp = when
            if interrupted is not None:
                self._add(*interrupted, when)

    def record(self, episodes: tuple, when: float | None = None) -> None:
        when = time.time() if when is None else when
        with self._lock:
            for total, length in episodes:
                self._add(total, length, when)

    def _add(self, total: float, length: int, when: float) -> None:
        separator = b"," if self.count else b""
        for field, value in zip(self.fields, (when, length, total, "t")):
            field += separator + _encode_value(value)
        self.count += 1
        self.episodes += 1
        self.dirty = True
        if self.count == MONITOR_PART:  # full: written once more, then let go
            self.sealed.append((self.part, [bytes(f) for f in self.fields]))
            self.part += 1
            self.count = 0
            self.fields = [bytearray() for _ in _STATS_FIELDS]

    def names(self, part: int) -> tuple[str, str]:
        """A part's stats file and manifest: the first as gym named them, the
        next ones with the part's number, so that gym's loaders merge them."""
        suffix = f".{part}" if part else ""
        return (f"openaigym.episode_batch.{self.batch}.{os.getpid()}{suffix}.stats.json",
                f"openaigym.manifest.{self.batch}{suffix}.manifest.json")

    @property
    def stats_name(self) -> str:
        return self.names(0)[0]

    def flush(self) -> None:
        """Write the parts with new episodes, each file atomically.  The cost
        is that of one part, however long the run: a monitor keeps in memory
        only the part being filled (at most MONITOR_PART episodes)."""
        with self._writing:
            if self.fd < 0:
                return  # closed
            with self._lock:
                self.dirty = False
                parts, self.sealed = self.sealed, []
                if self.count or self.part == 0:  # the first part's files exist from the start, even empty
                    parts.append((self.part, [bytes(f) for f in self.fields]))
                started = _encode_value(self.initial_reset_timestamp)
            ours = (self.video_prefix + "-", self.video_prefix + ".")  # <prefix>-episode-N, <prefix>.<run>-episode-N
            videos = sorted(n for n in os.listdir(self.fd) if n.startswith(ours) and n.endswith(".mp4")) if self.video_every else []
            for part, fields in parts:
                stats_name, manifest_name = self.names(part)
                stats = b"".join((b'{"initial_reset_timestamp":', started, *(
                    b',"%s":[%s]' % (name, field) for name, field in zip(_STATS_FIELDS, fields)), b"}"))
                manifest = encode_json({
                    "stats": stats_name,
                    "videos": [[name, None] for name in videos] if part == 0 else [],  # each video listed once
                    "env_info": {"gym_version": gymnasium.__version__, "env_id": self.env_id, "server": f"gymhttp {__version__}"},
                })
                self._write(stats_name, stats)
                self._write(manifest_name, manifest)

    def _write(self, name: str, data: bytes) -> None:
        tmp = name + ".tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, 0o644, dir_fd=self.fd)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def close(self) -> None:
        """Flush, then let go of the directory."""
        with self._writing:
            if self.fd < 0:
                return
            try:
                self.flush()
            finally:
                os.close(self.fd)
                self.fd = -1


class Instance:
    """The server's record of one instance: how to reach its env (a runner),
    what the env side told it once (``facts``), statistics and the monitor.

    ``with instance:`` takes its lock, so calls on one instance run one at a
    time while calls on different instances run side by side; it answers
    "unknown" once the instance is closed, even to a request that waited.
    """

    def __init__(self, instance_id: str, env_id: str, make_args: tuple, *, num_envs: int, encoding: str, seed: int | None):
        self.instance_id = instance_id
        self.env_id = env_id
        self.make_args = make_args  # to make the env afresh after its process died
        self.num_envs = num_envs
        self.vector = num_envs > 1
        self.encoding = encoding
        self.runner: ProcessRunner | LocalRunner = None  # type: ignore[assignment]
        self.facts: dict = {}
        self.described: dict[tuple[str, bool], bytes] = {}  # (which space, compact) -> its reply, made once
        self.lock = threading.Lock()
        self.pending_seed = seed  # seeds the first reset when the client gives none
        self.needs_reset = True
        self.broken: str | None = None
        self.closed = False
        self.monitor: Monitor | None = None
        self.created = self.last_used = time.time()
        self.steps = 0
        self.episodes = 0
        self.recent = collections.deque(maxlen=RECENT_EPISODES)  # (return, length, time)
        self.processes = 0  # it started: its own, and an async vector's workers
        self.owners: set[Owner] = set()  # connections its process owns, each with the server's thread that waits
        self.counting = threading.Lock()  # the counts, which a relayed call and an owner's report both add to

    def __enter__(self) -> Instance:
        while not self.lock.acquire(timeout=0.25):
            if self.closed:
                raise bad_request(f"Instance_id {self.instance_id} unknown")
        if self.closed:
            self.lock.release()
            raise bad_request(f"Instance_id {self.instance_id} unknown")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()

    def call(self, op: str, *args: Any) -> Any:
        """Call into the env.  A failure in step or reset, or one that ended
        the env, leaves the instance broken."""
        runner = self.runner
        if runner.ended is not None:
            self.broken = self.broken or f"process {runner.ended}"
            raise HTTPError(HTTPStatus.CONFLICT, self.broken_message())
        try:
            result = runner.call(op, *args)
        except EnvFailure as exc:
            if exc.dead or op in ("step", "reset"):
                self.broken = exc.summary
            raise
        if self.closed:  # a thread stuck in the env came back after a close gave up on it
            raise HTTPError(HTTPStatus.GONE, f"The instance was closed while its {op} ran")
        return result

    def describe(self, which: str, compact: bool) -> bytes:
        """The reply of a space route: ``{"info": ...}`` (and ``single_info``
        for vectors), with Box bounds compact or, as old clients read them, flat."""
        key = (which, compact)
        reply = self.described.get(key)
        if reply is None:
            def one(name: str) -> dict:
                info = self.facts[f"{name}_space"]
                return info if compact else expand_bounds(info)

            parts = {"info": one(which)}
            if self.vector:
                parts["single_info"] = one(f"single_{which}")
            reply = self.described[key] = encode_json(parts)
        return reply

    def broken_message(self) -> str:
        again = "start a fresh process" if self.runner.ended is not None and self.runner.pid else "try again"
        return (f"Instance {self.instance_id} is broken: its environment {self.broken}; "
                f"reset it (POST /v1/envs/<id>/reset/) to {again}, or close it")

    def reset_done(self, interrupted: tuple | None, when: float | None = None) -> None:
        self.broken = None
        self.needs_reset = False
        self.pending_seed = None
        if self.monitor is not None:
            self.monitor.on_reset(interrupted, when)

    def count(self, episodes: tuple, when: float | None = None) -> None:
        """Episodes that ended (at ``when``, now by default), as the env side reported them."""
        when = time.time() if when is None else when
        self.recent.extend((total, length, when) for total, length in episodes)
        self.episodes += len(episodes)
        if self.monitor is not None:
            self.monitor.record(episodes, when)

    def apply_ledger(self, ledger: tuple) -> None:
        """What the instance's process did on connections it owns (see
        :meth:`OwnInstance.take_ledger`), counted here as if relayed."""
        steps, events, last_used, needs_reset, broken = ledger
        with self.counting:
            self.steps += steps
            for kind, value, when in events:
                if kind == "reset":
                    self.reset_done(value, when)
                else:
                    self.count(value, when)
            self.needs_reset, self.broken = needs_reset, broken
            self.last_used = max(self.last_used, last_used)

    def report_owners(self, seconds: float) -> bool:
        """Have the process report what it did on the connections it owns and
        has not reported yet (at most REPORT_SECONDS of it); True once every
        report is counted, within ``seconds``.  Details see current counts so."""
        deadline = time.monotonic() + seconds
        return all([owner.ask_report(max(0.0, deadline - time.monotonic())) for owner in list(self.owners)])

    def release_owners(self, seconds: float) -> bool:
        """Ask the process for every connection it owns back (and so for what
        it has not reported yet); True once it has given them all, within
        ``seconds``.  Monitors and closes see the current counts so."""
        owners = list(self.owners)
        if not owners:
            return True
        for owner in owners:
            owner.release()
        deadline = time.monotonic() + seconds
        for owner in owners:
            if not owner.done.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def close(self, seconds: float = 10.0) -> None:
        """Flush and close the monitor, close the env (within ``seconds``);
        safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            self.runner.close(seconds)
        except Exception:
            log.exception("closing %s (%s) failed", self.instance_id, self.env_id)
        self.close_monitor()

    def close_monitor(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            try:
                monitor.close()
            except Exception:
                log.exception("flushing the monitor of %s failed", self.instance_id)


class Envs:
    """The server's instances, by id.  The lock guards the dict only; calls
    into environments hold each instance's own lock."""

    def __init__(self, max_envs: int = DEFAULT_MAX_ENVS, max_processes: int | None = None, prefix: str = ""):
        self.max_envs = max_envs
        self.prefix = prefix  # "a-" on node a of a cluster (--node-id): the gateway routes by it
        self.max_processes = max_processes if max_processes is not None else default_max_processes()
        self.processes = 0  # that the instances started: their own processes and async workers
        self._instances: dict[str, Instance] = {}
        self._lock = threading.Lock()

    def add(self, make: Callable[[str], Instance], processes: int = 0) -> Instance:
        """Reserve an id (and ``processes``) under the limits, build the
        instance outside the lock."""
        with self._lock:
            if len(self._instances) >= self.max_envs:
                raise HTTPError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"The server already holds {len(self._instances)} instances, its limit (--max-envs {self.max_envs}); "
                    "close some (POST /v1/envs/<id>/close/) or restart the server with a larger --max-envs",
                )
            if self.processes + processes > self.max_processes:
                raise HTTPError(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    f"This instance would start {processes} processes, and the server's instances already run "
                    f"{self.processes} of at most {self.max_processes} (--max-processes); close some instances, "
                    "use a sync vector (no process per sub-env), or restart the server with a larger --max-processes",
                )
            self.processes += processes
            instance_id = self.prefix + secrets.token_hex(ID_LENGTH // 2)
            while instance_id in self._instances:
                instance_id = self.prefix + secrets.token_hex(ID_LENGTH // 2)
            self._instances[instance_id] = None  # type: ignore[assignment]  # reserved
        try:
            instance = make(instance_id)
        except BaseException:
            with self._lock:
                self._instances.pop(instance_id, None)
                self.processes -= processes
            raise
        instance.processes = processes
        with self._lock:
            self._instances[instance_id] = instance
        return instance

    def get(self, instance_id: str) -> Instance:
        """The instance, or the v1 400 ``Instance_id <id> unknown``."""
        instance = self._instances.get(instance_id)
        if instance is None:
            raise bad_request(f"Instance_id {short(instance_id)} unknown")
        return instance

    def remove(self, instance_id: str) -> Instance | None:
        with self._lock:
            instance = self._instances.pop(instance_id, None)
            if instance is not None:
                self.processes -= instance.processes
            return instance

    def all(self) -> list[Instance]:
        with self._lock:
            return [i for i in self._instances.values() if i is not None]

    def close_all(self, seconds: float) -> None:
        """Close every instance (server shutdown) within about ``seconds``, side
        by side; one stuck in a call is left to the caller to kill, but its
        monitor is flushed all the same."""
        deadline = time.monotonic() + seconds

        def close(instance: Instance) -> None:
            if instance.lock.acquire(timeout=max(0.0, deadline - time.monotonic() - 1.0)):
                try:
                    instance.close(max(0.1, deadline - time.monotonic()))
                finally:
                    instance.lock.release()
            else:
                instance.close_monitor()

        threads = []
        for instance in self.all():
            thread = threading.Thread(target=close, args=(instance,), name="gymhttp-close", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for instance in self.all():
            instance.close_monitor()  # whatever is still stuck: its episodes at least reach the file
            self.remove(instance.instance_id)

    def reap_idle(self, idle_seconds: float) -> list[str]:
        """Close instances untouched for ``idle_seconds``; skip busy ones."""
        cutoff = time.time() - idle_seconds
        reaped = []
        for instance in self.all():
            if instance.last_used < cutoff and instance.release_owners(OWNED_REPORT_WAIT) and instance.lock.acquire(blocking=False):
                try:
                    if instance.last_used < cutoff and not instance.closed:
                        self.remove(instance.instance_id)
                        instance.close()
                        reaped.append(instance.instance_id)
                finally:
                    instance.lock.release()
        return reaped


# ---------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------
#
# A handler takes (server, request, *path_args) and returns a dict (200 JSON),
# bytes (200, JSON already encoded by the env side), None (204), or a
# Response.  Anything it raises is mapped in one place,
# GymHTTPServer.dispatch.


class Response:
    """A reply other than 200 JSON."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: HTTPStatus, body: bytes = b"", content_type: str = JSON_TYPE, headers: dict | None = None):
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}


class Request:
    """What a route gets: the method, the raw body, and the parameters,
    parsed from the body (or the query, for GET) only when asked for: a step's
    body goes to the env side unparsed."""

    __slots__ = ("method", "body", "query", "connection", "_params")

    def __init__(self, method: str, body: bytes, query: str, connection: socket.socket | None = None):
        self.method, self.body, self.query, self._params = method, body, query, None
        self.connection = connection  # the client's socket: a create stops when its client hangs up

    @property
    def params(self) -> dict:
        """The parameters; the body must be a JSON object (or empty, or null)."""
        if self._params is None:
            if self.query and self.method in ("GET", "HEAD"):  # GET parameters come in the query
                self._params = dict(parse_qsl(self.query, keep_blank_values=True))
            else:
                self._params = decode_json_body(self.body)
        return self._params

    @property
    def optional_params(self) -> dict:
        """The parameters of a route whose parameters are all optional: old
        clients (Ruby, Lua) send the body "" there, and [] means none too."""
        if self._params is None and self.body.strip() in (b'""', b"[]"):
            self._params = {}
        return self.params



def required(params: dict, name: str) -> Any:
    """A required parameter; null, "" and [] count as missing, as in the original."""
    value = params.get(name)
    if value is None or value == "" or value == []:
        raise bad_request(f"A required request parameter '{name}' was not provided")
    return value


def check_type(name: str, value: Any, kinds: tuple, wanted: str) -> Any:
    """400 naming ``name`` unless ``value`` is one of ``kinds`` (bool is never
    int); returns it, an integral float (``5.0``) as the int it is in JSON."""
    if isinstance(value, bool) and bool not in kinds:
        raise bad_request(f"Parameter '{name}' must be {wanted}, not {short(value)}")
    if int in kinds and type(value) is float and value.is_integer():
        return int(value)
    if not isinstance(value, kinds):
        raise bad_request(f"Parameter '{name}' must be {wanted}, not a JSON {json_type(value)}: {short(value)}")
    return value


def optional(params: dict, name: str, kinds: tuple, wanted: str, default: Any = None) -> Any:
    """An optional parameter of a JSON type; null means absent."""
    value = params.get(name)
    if value is None:
        return default
    return check_type(name, value, kinds, wanted)


def seed_param(params: dict, name: str = "seed") -> int | list | None:
    """A seed: a non-negative integer or null (0 is a seed)."""
    seed = optional(params, name, (int,), "a non-negative integer or null")
    if seed is not None and seed < 0:
        raise bad_request(f"Parameter '{name}' must be a non-negative integer or null, not {short(seed)}")
    return seed


def _touch(server: GymHTTPServer, instance_id: str) -> Instance:
    instance = server.envs.get(instance_id)
    instance.last_used = time.time()
    return instance


def route_create(server: GymHTTPServer, request: Request) -> dict:
    params = request.params
    env_id = required(params, "env_id")
    check_type("env_id", env_id, (str,), "a string such as 'CartPole-v1'")
    seed = seed_param(params)
    kwargs = optional(params, "kwargs", (dict,), "an object of keyword arguments for gymnasium.make", {})
    num_envs = optional(params, "num_envs", (int,), "a positive integer", 1)
    if not 1 <= num_envs <= MAX_NUM_ENVS:
        raise bad_request(f"Parameter 'num_envs' must be between 1 and {MAX_NUM_ENVS}, not {short(num_envs)}")
    encoding = optional(params, "encoding", (str,), "'list', 'base64' or 'typed'", "list")
    if encoding not in ENCODINGS:
        raise bad_request(f"Parameter 'encoding' must be 'list', 'base64' or 'typed', not {short(encoding)}")
    mode = optional(params, "vectorization_mode", (str,), "'sync', 'async' or 'vector_entry_point'")
    if mode is not None and mode not in ("sync", "async", "vector_entry_point"):
        raise bad_request(f"Parameter 'vectorization_mode' must be 'sync', 'async' or 'vector_entry_point', not {short(mode)}")
    vector_kwargs = optional(params, "vector_kwargs", (dict,), "an object of keyword arguments for the vector env", {})
    if num_envs == 1 and (mode is not None or vector_kwargs):
        raise bad_request("Parameters 'vectorization_mode' and 'vector_kwargs' need 'num_envs' above 1")
    env_id = server.check_env_id(env_id)
    wrappers = server.check_wrappers(params.get("wrappers"))
    if kwargs.get("render_mode") == "human":
        raise bad_request(
            "render_mode 'human' draws in a window on the server's screen, where nobody is watching, and slows "
            "every step to the env's render_fps; use \"rgb_array\" and watch the frames on the dashboard (GET /) "
            "or fetch them (GET /v1/envs/<id>/render/); from Python, client.RemoteEnv(..., render_mode=\"human\") "
            "shows them in a local window"
        )
    processes = (server.starter is not None) + (num_envs if mode == "async" else 0)

    def build(instance_id: str) -> Instance:
        make_args = (instance_id, env_id, kwargs, num_envs, mode, vector_kwargs, encoding, wrappers, seed)
        instance = Instance(instance_id, env_id, make_args, num_envs=num_envs, encoding=encoding, seed=seed)
        try:
            instance.runner, instance.facts = server.start_env(make_args, request.connection)
        except EnvFailure as exc:  # no id was returned: "reset it or close it" would make no sense
            raise EnvFailure(exc.status, exc.message.replace(BROKEN, NOT_MADE).replace(BROKEN_IN_THREAD, NOT_MADE),
                             exc.summary, dead=exc.dead, trace=exc.trace) from None
        return instance

    instance = server.envs.add(build, processes)
    log.info("created %s: %s x%d (pid %s)", instance.instance_id, env_id, num_envs, instance.runner.pid)
    return {"instance_id": instance.instance_id}


def route_list(server: GymHTTPServer, request: Request) -> dict | Response:
    envs = {i.instance_id: i.env_id for i in server.envs.all()}
    local = request.params.get("local") if request.query else None
    if local not in (None, "1"):
        raise bad_request(f"Parameter 'local' must be 1 (this node's instances only) or absent, not {short(local)}")
    if not server.peers or local == "1":
        return {"all_envs": envs}
    missing = []
    for peer, listed in zip(server.peers, server.ask_peers()):  # the cluster's list, from any node
        if listed is None:
            missing.append(peer)
        else:
            envs.update(listed)
    if not missing:
        return {"all_envs": envs}
    return Response(HTTPStatus.OK, encode_json({"all_envs": envs, "missing_peers": missing}),
                    headers={"Gymhttp-Missing-Peers": ", ".join(missing)})


def route_reset(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    instance = _touch(server, instance_id)
    params = request.optional_params
    seed = params.get("seed")
    if instance.vector and isinstance(seed, list):
        if len(seed) != instance.num_envs or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seed):
            raise bad_request(f"Parameter 'seed' must be a non-negative integer or a list of {instance.num_envs} of them, not {short(seed)}")
        if not instance.facts.get("seed_lists"):  # checked first, so that the env is left as it was
            raise bad_request(
                "This vector env (made from its vector entry point) takes no list of seeds; "
                "pass one integer seed, from which it seeds its sub-envs"
            )
    elif isinstance(seed, list):
        raise bad_request(f"Parameter 'seed' takes a list only for vector instances (num_envs > 1); instance "
                          f"{instance_id} has one env: pass one integer, not {short(seed)}")
    else:
        seed = seed_param(params)
    options = optional(params, "options", (dict,), "an object of reset options")
    if instance.vector and options and "reset_mask" in options:
        options = dict(options, reset_mask=_reset_mask(options["reset_mask"], instance.num_envs))
    with instance:
        if instance.runner.ended is not None:  # its process died or was killed: make the env afresh
            server.restart_env(instance, request.connection)
        interrupted, payload = instance.call("reset", seed, options)  # with no seed, the env side knows which
        with instance.counting:
            instance.reset_done(interrupted)
    return payload


def _reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """options.reset_mask (autoreset mode Disabled) as the bool array Gymnasium wants."""
    try:
        if is_envelope(mask):
            value = from_envelope(mask)
        elif isinstance(mask, list) and all(type(m) is bool for m in mask):
            value = np.array(mask, dtype=bool)
        else:
            raise Invalid("not a list of booleans")
    except ValueError:
        value = None
    if value is None or value.dtype != bool or value.shape != (num_envs,):
        raise bad_request(f"Option 'reset_mask' must be a list of {num_envs} booleans (one per sub-env), not {short(mask)}")
    return value


def route_step(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    instance = _touch(server, instance_id)
    with instance:
        # The body goes to the env side as it came: it parses the action there, and resets first if
        # it must (a step before any reset) or refuses (a broken env).  What it did, the server counts.
        episodes, payload, reset_first = instance.call("step", request.body)
        with instance.counting:
            if reset_first:
                instance.reset_done(None)
            instance.steps += 1
            if episodes:
                instance.count(episodes)
    return payload


def _compact_param(request: Request) -> bool:
    """?compact=true: Box bounds that are one value each as that value."""
    value = request.params.get("compact") if request.query else None
    if value in (None, "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise bad_request(f"Parameter 'compact' must be true or false, not {short(value)}")


def route_action_space(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    return _touch(server, instance_id).describe("action", _compact_param(request))


def route_observation_space(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    return _touch(server, instance_id).describe("observation", _compact_param(request))


def route_action_sample(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    with _touch(server, instance_id) as instance:
        return instance.call("sample")


def route_action_contains(server: GymHTTPServer, request: Request, instance_id: str, x: str) -> bytes:
    with _touch(server, instance_id) as instance:
        return instance.call("contains", x)


def route_observation_contains(server: GymHTTPServer, request: Request, instance_id: str) -> dict:
    info = expand_bounds(_touch(server, instance_id).facts["observation_space"])
    # As the original: every given field must equal the description, compared as JSON.
    member = all(k in info and encode_json(info[k]) == encode_json(v) for k, v in request.optional_params.items())
    return {"member": member}


SPACE_NAMES = ("action", "observation", "single_action", "single_observation")


def _space_params(params: dict, instance: Instance) -> tuple[str, list]:
    """The "space" and "path" of the spaces/ routes, checked."""
    which = optional(params, "space", (str,), f"one of {', '.join(SPACE_NAMES)}", "action")
    if which.startswith("single_") and which in SPACE_NAMES and not instance.vector:
        raise bad_request(f"Parameter 'space' {short(which)} is for vector instances (num_envs > 1); this one has one env: "
                          f"ask for {which[len('single_'):]!r}")
    if which not in SPACE_NAMES:
        names = SPACE_NAMES if instance.vector else SPACE_NAMES[:2]
        close = difflib.get_close_matches(which, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise bad_request(f"Parameter 'space' must be one of {', '.join(names)}, not {short(which)}{hint}")
    path = optional(params, "path", (list,), "a list of Dict keys and Tuple indices", [])
    for step in path:
        if not (isinstance(step, str) or type(step) is int):
            raise bad_request(f"Parameter 'path' must hold Dict keys (strings) and indices (integers), not {short(step)}")
    return which, path


def route_space_sample(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    instance = _touch(server, instance_id)
    params = request.optional_params
    which, path = _space_params(params, instance)
    seed = seed_param(params)
    with instance:
        return instance.call("space_sample", which, path, seed)


def route_space_contains(server: GymHTTPServer, request: Request, instance_id: str) -> bytes:
    instance = _touch(server, instance_id)
    params = request.params
    which, path = _space_params(params, instance)
    if "value" not in params:
        raise bad_request("A required request parameter 'value' was not provided")
    with instance:
        return instance.call("space_contains", which, path, params["value"])


def route_monitor_start(server: GymHTTPServer, request: Request, instance_id: str) -> None:
    instance = _touch(server, instance_id)
    instance.release_owners(OWNED_REPORT_WAIT)  # what came before goes to no monitor
    params = request.params
    directory = required(params, "directory")
    check_type("directory", directory, (str,), "a string (a directory path)")
    force = flag_param(params, "force")
    resume = flag_param(params, "resume")
    video = params.get("video_callable", False)
    if type(video) is float and video.is_integer():
        video = int(video)
    if video is None or video is False:
        every = 0
    elif video is True:
        every = -1  # gymnasium's capped cubic schedule
    elif isinstance(video, int) and video >= 1:
        every = video
    else:
        raise bad_request(f"Parameter 'video_callable' must be false, true or a positive integer k (every k-th episode), not {short(video)}")
    if instance.vector:
        raise bad_request("Monitoring is for single-env instances; this one is a vector instance (num_envs > 1)")
    directory = server.monitor_directory(directory)
    with instance:
        if instance.monitor is not None:
            raise bad_request(f"Instance {instance_id} is already monitored into {short(instance.monitor.directory)}; close that monitor first")
        batch = next(Monitor._counter)
        if every:  # refused (no rgb_array, no moviepy) before any file is touched
            # Named by the batch, as gym named them: a resumed monitor's videos don't overwrite the last one's.
            instance.call("record_video", directory, every, Monitor.video_name(batch))
        try:
            monitor = Monitor(directory, instance.env_id, force=force, resume=resume, batch=batch)
        except BaseException as exc:
            if every:
                instance.call("stop_video")
            if isinstance(exc, OSError):
                raise bad_request(f"Cannot use monitor directory {short(directory)}: {exc.strerror}")
            raise
        monitor.video_every = every
        instance.monitor = monitor
        monitor.flush()
    return None


def route_monitor_close(server: GymHTTPServer, request: Request, instance_id: str) -> None:
    request.optional_params
    instance = _touch(server, instance_id)
    instance.release_owners(OWNED_REPORT_WAIT)  # every episode reaches the files
    with instance:
        try:
            # Finishes the last video, which the manifest then lists; an env that died took its video along.
            if instance.monitor is not None and instance.monitor.video_every and instance.runner.ended is None:
                instance.call("stop_video")
        finally:
            instance.close_monitor()  # the episodes reach the files whatever became of the video
    return None


def route_close(server: GymHTTPServer, request: Request, instance_id: str) -> None:
    request.optional_params
    instance = _touch(server, instance_id)
    if not instance.release_owners(CLOSE_WAIT) and instance.runner.owned_busy():  # stuck in the env, for a connection it owns
        instance.runner.kill("closed")
        instance.release_owners(CLOSE_WAIT)
    if not instance.lock.acquire(timeout=CLOSE_WAIT):  # a call is stuck in the env
        instance.runner.kill("closed")  # its process ends, and the stuck call with it
        if not instance.lock.acquire(timeout=CLOSE_WAIT):  # a thread in the env: it cannot be stopped
            if server.envs.remove(instance_id) is None:
                raise bad_request(f"Instance_id {short(instance_id)} unknown")
            instance.closed = True
            instance.close_monitor()
            log.warning("closed %s without closing its env: a call is stuck in it", instance_id)
            return None
    try:
        if instance.closed:
            raise bad_request(f"Instance_id {short(instance_id)} unknown")
        server.envs.remove(instance_id)
        instance.close()
    finally:
        instance.lock.release()
    log.info("closed %s", instance_id)
    return None


def route_upload(server: GymHTTPServer, request: Request) -> Response:
    params = request.params
    training_dir = required(params, "training_dir")
    check_type("training_dir", training_dir, (str,), "a string (a directory path)")
    check_type("api_key", required(params, "api_key"), (str,), "a string")
    optional(params, "algorithm_id", (str,), "a string or null")
    message = (
        "The OpenAI Gym scoreboard that /v1/upload/ sent results to was shut down years ago, so nothing was uploaded; "
        f"your results stay in {short(training_dir)}"
    )
    return Response(HTTPStatus.GONE, encode_json({"message": message}))


def route_shutdown(server: GymHTTPServer, request: Request) -> Response:
    request.optional_params
    server.request_shutdown()
    return Response(HTTPStatus.OK, encode_json({"message": "Server shutting down"}), headers={"Connection": "close"})


# -- watching: details, frames, the registry ---------------------------------
#
# These read an instance without touching ``last_used``: a dashboard that
# watches an instance must not keep --idle-timeout from reaping it.


def route_details(server: GymHTTPServer, request: Request, instance_id: str) -> dict:
    instance = server.envs.get(instance_id)
    if instance.closed:
        raise bad_request(f"Instance_id {short(instance_id)} unknown")
    instance.report_owners(OWNED_REPORT_WAIT)  # what its process has not reported yet, it reports now
    recent = instance.recent.copy()  # one C call: safe against a concurrent append
    episodes = [{"return": sanitize(r), "length": n, "ended": t} for r, n, t in recent]
    monitor = instance.monitor
    facts = instance.facts
    runner = instance.runner
    return {
        "instance_id": instance.instance_id,
        "env_id": instance.env_id,
        "num_envs": instance.num_envs,
        "encoding": instance.encoding,
        "render_mode": facts["render_mode"],
        "metadata": facts["metadata"],
        "spec": facts["spec"],
        "created": instance.created,
        "last_activity": instance.last_used,
        "steps": instance.steps,
        "env_steps": instance.steps * instance.num_envs,
        "episodes": instance.episodes,
        "last_return": episodes[-1]["return"] if episodes else None,
        "recent_episodes": episodes,
        "needs_reset": instance.needs_reset,
        "broken": instance.broken,
        "monitor": monitor.directory if monitor is not None else None,
        "pid": runner.pid if runner.ended is None else None,
        "rss": runner.rss(),
        "now": time.time(),
    }


def route_registry(server: GymHTTPServer, request: Request) -> dict:
    return {"envs": [_spec(spec) for _, spec in sorted(gymnasium.registry.items())]}


def _index_param(params: dict, instance: Instance) -> int | None:
    index = params.get("index")
    if index is None:
        if instance.vector:
            raise bad_request(
                f"Instance {instance.instance_id} is a vector of {instance.num_envs} envs; "
                f"pick one with ?index=k (0 to {instance.num_envs - 1})"
            )
        return None
    if not instance.vector:
        raise bad_request("Parameter 'index' is for vector instances (num_envs > 1); this one has one env: drop it")
    try:
        k = int(index)
    except (TypeError, ValueError):
        k = -1
    if not 0 <= k < instance.num_envs:
        raise bad_request(f"Parameter 'index' must be an integer from 0 to {instance.num_envs - 1}, not {short(index)}")
    return k


def route_render(server: GymHTTPServer, request: Request, instance_id: str) -> Response:
    instance = server.envs.get(instance_id)
    mode = instance.facts["render_mode"]
    if mode is None:
        raise bad_request(f"Instance {instance_id} was made without a render mode, so there is nothing to show; create it "
                          'with "kwargs": {"render_mode": "rgb_array"} (or "ansi" for text envs that offer it)')
    index = _index_param(request.params, instance)
    with instance:
        content_type, body = instance.call("render", index)
    return Response(HTTPStatus.OK, body, content_type, {"Cache-Control": "no-store"} if content_type == PNG_TYPE else None)


def route_openapi(server: GymHTTPServer, request: Request) -> Response:
    return Response(HTTPStatus.OK, openapi_json(), JSON_TYPE)


def route_dashboard(server: GymHTTPServer, request: Request) -> Response:
    return Response(HTTPStatus.OK, DASHBOARD_PAGE, HTML_TYPE, {"Content-Security-Policy": DASHBOARD_CSP})


ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", "/", route_dashboard),
    ("GET", "/v1/openapi.json", route_openapi),
    ("GET", "/v1/registry", route_registry),
    ("GET", "/v1/envs", route_list),
    ("POST", "/v1/envs", route_create),
    ("POST", "/v1/envs/{instance_id}/reset", route_reset),
    ("POST", "/v1/envs/{instance_id}/step", route_step),
    ("GET", "/v1/envs/{instance_id}/action_space", route_action_space),
    ("GET", "/v1/envs/{instance_id}/action_space/sample", route_action_sample),
    ("GET", "/v1/envs/{instance_id}/action_space/contains/{x}", route_action_contains),
    ("GET", "/v1/envs/{instance_id}/observation_space", route_observation_space),
    ("POST", "/v1/envs/{instance_id}/observation_space/contains", route_observation_contains),
    ("POST", "/v1/envs/{instance_id}/spaces/sample", route_space_sample),
    ("POST", "/v1/envs/{instance_id}/spaces/contains", route_space_contains),
    ("POST", "/v1/envs/{instance_id}/monitor/start", route_monitor_start),
    ("POST", "/v1/envs/{instance_id}/monitor/close", route_monitor_close),
    ("POST", "/v1/envs/{instance_id}/close", route_close),
    ("GET", "/v1/envs/{instance_id}", route_details),
    ("GET", "/v1/envs/{instance_id}/render", route_render),
    ("POST", "/v1/upload", route_upload),
    ("POST", "/v1/shutdown", route_shutdown),
]


class Router:
    """Matches (method, path) against rows of (method, pattern, handler).

    A pattern's ``{name}`` segments capture one path segment each.  A trailing
    slash never matters.  ``match`` returns (handler, args) or raises the 404
    or the 405 (with ``Allow``).
    """

    def __init__(self, routes: list[tuple[str, str, Callable]]):
        self.routes = routes
        self._static: dict[str, dict[str, Callable]] = {}  # path -> method -> handler
        self._dynamic: dict[int, list[tuple[tuple, str, Callable]]] = {}  # segment count -> rows
        self._cache: dict[tuple[str, str], tuple[Callable, tuple]] = {}  # recent dynamic matches
        for method, pattern, handler in routes:
            segments = tuple(pattern.strip("/").split("/"))
            if any(s.startswith("{") for s in segments):
                self._dynamic.setdefault(len(segments), []).append((segments, method, handler))
            else:
                self._static.setdefault("/" + "/".join(segments), {})[method] = handler

    def match(self, method: str, path: str) -> tuple[Callable, tuple]:
        """Find the handler for ``method`` on ``path`` and its path arguments."""
        if method == "HEAD":
            method = "GET"
        path = "/" + path.strip("/")
        methods = self._static.get(path)
        if methods is not None:
            handler = methods.get(method)
            if handler is None:
                raise self._not_allowed(path, methods)
            return handler, ()
        key = (method, path)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        parts = path[1:].split("/")
        allowed: dict[str, Callable] = {}
        found = None
        for segments, row_method, handler in self._dynamic.get(len(parts), ()):
            args = []
            for want, got in zip(segments, parts):
                if want[0] == "{":
                    if not got:
                        break
                    args.append(unquote(got))
                elif want != got:
                    break
            else:
                if row_method == method:
                    found = (handler, tuple(args))
                    break
                allowed[row_method] = handler
        if found is not None:
            if len(path) <= 128:  # ours are short; a flood of long ones must not grow it
                if len(self._cache) >= 4096:  # instance ids come and go; start afresh
                    self._cache.clear()
                self._cache[key] = found
            return found
        if allowed:
            raise self._not_allowed(path, allowed)
        raise HTTPError(HTTPStatus.NOT_FOUND, f"No route for {short(path)}; the API lives under /v1/ (see README)")

    @staticmethod
    def _not_allowed(path: str, methods: dict) -> HTTPError:
        allow = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
        return HTTPError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{short(path)} does not take this method; use {' or '.join(allow)}",
            headers={"Allow": ", ".join(allow)},
        )


ROUTER = Router(ROUTES)
# What an instance process answers itself on a connection it owns (see "Instance processes").
OWNABLE = frozenset({route_step, route_reset, route_action_space, route_observation_space, route_action_sample,
                     route_action_contains, route_space_sample, route_space_contains, route_render})


# -- the OpenAPI document -------------------------------------------------------
#
# Written by hand per route, keyed like ROUTES; a test checks that the two list
# the same routes, so the contract cannot drift from the code.


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: tuple = (), **properties: Any) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


_SEED = {"type": ["integer", "null"], "minimum": 0, "description": "0 is a seed; null or absent means none"}
_SPACE_NAME = {"type": ["string", "null"], "enum": [*SPACE_NAMES, None], "default": "action",
               "description": "single_...: vector instances only"}
_SPACE_PATH = {"type": ["array", "null"], "items": {"type": ["string", "integer"]}, "default": [],
               "description": "Dict keys and Tuple/OneOf indices (feature_space, node_space, edge_space) down to a part"}
_FLAG = {"oneOf": [{"type": ["boolean", "null"]}, {"type": "string", "enum": ["true", "false"]}], "default": False,
         "description": "also the strings \"true\" and \"false\", as old clients send them"}
# The wrappers a bare name may name: gymnasium.wrappers' own, less the refused.
WRAPPER_NAMES = sorted(n for n in gymnasium.wrappers.__all__ if n[0].isupper() and n not in REFUSED_WRAPPERS)
_BATCH_BOOL = {"oneOf": [{"type": "boolean"}, {"type": "array", "items": {"type": "boolean"}}, _ref("ArrayEnvelope")]}

OPENAPI_SCHEMAS: dict[str, dict] = {
    "Error": _object(("message",), message={"type": "string", "description": "What was wrong and what to do"}),
    "ArrayEnvelope": {
        "description": 'A numpy array in base64, sent by instances created with "encoding": "base64" (and accepted as an action)',
        **_object(
            ("__ndarray__", "dtype", "shape"),
            __ndarray__={"type": "string", "contentEncoding": "base64", "description": "C-order little-endian bytes"},
            dtype={"type": "string", "enum": sorted(ENVELOPE_DTYPES)},
            shape={"type": "array", "items": {"type": "integer", "minimum": 0}},
        ),
    },
    "Value": {
        "description": "A value of a space: a number (Discrete), nested lists (Box, MultiDiscrete, MultiBinary), "
        "a list (Tuple), an object (Dict), a string (Text), or an ArrayEnvelope; non-finite floats are the "
        'strings "NaN", "Infinity", "-Infinity"',
    },
    "Space": {
        "description": "A space, described so that it can be rebuilt; Box infinities are +-1e100. A space of a kind "
        "Gymnasium does not ship is named by its class and described by its shape, dtype, an example and attributes",
        **_object(
            ("name",),
            name={"type": "string", "description": "the Gymnasium kind (a subclass is named by its kind), else the class's name",
                  "examples": ["Discrete", "Box", "MultiDiscrete", "MultiBinary", "Tuple", "Dict", "Text", "MissionSpace"]},
            **{"class": {"type": "string", "description": "module:Class, for a space not of Gymnasium's own classes",
                         "examples": ["minigrid.core.mission:MissionSpace"]}},
            n={"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
            start={"oneOf": [{"type": "integer"}, {"type": "array", "items": {}, "description": "MultiDiscrete: nested like nvec"}]},
            shape={"type": "array", "items": {"type": "integer"}},
            dtype={"type": "string"},
            low={"oneOf": [{"type": "array", "items": {"type": "number"}, "description": "flattened, C order"},
                           {"type": "number", "description": "with ?compact=true: every element's bound, when they are all equal"}]},
            high={"oneOf": [{"type": "array", "items": {"type": "number"}, "description": "flattened, C order"},
                            {"type": "number", "description": "with ?compact=true: every element's bound, when they are all equal"}]},
            example={"description": "a space of no Gymnasium kind: a value of it (a sample), as plain JSON"},
            attributes={"type": "object", "description": "a space of no Gymnasium kind: its public attributes that are plain data"},
            nvec={"type": "array", "items": {}, "description": "nested in the space's shape"},
            spaces={"oneOf": [{"type": "array", "items": _ref("Space")}, {"type": "object", "additionalProperties": _ref("Space")}]},
            min_length={"type": "integer"},
            max_length={"type": "integer"},
            charset={"type": "string"},
            feature_space=_ref("Space"),
            stack={"type": "boolean"},
            node_space=_ref("Space"),
            edge_space={"oneOf": [_ref("Space"), {"type": "null"}]},
        ),
    },
    "SpaceInfo": _object(("info",), info=_ref("Space"), single_info={**_ref("Space"), "description": "vector instances: one sub-env's space"}),
    "CreateRequest": {
        "description": "Optional fields may be null, which means absent",
        **_object(
            ("env_id",),
            env_id={"type": "string", "minLength": 1, "examples": ["CartPole-v1"]},
            seed={**_SEED, "description": "seeds the first reset"},
            kwargs={"type": ["object", "null"], "description": "keyword arguments for gymnasium.make, e.g. render_mode, "
                    "max_episode_steps"},
            num_envs={"type": ["integer", "null"], "minimum": 1, "maximum": MAX_NUM_ENVS, "default": 1},
            encoding={"type": ["string", "null"], "enum": [*ENCODINGS, None], "default": "list",
                      "description": "list: arrays as nested lists; base64: arrays (in observations, vector batches and "
                      "info) as ArrayEnvelopes; typed: base64, and numpy scalars as envelopes of shape [] too"},
            vectorization_mode={"type": ["string", "null"], "enum": ["sync", "async", "vector_entry_point", None],
                                "description": "only with num_envs above 1"},
            vector_kwargs={"type": ["object", "null"], "description": 'only with num_envs above 1; e.g. {"autoreset_mode": '
                           '"SameStep"}'},
            wrappers={"type": ["array", "null"], "maxItems": MAX_WRAPPERS, "items": {"oneOf": [_ref("WrapperSpec"), {
                "type": "string", "enum": WRAPPER_NAMES, "description": "the name of a wrapper of gymnasium.wrappers"}]},
                "description": "applied in order on the server (to each sub-env of a vector)"},
        ),
        # vectorization_mode and vector_kwargs belong to vectors: num_envs above 1
        "anyOf": [{"required": ["num_envs"], "properties": {"num_envs": {"type": "integer", "minimum": 2}}},
                  {"properties": {"vectorization_mode": {"type": "null"},
                                  "vector_kwargs": {"anyOf": [{"type": "null"}, {"type": "object", "maxProperties": 0}]}}}],
    },
    "WrapperSpec": {
        "description": "Gymnasium's WrapperSpec: a name of gymnasium.wrappers, or an entry_point",
        "additionalProperties": False,
        **_object(
            (), name={"type": ["string", "null"], "examples": ["AtariPreprocessing"], "description": "alone: gymnasium.wrappers.<name>"},
            entry_point={"type": ["string", "null"], "pattern": "^[^:]+:[^:]+$", "examples": ["gymnasium.wrappers:FrameStackObservation"],
                         "description": "module:Class, from gymnasium.wrappers or a module the server imported (--import)"},
            kwargs={"type": ["object", "null"], "not": {"required": ["env"]}, "examples": [{"stack_size": 4}],
                    "description": "keyword arguments for the wrapper, but env: the server passes the env"},
        ),
        "anyOf": [{"required": ["entry_point"], "properties": {"entry_point": {"type": "string"}}},
                  {"required": ["name"], "properties": {"name": {"type": "string", "enum": WRAPPER_NAMES}}}],
    },
    "SpaceSampleRequest": _object(
        space=_SPACE_NAME,
        path=_SPACE_PATH,
        seed={**_SEED, "description": "seeds that space first"},
    ),
    "SpaceContainsRequest": _object(("value",), space=_SPACE_NAME, path=_SPACE_PATH, value=_ref("Value")),
    "ResetRequest": {
        "description": "An empty body, {} and null all mean no parameters",
        **_object(
            seed={"oneOf": [_SEED, {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2,
                                    "description": "vector instances: one per sub-env"}]},
            options={"type": ["object", "null"], "description": "env reset options; vector: reset_mask as a list of booleans"},
        ),
    },
    "ResetResponse": _object(("observation", "info"), observation=_ref("Value"), info={"type": "object"}),
    "StepRequest": _object(
        ("action",),
        action={"allOf": [_ref("Value"), {"not": {"type": "null"}}],
                "description": "an action; vector instances: a batch, one per sub-env. It must have the "
                "action space's shape and types, and integer spaces' ranges; Box values outside the bounds reach the env "
                "(which clips them, as a local env would)"},
        render=_FLAG,
    ),
    "StepResponse": _object(
        ("observation", "reward", "done", "terminated", "truncated", "info"),
        observation=_ref("Value"),
        reward={"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}, _ref("ArrayEnvelope")]},
        done={**_BATCH_BOOL, "description": "terminated or truncated"},
        terminated=_BATCH_BOOL,
        truncated=_BATCH_BOOL,
        info={"type": "object"},
    ),
    "MonitorStartRequest": _object(
        ("directory",),
        directory={"type": "string", "minLength": 1, "maxLength": MAX_PATH_LENGTH,
                   "pattern": f"^[^/\\u0000]*(?:/[^/\\u0000]*){{0,{MAX_PATH_PARTS}}}$",
                   "description": f"a path on the server: at most {MAX_PATH_LENGTH} characters and {MAX_PATH_PARTS} slashes, no NUL"},
        force=_FLAG,
        resume=_FLAG,
        video_callable={"oneOf": [{"type": ["boolean", "null"]}, {"type": "integer", "minimum": 1}], "default": False},
    ),
    "UploadRequest": _object(("training_dir", "api_key"), training_dir={"type": "string", "minLength": 1},
                             api_key={"type": "string", "minLength": 1}, algorithm_id={"type": ["string", "null"]}),
    "Episode": _object(("return", "length", "ended"), **{"return": {"type": "number"}, "length": {"type": "integer"},
                                                         "ended": {"type": "number", "description": "Unix time"}}),
    "Spec": _object(
        ("id",), id={"type": "string"}, entry_point={"type": "string"}, max_episode_steps={"type": ["integer", "null"]},
        reward_threshold={"type": ["number", "null"]}, nondeterministic={"type": "boolean"}, vector_entry_point={"type": "boolean"},
        additional_wrappers={"type": "array", "items": _ref("WrapperSpec"), "description": "an instance's wrappers, when it has some"},
    ),
    "InstanceDetails": _object(
        ("instance_id", "env_id", "num_envs", "created", "last_activity", "steps", "episodes", "recent_episodes"),
        instance_id={"type": "string"}, env_id={"type": "string"}, num_envs={"type": "integer"},
        encoding={"type": "string", "enum": list(ENCODINGS)}, render_mode={"type": ["string", "null"]},
        metadata=_object(render_modes={"type": "array", "items": {"type": "string"}}, render_fps={"type": "number"},
                         autoreset_mode={"type": "string"}),
        spec={"oneOf": [_ref("Spec"), {"type": "null"}]},
        created={"type": "number", "description": "Unix time"},
        last_activity={"type": "number", "description": "Unix time of the last call that used the instance"},
        steps={"type": "integer", "description": "step calls (a vector step counts once)"},
        env_steps={"type": "integer", "description": "steps x num_envs"},
        episodes={"type": "integer"}, last_return={"type": ["number", "null"]},
        recent_episodes={"type": "array", "items": _ref("Episode"), "description": f"the last {RECENT_EPISODES}, oldest first"},
        needs_reset={"type": "boolean"}, broken={"type": ["string", "null"]}, monitor={"type": ["string", "null"]},
        pid={"type": ["integer", "null"], "description": "its instance process (--isolation process); null in threads or once it ended"},
        rss={"type": ["integer", "null"], "description": "that process's resident memory in bytes"},
        now={"type": "number", "description": "the server's clock (Unix time), to compare the times above with"},
    ),
}


def _json_body(schema: str | dict) -> dict:
    return {"content": {JSON_TYPE: {"schema": _ref(schema) if isinstance(schema, str) else schema}}}


def _or_nothing(schema: str | dict) -> dict:
    """The body of a route whose parameters are all optional: the object, or
    null, "" or [] (which old Ruby and Lua clients send) for none."""
    return {"anyOf": [_ref(schema) if isinstance(schema, str) else schema, {"type": "null"},
                      {"type": "string", "maxLength": 0}, {"type": "array", "maxItems": 0}]}


def _operation(op_id: str, summary: str, *, request: str | dict | None = None, reply: str | dict | None = None,
               status: str = "200", params: tuple = (), content: dict | None = None, body_required: bool = False) -> dict:
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if params:
        operation["parameters"] = list(params)
    if request is not None:
        operation["requestBody"] = {"required": body_required, **_json_body(request)}
    if content is not None:
        ok = {"description": "OK", "content": content}
    elif reply is None:
        ok = {"description": "Done (no body)"}
    else:
        ok = {"description": "OK", **_json_body(reply)}
    operation["responses"] = {
        status: ok,
        "4XX": {"description": "A bad request; the message says what to fix", **_json_body("Error")},
        "5XX": {"description": "The environment failed: it raised or its process died (500), it ran past "
                "--env-timeout (504); or the server is shutting down (503)", **_json_body("Error")},
    }
    return operation


_INSTANCE = {"name": "instance_id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMPACT = {"name": "compact", "in": "query", "required": False, "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
            "description": "true: a Box bound whose elements are all equal is one number (Atari's: 0 and 255)"}
_MESSAGE = _object(("message",), message={"type": "string"})

API_DOCS: dict[tuple[str, str], dict] = {
    ("GET", "/"): _operation("dashboard", "The dashboard: a live HTML page of the instances", content={"text/html": {"schema": {"type": "string"}}}),
    ("GET", "/v1/openapi.json"): _operation("openapi", "This document", reply={"type": "object"}),
    ("GET", "/v1/registry"): _operation("registry", "Env ids that can be made, with their spec basics",
                                         reply=_object(("envs",), envs={"type": "array", "items": _ref("Spec")})),
    ("GET", "/v1/envs"): _operation(
        "env_list_all", "Every instance: {instance_id: env_id}; with --peers, the whole cluster's",
        reply=_object(("all_envs",), all_envs={"type": "object", "additionalProperties": {"type": "string"}},
                      missing_peers={"type": "array", "items": {"type": "string"},
                                     "description": "peers (--peers) that did not answer, whose instances are not listed"}),
        params=({"name": "local", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1"]},
                 "description": "1: this node's instances only, without asking its peers"},)),
    ("POST", "/v1/envs"): _operation("env_create", "Create an instance (gymnasium.make, or make_vec when num_envs > 1)",
                                      request="CreateRequest", body_required=True, reply=_object(("instance_id",), instance_id={"type": "string"})),
    ("GET", "/v1/envs/{instance_id}"): _operation("env_details", "An instance's details and recent episodes",
                                                   reply="InstanceDetails", params=(_INSTANCE,)),
    ("POST", "/v1/envs/{instance_id}/reset"): _operation("env_reset", "Reset", request=_or_nothing("ResetRequest"), reply="ResetResponse",
                                                         params=(_INSTANCE,)),
    ("POST", "/v1/envs/{instance_id}/step"): _operation("env_step", "Step (a step before any reset resets first)",
                                                        request="StepRequest", reply="StepResponse", params=(_INSTANCE,),
                                                        body_required=True),
    ("GET", "/v1/envs/{instance_id}/action_space"): _operation("env_action_space_info", "Describe the action space",
                                                               reply="SpaceInfo", params=(_INSTANCE, _COMPACT)),
    ("GET", "/v1/envs/{instance_id}/action_space/sample"): _operation(
        "env_action_space_sample", "A random action", reply=_object(("action",), action=_ref("Value")), params=(_INSTANCE,)),
    ("GET", "/v1/envs/{instance_id}/action_space/contains/{x}"): _operation(
        "env_action_space_contains", "Whether x (JSON, percent-encoded) is an action",
        reply=_object(("member",), member={"type": "boolean"}),
        params=(_INSTANCE, {"name": "x", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "the action as JSON text, e.g. 1 or %5B0.5%5D"})),
    ("GET", "/v1/envs/{instance_id}/observation_space"): _operation("env_observation_space_info", "Describe the observation space",
                                                                    reply="SpaceInfo", params=(_INSTANCE, _COMPACT)),
    ("POST", "/v1/envs/{instance_id}/observation_space/contains"): _operation(
        "env_observation_space_contains", "Whether every given field equals the observation space's description",
        request=_or_nothing({"type": "object", "additionalProperties": True}), reply=_object(("member",), member={"type": "boolean"}),
        params=(_INSTANCE,)),
    ("POST", "/v1/envs/{instance_id}/spaces/sample"): _operation(
        "env_space_sample", "A sample of any of the instance's spaces, or of a part of one", request=_or_nothing("SpaceSampleRequest"),
        reply=_object(("value",), value=_ref("Value")), params=(_INSTANCE,)),
    ("POST", "/v1/envs/{instance_id}/spaces/contains"): _operation(
        "env_space_contains", "Whether a value is in any of the instance's spaces, or a part of one, as the env's own space says",
        request="SpaceContainsRequest", reply=_object(("member",), member={"type": "boolean"}), params=(_INSTANCE,),
        body_required=True),
    ("POST", "/v1/envs/{instance_id}/monitor/start"): _operation(
        "env_monitor_start", "Record episode statistics (and videos) into a directory on the server",
        request="MonitorStartRequest", status="204", params=(_INSTANCE,), body_required=True),
    ("POST", "/v1/envs/{instance_id}/monitor/close"): _operation("env_monitor_close", "Flush and stop the monitor",
                                                                 status="204", params=(_INSTANCE,)),
    ("POST", "/v1/envs/{instance_id}/close"): _operation("env_close", "Close and forget the instance", status="204",
                                                         params=(_INSTANCE,)),
    ("GET", "/v1/envs/{instance_id}/render"): _operation(
        "env_render", "The current frame: PNG for render_mode rgb_array, text for ansi, JSON {frame} with arrays as "
        "ArrayEnvelopes for any other mode (depth_array, rgbd_tuple, rgb_array_list...)",
        content={PNG_TYPE: {"schema": {"type": "string", "contentMediaType": PNG_TYPE}},
                 "text/plain": {"schema": {"type": "string"}},
                 JSON_TYPE: {"schema": _object(("frame",), frame=_ref("Value"))}},
        params=(_INSTANCE, {"name": "index", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                            "description": "vector instances (required there): which sub-env"})),
    ("POST", "/v1/upload"): _operation("upload", "The old scoreboard upload: always 410 Gone after validating",
                                       request="UploadRequest", status="410", reply=_MESSAGE, body_required=True),
    ("POST", "/v1/shutdown"): _operation("shutdown_server", "Stop the server (loopback, or with the token)", reply=_MESSAGE),
}



def openapi_document() -> dict:
    """The OpenAPI 3.1 description of this server's HTTP API."""
    paths: dict[str, dict] = {}
    for (method, pattern), operation in API_DOCS.items():
        path = pattern if pattern == "/" or pattern.endswith((".json", "{x}")) else pattern + "/"
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gymhttp",
            "version": __version__,
            "summary": "Gymnasium environments over HTTP/JSON: the v1 API of openai/gym-http-api",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": OPENAPI_SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "when the server runs with --token"}},
        },
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as JSON bytes, built once."""
    return json.dumps(openapi_document(), indent=1).encode()


# ---------------------------------------------------------------------------
# Request handler
# ---------------------------------------------------------------------------


_STATUS_LINES = {status: f"HTTP/1.1 {status.value} {status.phrase}" for status in HTTPStatus}
# Strict framing (RFC 9110, 9112): a lenient parser behind a lenient proxy is how request smuggling starts.
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but HTAB
# A chunk-size line: hex digits, chunk extensions (ignored), CRLF.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[^\r\n]*)?\r\n")
_OK_JSON = f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: %d\r\n\r\n".encode()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# -- reading a request, checking it, answering it -------------------------------
#
# The server reads every connection with these, and so does an instance
# process that owns one (see "Instance processes"): one parser, one set of
# checks, one way to answer.


class FramingError(Exception):
    """A request whose bytes can't be trusted, or one refused before its
    body was read: it gets its answer, then the connection is closed."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class PeerGone(Exception):
    """The peer hung up, or its connection was cut, in the middle of a request."""


def read_head(rfile: Any, line: bytes) -> tuple[str, str, str, dict]:
    """The request that ``line`` (its first line, already read) starts:
    (method, target, version, headers with lower-case names)."""
    if len(line) > MAX_REQUEST_LINE:
        raise FramingError(HTTPStatus.REQUEST_URI_TOO_LONG, f"Request line longer than {MAX_REQUEST_LINE} bytes")
    words = line.split()
    if len(words) != 3 or words[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        if len(words) == 2 and words[0] == b"GET":  # HTTP/0.9: we don't speak it
            raise FramingError(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported; send HTTP/1.1")
        if len(words) == 3 and _HTTP_VERSION.fullmatch(words[2]):
            raise FramingError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                               f"{short(words[2].decode('latin-1'))} is not supported; send HTTP/1.1 (or HTTP/1.0)")
        raise FramingError(HTTPStatus.BAD_REQUEST, f"Malformed request line {short(line.decode('latin-1').rstrip())}")
    try:
        command, target, version = (w.decode("ascii") for w in words)
    except UnicodeDecodeError:
        raise FramingError(HTTPStatus.BAD_REQUEST, "Request line is not ASCII; percent-encode the path")
    headers = _whole_head(rfile)
    if headers is None:
        headers = {}
        total = 0
        while True:
            try:
                raw = rfile.readline(MAX_HEADER_LINE + 1)
            except (TimeoutError, OSError):
                raise PeerGone
            if raw in (b"\r\n", b"\n"):
                break
            if not raw:
                raise PeerGone
            if len(raw) > MAX_HEADER_LINE:
                raise FramingError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"A header line is longer than {MAX_HEADER_LINE} bytes")
            total += 1
            if total > MAX_HEADERS:
                raise FramingError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"More than {MAX_HEADERS} headers")
            _add_header(headers, raw[:-2] if raw.endswith(b"\r\n") else raw.rstrip(b"\n"))
    if version == "HTTP/1.1" and "host" not in headers:
        raise FramingError(HTTPStatus.BAD_REQUEST, "An HTTP/1.1 request needs a Host header (RFC 9112)")
    return command, target, version, headers


# Header blocks already checked, and what they said: a client sends the same few again and again
# (a step's differ at most in Content-Length), and checking one line by line costs more than the step.
_HEADS: dict[bytes, dict] = {}
_HEADS_MAX = 256


def _whole_head(rfile: Any) -> dict | None:
    """The headers, when all of them have arrived already (the usual case):
    taken as one block, and checked once per distinct block.  None when they
    must be read line by line, as they come."""
    try:
        buffered = rfile.peek(1)  # what is buffered, without a read unless nothing is
    except (TimeoutError, OSError, ValueError):
        raise PeerGone
    end = buffered.find(b"\r\n\r\n")
    if end < 0 or buffered.startswith((b"\r\n", b"\n")):  # not all here yet, or no headers at all
        return None
    block = bytes(buffered[:end])
    headers = _HEADS.get(block)
    if headers is None:
        if b"\n\n" in block or b"\n\r\n" in block:  # a blank line before it: the head ended there
            return None
        lines = block.split(b"\n")
        if len(lines) > MAX_HEADERS:
            return None  # line by line, for the same answer as then
        headers = {}
        for raw in lines:
            if len(raw) + 2 > MAX_HEADER_LINE:
                return None
            _add_header(headers, raw[:-1] if raw.endswith(b"\r") else raw)
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[block] = headers
    rfile.read(end + 4)
    return dict(headers)


def _add_header(headers: dict, raw: bytes) -> None:
    """Check one header line (without its line end) and add it to ``headers``."""
    name, sep, value = raw.partition(b":")
    if not sep or not _TOKEN.fullmatch(name):  # RFC 9110: a field name is a token; no space, no folding
        raise FramingError(HTTPStatus.BAD_REQUEST, f"Malformed header line {short(raw.decode('latin-1').rstrip())}")
    if _CONTROL.search(value):
        raise FramingError(HTTPStatus.BAD_REQUEST, f"Header {short(name.decode('latin-1'))} holds a control "
                           "character; a field value may hold only visible characters, spaces and tabs")
    key, text = name.decode("latin-1").lower(), value.strip(b" \t").decode("latin-1")  # only SP and HTAB around it
    if key == "content-length" and headers.get(key, text) != text:
        raise FramingError(HTTPStatus.BAD_REQUEST, "Conflicting Content-Length headers")
    if key in ("host", "transfer-encoding") and key in headers:
        raise FramingError(HTTPStatus.BAD_REQUEST, f"Two {name.decode('latin-1')} headers; send one")
    headers[key] = text


def keeps_alive(version: str, headers: dict) -> bool:
    """Whether the connection goes on after this request (RFC 9112 §9.3)."""
    connection = headers.get("connection", "").lower()
    return "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection


def read_body(rfile: Any, headers: dict, max_body: int, send: Callable[[bytes], Any]) -> bytes:
    """The body the headers announce (Content-Length or chunked), at most
    ``max_body`` bytes; ``send`` writes a 100 Continue when it is asked for."""
    if "transfer-encoding" in headers:
        if headers["transfer-encoding"].lower() != "chunked":
            raise FramingError(HTTPStatus.NOT_IMPLEMENTED, "Only the chunked Transfer-Encoding is supported")
        if "content-length" in headers:
            raise FramingError(HTTPStatus.BAD_REQUEST, "Both Transfer-Encoding and Content-Length were sent")
        if headers.get("expect", "").lower() == "100-continue":
            send(_CONTINUE)
        return _read_chunked(rfile, max_body)
    length = headers.get("content-length")
    if length is None:
        return b""
    if not (length.isascii() and length.isdigit()) or len(length) > 18:  # "²" is a digit to isdigit()
        raise FramingError(HTTPStatus.BAD_REQUEST, f"Content-Length {short(length)} is not a non-negative integer (ASCII digits)")
    size = int(length)
    if size > max_body:
        raise FramingError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body of {size} bytes is over the limit of {max_body} (--max-body)")
    if size == 0:
        return b""
    if headers.get("expect", "").lower() == "100-continue":
        send(_CONTINUE)
    try:
        body = rfile.read(size)
    except (TimeoutError, OSError):
        raise PeerGone
    if body is None or len(body) < size:
        raise PeerGone
    return body


def _read_chunked(rfile: Any, max_body: int) -> bytes:
    parts, size = [], 0
    try:
        while True:
            line = rfile.readline(MAX_HEADER_LINE + 1)
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:  # hex digits only (RFC 9112): int("1_8", 16) or " 18" must not pass
                if not line:
                    raise PeerGone
                raise FramingError(HTTPStatus.BAD_REQUEST, f"Malformed chunk size line {short(line.decode('latin-1'))}; "
                                   "send hex digits, then CRLF")
            chunk = int(match[1], 16)
            size += chunk
            if size > max_body:
                raise FramingError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Request body over the limit of {max_body} bytes (--max-body)")
            if chunk == 0:
                while rfile.readline(MAX_HEADER_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers, ignored
                return b"".join(parts)
            data = rfile.read(chunk)
            if data is None or len(data) < chunk:
                raise PeerGone
            parts.append(data)
            if rfile.readline(3) != b"\r\n":
                raise FramingError(HTTPStatus.BAD_REQUEST, "A chunk's data is not followed by CRLF")
    except (TimeoutError, OSError):
        raise PeerGone


def response_bytes(status: HTTPStatus, body: bytes, content_type: str, headers: dict, command: str,
                   close: bool) -> tuple[bytes, bool]:
    """A whole response, to be written in one send (Nagle-proof), and whether
    the connection closes after it.  ``Content-Length`` always, except for
    204, which has no body (RFC 9110); HEAD gets the headers of GET alone."""
    if status is HTTPStatus.OK and not headers and content_type is JSON_TYPE and not close:
        return _OK_JSON % len(body) + (body if command != "HEAD" else b""), False  # the usual reply, a step's
    lines = [_STATUS_LINES[status]]
    if status is not HTTPStatus.NO_CONTENT:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    for name, value in headers.items():
        if name == "Connection" and value == "close":
            close = True
            continue
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    lines.append("\r\n")
    head = "\r\n".join(lines).encode("latin-1")
    if command == "HEAD" or status is HTTPStatus.NO_CONTENT:
        body = b""
    return head + body, close


def dispatch(host: Any, command: str, target: str, body: bytes, connection: socket.socket | None) -> tuple[HTTPStatus, dict, bytes, str]:
    """Route one request to its handler; returns (status, extra headers,
    body, content type).  The one place where errors become responses: an
    HTTPError is its own answer, anything else a 500 that says what failed.
    ``host`` is what routes get as their ``server``: the server, or an
    instance process serving its own connection."""
    try:
        path, _, query = target.partition("?")
        route, args = host.router.match(command, path)
        result = route(host, Request(command, body, query, connection), *args)
        if type(result) is bytes:  # JSON from the env side, as it is
            return HTTPStatus.OK, {}, result, JSON_TYPE
        if result is None:
            return HTTPStatus.NO_CONTENT, {}, b"", JSON_TYPE
        if isinstance(result, Response):
            return result.status, result.headers, result.body, result.content_type
        return HTTPStatus.OK, {}, encode_json(result), JSON_TYPE
    except HTTPError as exc:
        if isinstance(exc, EnvFailure):  # the env's traceback, whatever --log-level says
            log.error("environment error on %s %s: %s\n%s", command, target, exc.message, exc.trace.rstrip())
        return exc.status, exc.headers, encode_json({"message": exc.message}), JSON_TYPE
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a bug of ours: say so, and keep serving
        log.error("error on %s %s:\n%s", command, target, traceback.format_exc())
        text = cut(str(exc), 2000)
        return HTTPStatus.INTERNAL_SERVER_ERROR, {}, encode_json({"message": f"The server failed: {type(exc).__name__}: {text}"}), JSON_TYPE


class Edge:
    """What is checked of every request as soon as its head is read, before
    its body: the Host (DNS rebinding), the Origin (other sites' pages), the
    token, and shutdown from afar.  The server holds one; an instance process
    that owns a connection holds a copy."""

    def __init__(self, token: str | None, allowed_origins: frozenset, loopback: bool):
        self.token, self.allowed_origins, self.loopback = token, allowed_origins, loopback
        self._hosts: dict[str, bool] = {}  # Host header -> names this machine

    def admit(self, method: str, target: str, headers: dict, peer: str) -> dict | Response:
        """Raises the HTTPError that refuses a request; returns the CORS
        headers its reply carries, or the reply to a CORS preflight."""
        path = target.partition("?")[0]
        host = headers.get("host")
        if self.loopback and host is not None and not self._host_ok(host):
            raise HTTPError(
                HTTPStatus.FORBIDDEN,
                f"Host {short(host)} is not this machine's: a server on loopback answers only to localhost, "
                "127.0.0.1 and [::1] (a page elsewhere could reach it by DNS rebinding); listen on another "
                "address (-l) to serve other names",
            )
        cors: dict = {}
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            if "*" in self.allowed_origins or origin in self.allowed_origins:
                cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
                if method == "OPTIONS" and "access-control-request-method" in headers:  # a preflight: no token
                    return Response(HTTPStatus.NO_CONTENT, headers={
                        **cors, "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
                        "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600",
                    })
            elif method not in ("GET", "HEAD"):
                raise HTTPError(
                    HTTPStatus.FORBIDDEN,
                    f"Requests from the web page at {short(origin)} are refused: only GET and HEAD are taken from "
                    "other origins; start the server with --allow-origin to let that page use the API",
                )
        presented = False
        if self.token is not None and "/" + path.strip("/") not in PUBLIC_PATHS:
            given = headers.get("authorization", "")
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip().encode(), self.token.encode()):
                raise HTTPError(
                    HTTPStatus.UNAUTHORIZED,
                    "This server needs a token: send the header 'Authorization: Bearer <token>' "
                    "(client.Client(..., token=...) or GYMHTTP_TOKEN)",
                    headers={"WWW-Authenticate": 'Bearer realm="gymhttp"', **cors},
                )
            presented = True
        if not presented and path.rstrip("/") == "/v1/shutdown" and not _is_loopback(peer):
            raise HTTPError(
                HTTPStatus.FORBIDDEN,
                "Shutdown is only taken from this machine (loopback) unless the server was started with --token and the request carries it",
            )
        return cors

    def _host_ok(self, host: str) -> bool:
        """_is_loopback_host, remembered: a client sends the same Host each time,
        and parsing an address costs more than the rest of the checks."""
        known = self._hosts.get(host)
        if known is None:
            if len(self._hosts) >= 256:
                self._hosts.clear()
            known = self._hosts[host] = _is_loopback_host(host)
        return known


def _preemption_counter() -> Callable[[], int] | None:
    """This thread's count of involuntary context switches, or None where
    busy-polling is off: no such count (Windows), no poll(), or one core
    (where spinning only takes the core from the client we wait for)."""
    try:
        import resource
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    except (ImportError, OSError):
        return None
    if cores < 2 or not hasattr(select, "poll"):
        return None
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    return lambda: resource.getrusage(who).ru_nivcsw


_PREEMPTIONS = _preemption_counter()


class Polling:
    """Busy-polling for the next request on one connection, and its back-off.

    A thread that blocks lets its core go idle, and waking it costs tens of
    microseconds (far more on a VM) per request.  So for a client that steps
    fast, and is the only one stepping, whoever owns its connection (the
    server's thread, or an instance process) polls.  If the OS often takes
    the core from the loop, other processes need it: then no polling for
    SPIN_BACKOFF seconds, doubling while it recurs.
    """

    _gap = math.inf  # seconds from our last reply to the next request
    _succeeded = False  # the last request got a 1xx-3xx reply
    _replied = 0.0  # perf_counter() when the last reply was sent
    _calm_until = 0.0  # no spinning before this perf_counter()
    _spins = _preempted = 0  # in the current sample
    _backoff = SPIN_BACKOFF
    spun = 0  # requests waited for by polling, all told

    def may_poll(self, spin: float) -> bool:
        """Whether to poll after this reply: the client's last request
        succeeded (not one without the token, nor one stuck in a loop of
        errors), came soon after our previous reply, and no back-off runs."""
        return bool(spin) and self._succeeded and self._gap <= spin and self._replied > self._calm_until

    def poll_for(self, ready: Callable[[int], Any], spin: float, busy: Callable[[], Any]) -> None:
        """Poll ``ready`` until something is there, ``busy()`` says to stop,
        or ``spin`` seconds have passed since our reply."""
        end = self._replied + spin
        clock = time.perf_counter
        preempted = _PREEMPTIONS()
        while not ready(0) and not busy() and clock() < end:
            pass
        # The back-off of client.py (each file stands alone, so it is written twice),
        # less its rule for spinning on when that measurably pays.
        self._preempted += _PREEMPTIONS() != preempted
        self._spins += 1
        self.spun += 1
        if self._preempted > SPIN_PREEMPTED_MAX:  # contended: back off, longer each time in a row
            self._calm_until = clock() + self._backoff
            self._backoff = min(2 * self._backoff, SPIN_BACKOFF_MAX)
            self._spins = self._preempted = 0
        elif self._spins == SPIN_SAMPLE:  # a clean sample
            self._backoff = SPIN_BACKOFF
            self._spins = self._preempted = 0


class GymHTTPRequestHandler(Polling, BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive and a lean request path.

    ``BaseHTTPRequestHandler`` parses headers with the email package and
    answers framing errors with HTML; we read the request line and headers
    ourselves so that every answer, framing errors included, is JSON, and so
    that a step costs little more than its round trip.
    """

    protocol_version = "HTTP/1.1"
    server_version = f"gymhttp/{__version__}"
    server: GymHTTPServer

    def setup(self) -> None:
        # No socket timeout: with one, Python polls before every recv and send.
        # The watchdog cuts connections past their deadlines instead (track()).
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket, say)

    def handle(self) -> None:
        server = self.server
        server.track(self, time.monotonic() + server.timeout_seconds)
        try:
            super().handle()
        finally:
            server.untrack(self)

    _started = 0.0  # perf_counter() when the request line came (when logging requests)
    _poll: Callable | None = None

    def _spin_for_request(self, spin: float) -> None:
        """Busy-poll up to ``spin`` seconds after our reply for the next
        request (see :class:`Polling`); the loop holds the GIL between polls,
        so it stops as soon as another request is being served."""
        server = self.server
        poll = self._poll
        if poll is None:
            poller = select.poll()
            poller.register(self.connection, select.POLLIN)
            poll = self._poll = poller.poll
        self.poll_for(poll, spin, lambda: server._inflight)

    def handle_one_request(self) -> None:
        self.close_connection = True
        server = self.server
        spin = server.spin
        if (self.may_poll(spin) and server._last_client is self and not server._inflight
                and self._replied - server._last_switch > SOLE_SECONDS):
            self._spin_for_request(spin)
        try:
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except (TimeoutError, OSError):
            return
        if spin:
            now = time.perf_counter()
            self._gap = now - self._replied
            # Watching (the dashboard's GETs) does not stop polling for the agent that steps.
            if server._last_client is not self and not line.startswith((b"GET ", b"HEAD ")):
                server._last_client, server._last_switch = self, now
        if not line:
            return
        # The whole request (line, headers, body) must arrive within --timeout.
        server.track(self, time.monotonic() + server.timeout_seconds)
        self._started = started = time.perf_counter() if self.server.log_requests else 0.0
        self.command, self.path = "", ""
        self.request_version = "HTTP/1.1"
        try:
            self.command, self.path, self.request_version, headers = read_head(self.rfile, line)
            self.parsed_headers = headers
            self.close_connection = not keeps_alive(self.request_version, headers)
            cors = server.admit(self)  # Host, Origin and token, checked before the body is read
            body = read_body(self.rfile, headers, server.max_body, self.connection.sendall)
        except PeerGone:
            self.close_connection = True
            return
        except (FramingError, HTTPError) as exc:  # a refused head: its body stays unread, so the connection cannot go on
            return self._fail(exc.status, exc.message, exc.headers)
        if type(cors) is Response:  # a CORS preflight: nothing to dispatch
            self.reply(cors.status, cors.body, cors.content_type, cors.headers)
            return
        server.track(self, None)  # the env may take its time; that is not the client's fault
        if not server.begin_request():
            self.close_connection = True
            self.reply(HTTPStatus.SERVICE_UNAVAILABLE, encode_json({"message": "The server is shutting down"}), JSON_TYPE, {})
            return
        try:
            status, extra, payload, content_type = server.dispatch(self, body)
            # Only a client whose requests succeed is polled for: not one
            # without the token, nor one stuck in a loop of errors.
            self._succeeded = status < HTTPStatus.BAD_REQUEST
            # A client that does not read its reply, then does not send the
            # next request, within --timeout is cut off.
            server.track(self, time.monotonic() + server.timeout_seconds)
            self.reply(status, payload, content_type, {**extra, **cors} if cors else extra)
        finally:
            server.end_request()
            self._replied = time.perf_counter()
        if self.server.log_requests:
            log.info(
                "%s %s %s %d %.1fms",
                self.client_address[0], self.command, self.path, status, (time.perf_counter() - started) * 1000,
            )
        if server.handoff and not self.close_connection and status < HTTPStatus.BAD_REQUEST:
            self._count_toward_handoff()

    _streak: tuple[str | None, int] = (None, 0)  # (instance id, steps or resets in a row for it)

    def _count_toward_handoff(self) -> None:
        """After HANDOFF_AFTER steps or resets in a row for one instance, an
        actor stepping its env, that instance's process takes the connection
        over (see "Instance processes")."""
        target = None
        if self.command == "POST":
            try:
                route, args = ROUTER.match("POST", self.path.partition("?")[0])
            except HTTPError:
                route = None
            if route is route_step or route is route_reset:
                target = args[0]
        streak = self._streak[1] + 1 if target is not None and target == self._streak[0] else 1
        self._streak = (target, streak)
        if target is not None and streak >= HANDOFF_AFTER:
            self._streak = (None, 0)
            self._hand_off(target)

    def _hand_off(self, instance_id: str) -> None:
        """Hand this connection to the instance's process, and wait for it back."""
        server = self.server
        instance = server.envs._instances.get(instance_id)
        runner = getattr(instance, "runner", None)
        if not isinstance(runner, ProcessRunner) or runner.ended is not None or instance.closed or server._shutdown_started.is_set():
            return
        already = take_buffered(self.rfile, self.connection)  # a pipelined request: it goes along
        ours, theirs = socket.socketpair()
        owner = Owner(self, instance, runner, ours)
        settings = {"edge": (server.edge.token, server.edge.allowed_origins, server.edge.loopback), "max_body": server.max_body,
                    "timeout": server.timeout_seconds, "spin": server.spin, "log_requests": server.log_requests,
                    "monitored": instance.monitor is not None}
        try:
            with instance:  # no relayed call on it is half done
                runner.adopt(self.connection, theirs, already, self.client_address[0], settings)
        except HTTPError:  # it ended meanwhile: the connection stays here
            ours.close()
            return
        finally:
            theirs.close()
        instance.owners.add(owner)
        server.track(self, None)  # the process holds it to --timeout now
        try:
            back = owner.wait()
        finally:
            instance.owners.discard(owner)
            # The process and we share the socket's open file, and its flags: it made it non-blocking
            # (for its timeouts).  Ours again as this socket object expects, or a read finds no data yet
            # and takes that for a hang-up.
            try:
                self.connection.settimeout(self.connection.gettimeout())
            except OSError:
                pass
        if back is None:
            self.close_connection = True
            return
        self.rfile = socket_reader(self.connection, back)
        server.track(self, time.monotonic() + server.timeout_seconds)

    def _fail(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
        """Answer a framing error (or a request refused before its body was
        read) and drop the connection: its bytes can't be trusted."""
        self.close_connection = True
        self.reply(status, encode_json({"message": message}), JSON_TYPE, headers or {})
        if self.server.log_requests:
            log.info("%s %s %s %d %.1fms", self.client_address[0], self.command or "-", self.path or "-", status,
                     (time.perf_counter() - self._started) * 1000)
        return None

    def reply(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict) -> None:
        """Write a whole response in one send (see :func:`response_bytes`)."""
        data, self.close_connection = response_bytes(status, body, content_type, headers, self.command, self.close_connection)
        try:
            self.connection.sendall(data)  # one send: no Nagle/delayed-ACK stall
        except OSError:
            self.close_connection = True

    def drop(self) -> None:
        """Cut the connection from another thread (watchdog, shutdown)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


# ---------------------------------------------------------------------------
# serve() / main()
# ---------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _is_loopback_host(value: str) -> bool:
    """Whether a Host header names this machine: localhost, a loopback
    address such as 127.0.0.1 or [::1], with any port."""
    name = value.strip().lower()
    if name.startswith("["):
        name = name[1:name.find("]")] if "]" in name else ""
    else:
        name = name.rpartition(":")[0] if ":" in name else name
    name = name.rstrip(".")
    return name == "localhost" or (name != "" and _is_loopback(name))


class GymHTTPServer(ThreadingHTTPServer):
    """The server: a ThreadingHTTPServer (a thread per connection) holding
    the instances and the settings.  Build one with :func:`make_server`."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        isolation: str = DEFAULT_ISOLATION,
        env_timeout: float | None = None,
        max_env_memory: int | None = None,
        max_envs: int = DEFAULT_MAX_ENVS,
        max_processes: int | None = None,
        max_connections: int | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        timeout: float = DEFAULT_TIMEOUT,
        idle_timeout: float | None = None,
        drain_timeout: float = DEFAULT_DRAIN,
        token: str | None = None,
        allow_origins: tuple[str, ...] = (),
        node_id: str | None = None,
        peers: tuple[str, ...] = (),
        monitor_root: str | None = None,
        imports: tuple[str, ...] = (),
        log_requests: bool = False,
        spin_us: int = 0,
        handoff: bool = True,
    ):
        if isolation not in ("process", "thread"):
            raise ValueError(f"isolation must be 'process' or 'thread', not {isolation!r}")
        if isolation == "process" and DEFAULT_ISOLATION != "process":
            raise ValueError("isolation 'process' needs os.fork and socket.send_fds, which this platform lacks; use 'thread'")
        if env_timeout is not None and not env_timeout > 0:
            raise ValueError(f"env_timeout must be a positive number of seconds or None, not {env_timeout!r}")
        if max_env_memory is not None:
            if not (type(max_env_memory) is int and max_env_memory >= 0):
                raise ValueError(f"max_env_memory must be a number of MiB (0 for no limit) or None (the default), not {max_env_memory!r}")
            if isolation != "process" and max_env_memory:
                raise ValueError("max_env_memory needs isolation 'process': a thread's memory cannot be told apart or ended")
        elif isolation == "process":
            max_env_memory = default_max_env_memory()
        max_env_memory = max_env_memory or None  # 0: no limit
        if not (type(spin_us) is int and 0 <= spin_us <= MAX_SPIN_US):
            raise ValueError(f"spin_us must be an integer from 0 (off) to {MAX_SPIN_US}, not {spin_us!r}")
        if node_id is not None and not re.fullmatch(r"[A-Za-z0-9_]{1,32}", node_id):
            raise ValueError(f"node_id must be 1 to 32 letters, digits or _, not {node_id!r}")
        for peer in peers:
            parts = urlsplit(peer)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"a peer must be a URL such as http://10.0.0.2:5000, not {peer!r}")
        if allow_origins and not token:
            raise ValueError("--allow-origin lets other sites' pages use the API, so it needs --token (or GYMHTTP_TOKEN): "
                             "without one, any page its users open could create instances, write monitor files and "
                             "shut the server down")
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        # Everything server_close() needs exists before binding, which may fail.
        self.isolation = isolation
        self.env_timeout = env_timeout
        self.max_env_memory = max_env_memory
        self.starter: ProcessStarter | None = None
        self.runners: set[ProcessRunner] = set()  # every instance process not yet ended: made, making or remaking
        self.envs = Envs(max_envs, max_processes, f"{node_id}-" if node_id else "")
        self.node_id = node_id
        self.peers = tuple(p.rstrip("/") for p in peers)
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self._open_connections = 0
        self._accept_pause = 0.0  # seconds to wait before the next accept, after running out of files
        self.router = ROUTER
        self.max_body = max_body
        self.timeout_seconds = timeout
        self.idle_timeout = idle_timeout
        self.drain_seconds = drain_timeout
        self.edge = Edge(token or None, frozenset(o.rstrip("/") for o in allow_origins), _is_loopback(address[0]))
        self.monitor_root = os.path.realpath(monitor_root) if monitor_root else None
        self.allowed_imports = frozenset(imports)
        self.log_requests = log_requests
        self.handoff = handoff and isolation == "process"  # instance processes take over their actors' connections
        self.spin = spin_us / 1e6 if _PREEMPTIONS is not None else 0.0  # seconds
        self._last_client: GymHTTPRequestHandler | None = None  # the connection that sent the last POST
        self._last_switch = 0.0  # perf_counter() when that last changed
        self.loopback = self.edge.loopback
        self._shutdown_started = threading.Event()
        self._closed = False
        self._connections: dict[GymHTTPRequestHandler, float | None] = {}  # -> deadline (monotonic)
        self._inflight = 0
        self._state = threading.Condition()
        super().__init__(address, GymHTTPRequestHandler)  # binds; may raise OSError
        pick_headless_gl()  # before the starter forks: its instance processes inherit the choice
        if isolation == "process":
            try:  # forked before any thread of ours starts
                self.starter = ProcessStarter({"max_memory": max_env_memory << 20 if max_env_memory else None})
            except BaseException:
                self.socket.close()
                raise
        for target, name in ((self._watchdog, "watchdog"), (self._flush_loop, "monitors")):
            threading.Thread(target=target, name=f"gymhttp-{name}", daemon=True).start()
        if idle_timeout:
            threading.Thread(target=self._reap_loop, name="gymhttp-reaper", daemon=True).start()
        if isolation == "process":
            threading.Thread(target=self._watch_loop, name="gymhttp-watch", daemon=True).start()

    @property
    def token(self) -> str | None:
        """The token requests must carry (--token), or None."""
        return self.edge.token

    @token.setter
    def token(self, value: str | None) -> None:
        self.edge.token = value

    @property
    def allowed_origins(self) -> frozenset:
        return self.edge.allowed_origins

    # -- accepting connections ---------------------------------------------------

    def get_request(self) -> tuple[socket.socket, Any]:
        """accept(), pausing after it fails for want of files: the listening
        socket stays readable, and retrying at once would spin a core."""
        try:
            request = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                if not self._accept_pause:
                    log.warning("cannot accept connections: %s; pausing (lower --max-connections, or raise ulimit -n)", exc.strerror)
                self._accept_pause = min(1.0, max(0.05, 2 * self._accept_pause))
                self._shutdown_started.wait(self._accept_pause)
            raise
        self._accept_pause = 0.0
        return request

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        """Start the connection's thread, or refuse it past --max-connections."""
        with self._state:
            over = self._open_connections >= self.max_connections
            if not over:
                self._open_connections += 1
        if over:
            body = encode_json({"message": f"The server already has {self.max_connections} connections open, its "
                                           "limit (--max-connections); close idle ones or try again later"})
            try:
                request.setblocking(False)
                try:
                    request.recv(65536)  # what already came, so that closing does not reset the connection
                except OSError:
                    pass
                request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._state:
                self._open_connections -= 1
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._state:
                self._open_connections -= 1

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound socket (port 0 resolved)."""
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # -- dispatch: the one place where errors become responses ---------------

    def dispatch(self, handler: GymHTTPRequestHandler, body: bytes) -> tuple[HTTPStatus, dict, bytes, str]:
        """Route one request (see :func:`dispatch`)."""
        return dispatch(self, handler.command, handler.path, body, handler.connection)

    def admit(self, handler: GymHTTPRequestHandler) -> dict | Response:
        """Check a request's head (see :meth:`Edge.admit`)."""
        return self.edge.admit(handler.command, handler.path, handler.parsed_headers, handler.client_address[0])

    def ask_peers(self) -> list[dict | None]:
        """Each peer's own instances ({id: env_id}), asked side by side with
        this server's token; None for a peer that did not answer in time."""
        answers: list[dict | None] = [None] * len(self.peers)

        def ask(k: int, peer: str) -> None:
            parts = urlsplit(peer)
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = kind(parts.hostname, parts.port, timeout=PEER_TIMEOUT)
            try:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                conn.request("GET", f"{parts.path}/v1/envs/?local=1", headers=headers)
                reply = conn.getresponse()
                listed = json.loads(reply.read()).get("all_envs") if reply.status == HTTPStatus.OK else None
                answers[k] = listed if isinstance(listed, dict) else None
            except (OSError, ValueError, http.client.HTTPException):
                pass  # down, slow, or not a gymhttp node: left out, and named
            finally:
                conn.close()

        threads = [threading.Thread(target=ask, args=(k, peer), daemon=True) for k, peer in enumerate(self.peers)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + PEER_TIMEOUT + 0.5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return list(answers)

    # -- environments ---------------------------------------------------------

    def check_env_id(self, env_id: str) -> str:
        """400s for malformed ids and for ``module:Name`` ids whose module was
        not allowed with --import; returns the id."""
        module, _, name = env_id.rpartition(":")
        if module and module not in self.allowed_imports:
            raise bad_request(
                f"Env id {short(env_id)} would import the module {short(module)}; "
                f"start the server with --import {short(module)} to allow it"
            )
        try:
            gymnasium.envs.registration.parse_env_id(name)
        except gymnasium.error.Error:
            raise bad_request(f"Attempted to look up malformed environment ID '{short(env_id)}'")
        return env_id

    def check_wrappers(self, wrappers: Any) -> tuple:
        """A create's ``wrappers``, checked: a list of WrapperSpec-shaped
        objects (``name``, optional ``entry_point`` "module:Class", ``kwargs``)
        or bare names; returns (index, name, entry point, kwargs) for each.
        Entry points must come from gymnasium.wrappers or an --import module."""
        if wrappers is None:
            return ()
        if not isinstance(wrappers, list):
            raise bad_request(f"Parameter 'wrappers' must be a list such as "
                              f'[{{"name": "FlattenObservation"}}], not a JSON {json_type(wrappers)}: {short(wrappers)}')
        if len(wrappers) > MAX_WRAPPERS:
            raise bad_request(f"Parameter 'wrappers' lists {len(wrappers)} wrappers; at most {MAX_WRAPPERS} may be applied")
        checked = []
        for k, item in enumerate(wrappers):
            where = f"wrappers[{k}]"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise bad_request(f"{where} must be an object with 'name' (and 'entry_point', 'kwargs'), not a JSON "
                                  f"{json_type(item)}: {short(item)}")
            unknown = sorted(set(item) - {"name", "entry_point", "kwargs"})
            if unknown:
                close = difflib.get_close_matches(unknown[0], ["name", "entry_point", "kwargs"], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise bad_request(f"{where} has a field {short(unknown[0])} that a wrapper spec does not; it takes name, "
                                  f"entry_point and kwargs{hint}")
            fields = {f"{where}.{key}": item.get(key) for key in ("name", "entry_point", "kwargs")}
            name = optional(fields, f"{where}.name", (str,), "a string such as 'FlattenObservation'")
            entry_point = optional(fields, f"{where}.entry_point", (str,), "a string 'module:Class'")
            kwargs = optional(fields, f"{where}.kwargs", (dict,), "an object of keyword arguments for the wrapper", {})
            if entry_point is None:
                if not name:
                    raise bad_request(f"{where} needs a 'name' (a wrapper of gymnasium.wrappers) or an 'entry_point'")
                known = [n for n in gymnasium.wrappers.__all__ if n[0].isupper()]  # names only: their modules load lazily
                if name not in known:
                    renamed = getattr(gymnasium.wrappers, "_renamed_wrapper", {}).get(name)
                    close = [renamed] if renamed else difflib.get_close_matches(name, known, n=2, cutoff=0.75)
                    hint = f"did you mean {' or '.join(close)}?" if close else "see gymnasium.wrappers for their names"
                    raise bad_request(f"{where}: gymnasium.wrappers has no wrapper {short(name)}; {hint} "
                                      "(others need an 'entry_point' in a module allowed with --import)")
                entry_point = f"gymnasium.wrappers:{name}"
            module, colon, qualname = entry_point.partition(":")
            if not colon or not module or not qualname:
                raise bad_request(f"{where}: entry_point {short(entry_point)} must be 'module:Class', such as "
                                  "'gymnasium.wrappers:FlattenObservation'")
            allowed = ("gymnasium.wrappers", *self.allowed_imports)
            if not any(module == m or module.startswith(m + ".") for m in allowed):
                raise bad_request(f"{where}: entry_point {short(entry_point)} would import the module {short(module)}; "
                                  f"wrappers come from gymnasium.wrappers, or from a module the server was started with "
                                  f"(--import {short(module)})")
            name = name or qualname.rpartition(".")[2]
            refused = REFUSED_WRAPPERS.get(qualname.rpartition(".")[2])
            if refused:
                raise bad_request(f"{where}: the wrapper {short(name)} cannot be applied on the server: {refused}")
            if "env" in kwargs:
                raise bad_request(f"{where}: kwargs must not hold 'env'; the server passes the env itself")
            checked.append((k, name, entry_point, kwargs))
        return tuple(checked)

    def start_env(self, make_args: tuple, watch: socket.socket | None = None) -> tuple[ProcessRunner | LocalRunner, dict]:
        """Make an env as the isolation says: in a new instance process, or
        here.  Returns its runner and the facts its env side reported.  When
        the client on ``watch`` hangs up first, what was started is ended:
        at once in a process; in a thread, which cannot be stopped, once the
        make returns."""
        if self.starter is None:
            runner, facts = LocalRunner.make(make_args, self.env_timeout)
            if watch is not None and _hung_up(watch):
                runner.close(CLOSE_WAIT)
                raise HTTPError(HTTPStatus.BAD_REQUEST, "The client hung up during make; the env was closed")
            return runner, facts
        pid, sock = self.starter.start()
        runner = ProcessRunner(self, pid, sock)
        if make_args[3] > 1 and make_args[4] == "async":  # workers of its own, which --max-env-memory counts too
            runner.workers = {}
        try:
            facts = runner.call("make", *make_args, watch=watch)
            if runner.workers is not None:  # they are all there once the vector is made
                runner.list_workers()
            return runner, facts
        except BaseException:
            runner.finish()
            raise

    def restart_env(self, instance: Instance, watch: socket.socket | None = None) -> None:
        """A fresh env for an instance whose process died (or, in threads,
        whose env was abandoned past --env-timeout)."""
        # A fresh env seeds its first reset as the create said, unless a reset came since.
        instance.runner, instance.facts = self.start_env((*instance.make_args[:-1], instance.pending_seed), watch)
        instance.described.clear()
        instance.needs_reset = True
        monitor = instance.monitor
        if monitor is not None and monitor.video_every:  # the recording died with the old env: go on in the new one
            monitor.video_runs += 1
            instance.call("record_video", monitor.directory, monitor.video_every, f"{monitor.video_prefix}.{monitor.video_runs}")
        log.info("made %s (%s) afresh after its env %s", instance.instance_id, instance.env_id, instance.broken)

    def monitor_directory(self, directory: str) -> str:
        """Where a monitor may write: inside --monitor-root when it is set;
        anywhere on loopback; under the working directory otherwise."""
        if "\x00" in directory:
            raise bad_request("Parameter 'directory' contains a NUL byte")
        if len(directory) > MAX_PATH_LENGTH:
            raise bad_request(f"Parameter 'directory' is {len(directory)} characters long; a path may have at most "
                              f"{MAX_PATH_LENGTH}")
        if directory.count("/") > MAX_PATH_PARTS:  # os.makedirs recurses once per component
            raise bad_request(f"Parameter 'directory' has {directory.count('/')} slashes; at most {MAX_PATH_PARTS} path "
                              "components are taken")
        root = self.monitor_root
        if root is None and not self.loopback:
            root = os.path.realpath(os.getcwd())
        if root is None:
            return os.path.abspath(directory)
        path = os.path.realpath(os.path.join(root, directory))
        if path != root and not path.startswith(root + os.sep):
            raise bad_request(
                f"Monitor directory {short(directory)} is outside the monitor root {root}; "
                "give a path inside it (relative paths resolve under it) or start the server with another --monitor-root"
            )
        return path

    # -- connections: deadlines and in-flight requests -----------------------

    def track(self, handler: GymHTTPRequestHandler, deadline: float | None) -> None:
        """Set (or clear, with None) the time by which a connection must have
        sent its request; the watchdog drops it after that."""
        self._connections[handler] = deadline

    def untrack(self, handler: GymHTTPRequestHandler) -> None:
        self._connections.pop(handler, None)

    def begin_request(self) -> bool:
        """Count a request in; False once shutting down (answer 503)."""
        with self._state:
            if self._shutdown_started.is_set():
                return False
            self._inflight += 1
            return True

    def end_request(self) -> None:
        with self._state:
            self._inflight -= 1
            if self._shutdown_started.is_set():  # only _drain() waits on this
                self._state.notify_all()

    # -- background work --------------------------------------------------------

    def _watchdog(self) -> None:
        """Drop connections past their deadline: idle ones, and slow senders
        (slowloris) whose request has not arrived whole within --timeout."""
        interval = max(0.05, min(1.0, self.timeout_seconds / 4))
        while not self._shutdown_started.wait(interval):
            now = time.monotonic()
            for handler, deadline in list(self._connections.items()):
                if deadline is not None and now > deadline:
                    handler.drop()

    def _flush_loop(self) -> None:
        """Write new episodes of every monitor to its files within a second,
        so that a crash of the server loses at most that second."""
        while not self._shutdown_started.wait(MONITOR_FLUSH):
            for instance in self.envs.all():
                monitor = instance.monitor
                if monitor is not None and monitor.dirty:
                    try:
                        monitor.flush()
                    except OSError as exc:
                        log.warning("writing the monitor files of %s failed: %s", instance.instance_id, exc)

    def _watch_loop(self) -> None:
        """Every MEMORY_POLL seconds, look at every instance process the
        server started, from its fork on (one still making its env, for a
        create or the remake a reset does after a crash, is in a call and
        not in the registry yet), and at the request one serves on a
        connection it owns: past --max-env-memory (checked each time while in
        a call, else once a second) or past --env-timeout, it is killed, and
        whoever waits answers why."""
        limit = self.max_env_memory << 20 if self.max_env_memory else None
        rounds = 0
        while not self._shutdown_started.wait(MEMORY_POLL):
            rounds += 1
            everyone = rounds % round(1 / MEMORY_POLL) == 0
            now = time.monotonic()
            index = functools.cache(_children_index)  # /proc scanned at most once a round, when an async vector's workers are looked for

            def children(pid: int) -> list[int]:
                return index().get(pid, [])

            for runner in list(self.runners):  # a copy: creates and ends change the set meanwhile
                owned = runner.owned_busy()
                if owned is not None and self.env_timeout is not None and now - owned[1] > self.env_timeout:
                    runner.kill("timeout")
                    continue
                if limit is not None and (runner.busy or owned is not None or everyone):
                    held = runner.memory(children)
                    if held is not None and held > limit:
                        runner.held = held
                        runner.kill("memory")

    def _reap_loop(self) -> None:
        interval = max(0.05, min(self.idle_timeout / 4, 5.0))
        while not self._shutdown_started.wait(interval):
            for instance_id in self.envs.reap_idle(self.idle_timeout):
                log.info("closed idle instance %s (--idle-timeout %s)", instance_id, self.idle_timeout)

    # -- lifecycle --------------------------------------------------------------

    _serving = False  # serve_forever() was called

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until shut down; at once back if that was asked for before."""
        self._serving = True
        if not self._shutdown_started.is_set():
            super().serve_forever(poll_interval)

    def request_shutdown(self) -> None:
        """Stop serving soon, from any thread but the serving one."""
        if not self._shutdown_started.is_set():
            self._shutdown_started.set()
            # shutdown() waits for serve_forever() to end: a server that never
            # served would keep that thread for ever (serve_forever sees the flag).
            if self._serving:
                threading.Thread(target=self.shutdown, name="gymhttp-shutdown", daemon=True).start()

    def _busy(self) -> bool:
        """Whether a request is being served: here, or by an instance process on a connection it owns."""
        return bool(self._inflight) or any(runner.owned_busy() for runner in list(self.runners))

    def _drain(self) -> None:
        """Take back the connections instance processes own, let in-flight
        requests finish (up to drain_seconds); then end what still runs
        (instance processes in a call are killed), and cut the connections."""
        for instance in self.envs.all():
            for owner in list(instance.owners):
                owner.release()
        deadline = time.monotonic() + self.drain_seconds
        while self._busy() and time.monotonic() < deadline:
            with self._state:
                self._state.wait(0.02)
        if self._busy():
            for runner in list(self.runners):  # makes too: a create in flight is not in the registry yet
                if runner.busy or runner.owned_busy():
                    runner.kill("shutdown")
            deadline = time.monotonic() + 1.0  # their requests now answer at once
            while self._busy() and time.monotonic() < deadline:
                with self._state:
                    self._state.wait(0.02)
        for handler in list(self._connections):
            handler.drop()

    @property
    def stuck(self) -> int:
        """Requests still inside an env after the drain (threads can't be stopped)."""
        return self._inflight

    def server_close(self) -> None:
        """Stop listening, let in-flight requests finish, then close every
        env (flushing monitors) and end the instance processes.  It always
        ends: within about --drain-timeout plus a few seconds."""
        if self._closed:
            return
        self._closed = True
        self._shutdown_started.set()
        super().server_close()
        self._drain()
        self.envs.close_all(CLOSE_SECONDS)
        if self.starter is not None:
            self.starter.close()


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, **options: Any) -> GymHTTPServer:
    """Build a server bound to ``host:port`` (port 0 picks a free one).

    Run it with ``serve_forever()``, in a thread if you like; stop it with
    ``POST /v1/shutdown/`` or ``shutdown()``, then call ``server_close()``.
    Options are the keyword arguments of :class:`GymHTTPServer`; busy-polling
    is off (``spin_us=0``) unless you pass ``spin_us``, since a server in a
    thread shares the GIL with the rest of the process.  With
    ``isolation="process"`` (the default where the OS can fork) the server
    forks its starter here: register your envs before, since instance
    processes are copies of this one as it is now.
    """
    return GymHTTPServer((host, port), **options)


def import_modules(names: list[str]) -> None:
    """Import modules that register environments (``--import``)."""
    for name in names:
        importlib.import_module(name)


def serve(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, imports: tuple[str, ...] = (), spin_us: int = DEFAULT_SPIN_US,
    **options: Any,
) -> None:
    """Import ``imports``, then serve on ``host:port`` until shut down (a
    signal or ``POST /v1/shutdown/``), then close every env.

    As a program of its own, the server busy-polls for fast clients
    (``spin_us``); :func:`make_server` does not unless asked, because a
    server in a thread of your program shares the GIL with it.
    """
    pick_headless_gl()  # before the imports, which may import mujoco
    import_modules(list(imports))
    run(make_server(host, port, imports=tuple(imports), spin_us=spin_us, **options))


_SERVER_HANDLERS: set = set()  # the signal handlers run() installed, in this process


def _default_signals() -> None:
    """In a process forked from the server (an env's child, in thread mode):
    the default handlers again, so that SIGTERM ends it, instead of the
    server's, which would only ask a server that is not there to stop."""
    for signum, default in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGINT, signal.default_int_handler)):
        if signal.getsignal(signum) in _SERVER_HANDLERS:
            signal.signal(signum, default)


def run(server: GymHTTPServer) -> None:
    """Serve until shut down; SIGINT and SIGTERM stop it cleanly, a second
    Ctrl-C at once."""
    if not server.loopback and not server.token:
        print(
            f"gymhttp: WARNING: listening on {server.url} without a token: anyone who can reach this port can "
            "create environments, run them and write monitor files. Set GYMHTTP_TOKEN (or pass --token).",
            file=sys.stderr, flush=True,
        )
    interrupts = []

    def on_signal(signum: int, frame: Any) -> None:
        interrupts.append(signum)
        if len(interrupts) > 1 and signum == signal.SIGINT:
            os._exit(130)  # a second Ctrl-C: out now
        server.request_shutdown()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        _SERVER_HANDLERS.add(on_signal)
        if hasattr(os, "register_at_fork") and len(_SERVER_HANDLERS) == 1:
            os.register_at_fork(after_in_child=_default_signals)
    print(f"gymhttp {__version__} serving on {server.url}/ (the dashboard is at that URL; Ctrl-C to stop; "
          f"instances in {'processes' if server.isolation == 'process' else 'threads'})", flush=True)
    if headless_gl:
        print(f"gymhttp: no display, so MuJoCo renders with MUJOCO_GL={headless_gl} (set MUJOCO_GL to choose)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    print("gymhttp stopped", flush=True)


def _raise_open_files_limit() -> None:
    """Connections and instance processes each take a file: allow as many as
    the system lets us (up to 65536), as servers do."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="gymhttp", description="Serve Gymnasium environments over HTTP/JSON (the v1 gym-http-api).",
        epilog="Details of every flag: docs/server.md; the API: docs/api.md; limits and the token: docs/security.md.",
    )
    parser.add_argument("--version", action="version", version=f"gymhttp {__version__}")
    parser.add_argument("-l", "--listen", default=DEFAULT_HOST, metavar="HOST", help="address to listen on (default: %(default)s)")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="port to listen on, 0 for any free one (default: %(default)s)")
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="import MODULE first so the envs it registers can be made; repeatable (default: none)",
    )
    parser.add_argument(
        "--isolation", choices=["process", "thread"], default=DEFAULT_ISOLATION,
        help="process: each instance in a process of its own (a crash, hang or leak stays there; envs use every core); "
        "thread: all in the server's process, for the lowest latency with a trusted cheap env (default: %(default)s)",
    )
    parser.add_argument(
        "--handoff", choices=["on", "off"], default="on",
        help="with --isolation process: a connection that steps one instance is handed to that instance's process, "
        "which answers it directly (one hop a step); off relays every request through the server (default: %(default)s)",
    )
    parser.add_argument(
        "--env-timeout", type=float, default=None, metavar="SECONDS",
        help="longest any call into an env may take (make included); past it the call answers 504 and the instance "
        "is broken, its process killed (default: none)",
    )
    parser.add_argument(
        "--max-env-memory", type=int, default=None, metavar="MIB",
        help="with --isolation process: kill an instance process whose resident memory goes past MIB, from its fork on; "
        f"0 for no limit (default: half this machine's memory, {default_max_env_memory():,} MiB here)",
    )
    parser.add_argument("--max-envs", type=int, default=DEFAULT_MAX_ENVS, metavar="N", help="most instances at once (default: %(default)s)")
    parser.add_argument(
        "--max-processes", type=int, default=default_max_processes(), metavar="N",
        help="most processes the instances may run: one per instance with --isolation process, one per sub-env "
        "of an async vector (default: %(default)s, one per 32 MiB of this machine's memory)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=None, metavar="N",
        help="most connections open at once; more get a 503 (default: half the open files allowed, "
        f"{default_max_connections()} here, raised to the hard limit at start)",
    )
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES", help="largest request body (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="drop connections idle or stalled this long (default: %(default)s)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS", help="close instances untouched this long (default: off)")
    parser.add_argument(
        "--drain-timeout", type=float, default=DEFAULT_DRAIN, metavar="SECONDS",
        help="at shutdown, wait this long for requests in flight, then kill what still runs (default: %(default)s)",
    )
    parser.add_argument("--token", default=os.environ.get("GYMHTTP_TOKEN"), help="require 'Authorization: Bearer TOKEN' (default: $GYMHTTP_TOKEN, else none)")
    parser.add_argument(
        "--allow-origin", dest="allow_origins", action="append", default=[], metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. https://app.example) use the API, with CORS; repeatable; * allows any "
        "page (default: none: pages from other origins may only GET)",
    )
    parser.add_argument(
        "--node-id", default=None, metavar="NAME",
        help="this node's name in a cluster behind nginx: instance ids start with NAME- (letters, digits, _) so that the "
        "gateway routes by them (default: none)",
    )
    parser.add_argument(
        "--peers", default="", metavar="URL[,URL...]",
        help="the other nodes of the cluster: the list of instances (GET /v1/envs/) includes theirs (default: none)",
    )
    parser.add_argument("--monitor-root", default=None, metavar="DIR", help="confine monitor directories to DIR (default: %(default)s)")
    parser.add_argument(
        "--spin-us", type=int, default=DEFAULT_SPIN_US, metavar="MICROSECONDS",
        help="after a reply, busy-poll this long for the next request of a client that steps fast; 0 turns it off (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"], help="server log level (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 (any free port) to 65535, not {args.port}")
    for flag, value in (("--max-envs", args.max_envs), ("--max-body", args.max_body), ("--timeout", args.timeout),
                        ("--max-processes", args.max_processes), ("--max-connections", args.max_connections)):
        if value is not None and value <= 0:
            parser.error(f"{flag} must be positive, not {value}")
    if not 0 <= args.spin_us <= MAX_SPIN_US:
        parser.error(f"--spin-us must be from 0 (off) to {MAX_SPIN_US}, not {args.spin_us}")
    if args.max_env_memory is not None and args.max_env_memory < 0:
        parser.error(f"--max-env-memory must be 0 (no limit) or more, not {args.max_env_memory}")
    for flag, value in (("--idle-timeout", args.idle_timeout), ("--env-timeout", args.env_timeout)):
        if value is not None and not value > 0:
            parser.error(f"{flag} must be positive, not {value}")
    if not args.drain_timeout >= 0:
        parser.error(f"--drain-timeout must be 0 or more, not {args.drain_timeout}")
    if args.max_env_memory and args.isolation != "process":
        parser.error("--max-env-memory needs --isolation process: a thread's memory cannot be measured or ended apart")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s gymhttp %(levelname)s %(message)s")
    _raise_open_files_limit()
    pick_headless_gl()  # before the imports, which may import mujoco
    for name in args.imports:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # a module may even sys.exit()
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"gymhttp: error: cannot import {name}: {type(exc).__name__}: {first}", file=sys.stderr)
            return 2
    try:
        server = make_server(
            args.listen, args.port, imports=tuple(args.imports), max_envs=args.max_envs, max_body=args.max_body,
            timeout=args.timeout, idle_timeout=args.idle_timeout, token=args.token, monitor_root=args.monitor_root,
            log_requests=args.log_level in ("debug", "info"), spin_us=args.spin_us, isolation=args.isolation,
            handoff=args.handoff == "on",
            env_timeout=args.env_timeout, max_env_memory=args.max_env_memory, drain_timeout=args.drain_timeout,
            allow_origins=tuple(args.allow_origins), max_processes=args.max_processes, max_connections=args.max_connections,
            node_id=args.node_id, peers=tuple(p.strip() for p in args.peers.split(",") if p.strip()),
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        print(f"gymhttp: error: cannot listen on {args.listen}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    run(server)
    if server.stuck:  # threads still inside envs (--isolation thread): they must not keep the process alive
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0



# ---------------------------------------------------------------------------
# The dashboard page (GET /)
# ---------------------------------------------------------------------------
#
# One self-contained page: inline CSS and JS, nothing fetched from elsewhere
# (the Content-Security-Policy enforces it).  It polls GET /v1/envs/, the
# details of each instance and their rendered frames.

DASHBOARD_CSP = (
    "default-src 'none'; connect-src 'self'; img-src 'self' blob: data:; "
    "style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)

DASHBOARD_HTML = r'''<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gymhttp dashboard</title>
<style>
:root {
  --bg: #f5f6f8; --card: #ffffff; --ink: #1b2230; --muted: #6a7486; --line: #e2e6ed;
  --accent: #2f6fed; --accent-soft: rgba(47, 111, 237, .18); --good: #1f9d55; --bad: #d64545;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
}
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f1318; --card: #171c23; --ink: #e6e9ef; --muted: #8f99a8; --line: #29313c;
          --accent: #6b9bff; --accent-soft: rgba(107, 155, 255, .22); }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--ink); }
header { display: flex; align-items: center; gap: 14px; padding: 12px 24px; background: var(--card);
         border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
header h1 { font-size: 18px; margin: 0; }
header .ver { color: var(--muted); font-size: 12px; }
#status { margin-left: auto; display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 13px; min-width: 0; }
#status span:last-child { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.dot { flex: none; width: 9px; height: 9px; border-radius: 50%; background: var(--muted); }
.dot.ok { background: var(--good); } .dot.err { background: var(--bad); }
#totals { display: flex; flex-wrap: wrap; gap: 32px; padding: 18px 24px 0; }
.total b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
.total span, .stat span { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .5px; }
#note { padding: 8px 24px 0; color: var(--muted); font-size: 12px; min-height: 1em; }
main { padding: 12px 24px 32px; display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 16px; align-items: start; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
        display: flex; flex-direction: column; gap: 12px; min-width: 0; }
.card h2 { font-size: 15px; margin: 0; display: flex; align-items: center; gap: 8px; min-width: 0; }
.card h2 .env { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card h2 .id { font: 12px var(--mono); color: var(--muted); margin-left: auto; }
.badge { flex: none; font-size: 11px; font-weight: 500; padding: 1px 8px; border-radius: 99px; background: var(--line); color: var(--muted); }
.badge.bad { background: rgba(214, 69, 69, .14); color: var(--bad); }
.badge[hidden] { display: none; }
.stats { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 6px; }
.stat b { display: block; font-size: 17px; font-variant-numeric: tabular-nums; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.frame { aspect-ratio: 3 / 2; background: var(--card); border-radius: 6px; overflow: hidden; display: flex; align-items: center; justify-content: center; }
.frame.text { background: #0b0d10; }  /* ansi text is drawn light on dark, as in a terminal */
.frame img { width: 100%; height: 100%; object-fit: contain; display: block; }
.frame pre { margin: 0; color: #e6e9ef; font: 13px/1.25 var(--mono); padding: 10px; max-height: 100%; overflow: hidden; }
.frame .none { color: #8f99a8; font-size: 12px; text-align: center; padding: 0 24px; }
.hint { color: var(--muted); font-size: 12px; border: 1px dashed var(--line); border-radius: 6px; padding: 8px 10px; }
.hint code, .empty code { font: 12px var(--mono); }
.plotbox { position: relative; }
.plotbox .label { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .5px; margin-bottom: 4px; display: flex; justify-content: space-between; }
canvas.plot { width: 100%; height: 130px; display: block; }
.foot { color: var(--muted); font-size: 12px; display: flex; justify-content: space-between; gap: 8px; }
.empty { grid-column: 1 / -1; text-align: center; padding: 56px 16px; color: var(--muted); }
.empty h2 { color: var(--ink); font-size: 18px; margin: 0 0 6px; }
.empty pre { display: inline-block; text-align: left; margin-top: 14px; background: var(--card); border: 1px solid var(--line);
             border-radius: 8px; padding: 12px 16px; font: 12.5px/1.5 var(--mono); color: var(--ink); white-space: pre-wrap; }
#login { grid-column: 1 / -1; max-width: 420px; margin: 48px auto; background: var(--card); border: 1px solid var(--line);
         border-radius: 10px; padding: 20px; display: flex; flex-direction: column; gap: 10px; }
#login input { font: 14px var(--mono); padding: 8px 10px; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--ink); }
#login button { font: inherit; padding: 8px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; }
</style>
</head>
<body>
<header>
  <h1>gymhttp</h1><span class="ver">v''' + __version__ + r'''</span>
  <div id="status"><span class="dot" id="dot"></span><span id="status-text">Connecting…</span></div>
</header>
<section id="totals">
  <div class="total"><b id="t-instances">–</b><span>instances</span></div>
  <div class="total"><b id="t-steps">–</b><span>env steps</span></div>
  <div class="total"><b id="t-episodes">–</b><span>episodes</span></div>
</section>
<div id="note"></div>
<main id="grid"></main>
<template id="card-template">
  <article class="card">
    <h2><span class="env"></span><span class="badge vec" hidden></span><span class="badge bad broken" hidden>broken</span><span class="id"></span></h2>
    <div class="stats">
      <div class="stat"><b class="steps">0</b><span>steps</span></div>
      <div class="stat"><b class="episodes">0</b><span>episodes</span></div>
      <div class="stat"><b class="last">–</b><span>last return</span></div>
      <div class="stat"><b class="mean">–</b><span>mean (10)</span></div>
    </div>
    <div class="view"></div>
    <div class="plotbox"><div class="label"><span>episode returns</span><span class="range"></span></div><canvas class="plot"></canvas></div>
    <div class="foot"><span class="active"></span><span class="mem"></span><span class="created"></span></div>
  </article>
</template>
<script>
"use strict";
const MAX_CARDS = 48, POLL_MS = 1000, FRAME_MS = 200;
const grid = document.getElementById("grid");
const cards = new Map();  // instance_id -> card state
let token = sessionStorage.getItem("gymhttp-token") || "";
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) {  // #token=... never reaches the server's logs; drop it from the address bar
  token = hashToken;
  sessionStorage.setItem("gymhttp-token", token);
  history.replaceState(null, "", location.pathname);
}

class AuthError extends Error {}

async function api(path, kind = "json") {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const reply = await fetch(path, { headers, cache: "no-store" });
  if (reply.status === 401) throw new AuthError("token needed");
  if (!reply.ok) {
    let message = reply.status + " " + reply.statusText;
    try { message = (await reply.json()).message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = reply.status;
    throw error;
  }
  return kind === "json" ? reply.json() : kind === "blob" ? reply.blob() : reply.text();
}

const fmtInt = n => Number(n).toLocaleString("en-US");
const fmtMiB = b => (b < 10 * 2 ** 20 ? (b / 2 ** 20).toFixed(1) : fmtInt(Math.round(b / 2 ** 20))) + " MiB";
function fmtNum(x) {  // one format for every return: grouped, no trailing zeros, two decimals at most
  if (x === null || x === undefined) return "–";
  if (typeof x === "string") return x;  // "NaN", "Infinity"
  const a = Math.abs(x);
  if (a !== 0 && a < 0.01) return x.toLocaleString("en-US", {maximumSignificantDigits: 2});
  return x.toLocaleString("en-US", {maximumFractionDigits: a >= 1000 ? 0 : 2});
}
// ANSI colours (SGR) as DOM nodes: text stays text, so nothing in it can become markup.
const ANSI = ["#1b2230", "#e5534b", "#57ab5a", "#c69026", "#539bf5", "#b083f0", "#39c5cf", "#e6e9ef"];
function ansiNodes(text) {
  const nodes = [];
  let fg = null, bg = null, bold = false;
  for (const part of text.split(/(\x1b\[[0-9;]*m)/)) {
    const sgr = /^\x1b\[([0-9;]*)m$/.exec(part);
    if (sgr) {
      for (const code of (sgr[1] || "0").split(";").map(Number)) {
        if (code === 0) { fg = bg = null; bold = false; }
        else if (code === 1) bold = true;
        else if (code === 22) bold = false;
        else if (code === 39) fg = null;
        else if (code === 49) bg = null;
        else if (code >= 30 && code <= 37) fg = ANSI[code - 30];
        else if (code >= 90 && code <= 97) fg = ANSI[code - 90];
        else if (code >= 40 && code <= 47) bg = ANSI[code - 40];
        else if (code >= 100 && code <= 107) bg = ANSI[code - 100];
      }
    } else if (part) {
      const span = document.createElement("span");
      span.textContent = part;
      if (fg) span.style.color = fg;
      if (bg) span.style.backgroundColor = bg;
      if (bold) span.style.fontWeight = "bold";
      nodes.push(span);
    }
  }
  return nodes;
}
function ago(seconds) {
  if (seconds < 1.5) return "just now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h ago";
  return Math.round(seconds / 86400) + " days ago";
}

function setStatus(kind, text) {
  document.getElementById("dot").className = "dot " + kind;
  document.getElementById("status-text").textContent = text;
}

function showEmpty() {
  if (grid.querySelector(".empty")) return;
  grid.replaceChildren();
  const box = document.createElement("div");
  box.className = "empty";
  box.innerHTML = "<h2>No instances yet</h2><div>Create one and it appears here; add " +
    "<code>\"kwargs\": {\"render_mode\": \"rgb_array\"}</code> to watch it play.</div><pre></pre>";
  box.querySelector("pre").textContent =
    "curl -X POST " + location.origin + "/v1/envs/ \\\n  -d '{\"env_id\": \"CartPole-v1\", \"kwargs\": {\"render_mode\": \"rgb_array\"}}'";
  grid.append(box);
}

function showLogin() {
  if (document.getElementById("login")) return;
  cards.clear();
  grid.replaceChildren();
  const form = document.createElement("form");
  form.id = "login";
  form.innerHTML = "<strong>This server needs its token</strong><span class='hint'>It was started with <code>--token</code>. " +
    "The token stays in this tab (session storage).</span><input type='password' autocomplete='off' placeholder='token'>" +
    "<button type='submit'>Show the dashboard</button>";
  form.addEventListener("submit", event => {
    event.preventDefault();
    token = form.querySelector("input").value.trim();
    sessionStorage.setItem("gymhttp-token", token);
    form.remove();
    poll();
  });
  grid.append(form);
}

function makeCard(d) {
  const el = document.getElementById("card-template").content.firstElementChild.cloneNode(true);
  el.dataset.instance = d.instance_id;
  el.querySelector(".env").textContent = d.env_id;
  el.querySelector(".env").title = d.env_id;
  el.querySelector(".id").textContent = d.instance_id;
  if (d.num_envs > 1) {
    const vec = el.querySelector(".vec");
    vec.hidden = false;
    vec.textContent = "×" + d.num_envs;
  }
  const view = el.querySelector(".view");
  const card = { el, details: d, frameSteps: -1, frameBusy: false, frameUrl: null };
  if (d.render_mode === "rgb_array" || d.render_mode === "ansi") {
    view.className = "frame";
    view.innerHTML = "<div class='none'>Waiting for the first frame…</div>";
    card.view = view;
  } else {
    view.className = "hint";
    const made = d.render_mode ? "its render_mode, <code></code>, draws no picture" : "made without <code>render_mode</code>";
    view.innerHTML = "No live frame: " + made + ". Create with " +
      "<code>\"kwargs\": {\"render_mode\": \"rgb_array\"}</code> to watch it.";
    if (d.render_mode) view.querySelector("code").textContent = d.render_mode;  // text, never markup
  }
  return card;
}

function updateCard(card, d) {
  card.details = d;
  const el = card.el, q = s => el.querySelector(s);
  q(".steps").textContent = fmtInt(d.env_steps);
  q(".episodes").textContent = fmtInt(d.episodes);
  q(".last").textContent = fmtNum(d.last_return);
  const returns = d.recent_episodes.map(e => e.return).filter(r => typeof r === "number");
  const tail = returns.slice(-10);
  q(".mean").textContent = tail.length ? fmtNum(tail.reduce((a, b) => a + b, 0) / tail.length) : "–";
  const broken = q(".broken");
  broken.hidden = !d.broken;
  broken.title = d.broken || "";
  q(".active").textContent = "active " + ago(d.now - d.last_activity);
  q(".created").textContent = "created " + new Date(d.created * 1000).toLocaleTimeString();
  const mem = q(".mem");  // its process's resident memory (--isolation process)
  mem.textContent = typeof d.rss === "number" ? fmtMiB(d.rss) : "";
  mem.title = d.pid ? "resident memory of its process, pid " + d.pid : "";
  drawPlot(q("canvas"), returns, d.episodes, q(".range"));
}

function drawPlot(canvas, returns, episodes, range) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) { canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  canvas.dataset.points = returns.length;
  const css = getComputedStyle(document.documentElement);
  const muted = css.getPropertyValue("--muted").trim(), line = css.getPropertyValue("--line").trim();
  const accent = css.getPropertyValue("--accent").trim(), soft = css.getPropertyValue("--accent-soft").trim();
  ctx.font = "11px system-ui, sans-serif";
  if (!returns.length) {
    range.textContent = "";
    ctx.fillStyle = muted;
    ctx.textAlign = "center";
    ctx.fillText("No finished episode yet", width / 2, height / 2);
    return;
  }
  let lo = Math.min(...returns), hi = Math.max(...returns);
  if (lo === hi) { lo -= 1; hi += 1; }
  const ticks = [hi, (hi + lo) / 2, lo];
  // Room for the widest label: "-655.11" must not lose its minus sign off the edge.
  const left = Math.max(30, ...ticks.map(v => ctx.measureText(fmtNum(v)).width + 12)), right = 6, top = 8, bottom = 18;
  const first = episodes - returns.length + 1;
  range.textContent = returns.length === 1 ? "episode " + fmtInt(first) : "episodes " + fmtInt(first) + "–" + fmtInt(episodes);
  const x = i => left + (returns.length === 1 ? (width - left - right) / 2 : i * (width - left - right) / (returns.length - 1));
  const y = v => top + (hi - v) * (height - top - bottom) / (hi - lo);
  ctx.strokeStyle = line; ctx.lineWidth = 1; ctx.fillStyle = muted; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  for (const v of ticks) {
    ctx.beginPath(); ctx.moveTo(left, Math.round(y(v)) + .5); ctx.lineTo(width - right, Math.round(y(v)) + .5); ctx.stroke();
    ctx.fillText(fmtNum(v), left - 6, y(v));
  }
  ctx.strokeStyle = soft; ctx.lineWidth = 1.5; ctx.beginPath();
  returns.forEach((v, i) => i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v)));
  ctx.stroke();
  ctx.fillStyle = soft;
  if (returns.length <= 60) returns.forEach((v, i) => { ctx.beginPath(); ctx.arc(x(i), y(v), 2, 0, 2 * Math.PI); ctx.fill(); });
  ctx.strokeStyle = accent; ctx.lineWidth = 2; ctx.beginPath();  // moving average over 10
  let sum = 0;
  returns.forEach((v, i) => {
    sum += v - (i >= 10 ? returns[i - 10] : 0);
    const mean = sum / Math.min(i + 1, 10);
    i ? ctx.lineTo(x(i), y(mean)) : ctx.moveTo(x(i), y(mean));
  });
  ctx.stroke();
}

async function refreshFrame(card) {
  const d = card.details;
  const stepping = d.now - d.last_activity < 5;  // refresh while it steps, and once after it stops
  if (!card.view || card.frameBusy || (!stepping && d.env_steps === card.frameSteps)) return;
  card.frameBusy = true;
  const steps = d.env_steps;
  const path = "/v1/envs/" + encodeURIComponent(d.instance_id) + "/render/" + (d.num_envs > 1 ? "?index=0" : "");
  try {
    if (d.render_mode === "ansi") {
      const text = await api(path, "text");
      let pre = card.view.querySelector("pre");
      if (!pre) { pre = document.createElement("pre"); card.view.replaceChildren(pre); card.view.classList.add("text"); }
      pre.replaceChildren(...ansiNodes(text));
    } else {
      const blob = await api(path, "blob");
      let img = card.view.querySelector("img");
      if (!img) {
        img = document.createElement("img");
        img.alt = d.env_id + " frame";
        img.onload = () => { img.dataset.loaded = img.naturalWidth + "x" + img.naturalHeight; };
        card.view.replaceChildren(img);
      }
      const old = card.frameUrl;
      card.frameUrl = URL.createObjectURL(blob);
      img.src = card.frameUrl;
      if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
    }
    card.frameSteps = steps;
  } catch (e) {
    if (e instanceof AuthError) return showLogin();
    if (!card.view.querySelector("img, pre")) {
      card.view.innerHTML = "<div class='none'></div>";
      card.view.firstChild.textContent = e.status === 409 ? "Waiting for the first reset…" : e.message;
    }
    card.frameSteps = steps;  // don't hammer a failing render; retry on the next step
  } finally {
    card.frameBusy = false;
  }
}

async function poll() {
  let ok = false;
  try {
    const list = await api("/v1/envs/");
    const ids = Object.keys(list.all_envs);
    const shown = ids.slice(0, MAX_CARDS);
    const details = (await Promise.all(shown.map(id =>
      api("/v1/envs/" + encodeURIComponent(id) + "/").catch(e => { if (e instanceof AuthError) throw e; return null; })))).filter(Boolean);
    details.sort((a, b) => a.created - b.created || (a.instance_id < b.instance_id ? -1 : 1));
    const seen = new Set();
    let steps = 0, episodes = 0;
    for (const d of details) {
      seen.add(d.instance_id);
      steps += d.env_steps; episodes += d.episodes;
      let card = cards.get(d.instance_id);
      if (!card) { card = makeCard(d); cards.set(d.instance_id, card); }
      updateCard(card, d);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) { if (card.frameUrl) URL.revokeObjectURL(card.frameUrl); card.el.remove(); cards.delete(id); }
    }
    if (!details.length) showEmpty();
    else {
      grid.querySelector(".empty")?.remove();
      details.forEach((d, i) => { const el = cards.get(d.instance_id).el; if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null); });
    }
    document.getElementById("t-instances").textContent = fmtInt(ids.length);
    document.getElementById("t-steps").textContent = fmtInt(steps);
    document.getElementById("t-episodes").textContent = fmtInt(episodes);
    document.getElementById("note").textContent = ids.length > MAX_CARDS ? "Showing the first " + MAX_CARDS + " of " + ids.length + " instances." : "";
    setStatus("ok", "Live · updated " + new Date().toLocaleTimeString());
    ok = true;
  } catch (e) {
    if (e instanceof AuthError) { setStatus("err", "Token needed"); showLogin(); return; }
    setStatus("err", "Cannot reach the server (" + e.message + "); retrying");
  }
  setTimeout(poll, ok ? POLL_MS : 2 * POLL_MS);
}

function frames() {
  if (!document.hidden) for (const card of cards.values()) refreshFrame(card);
  setTimeout(frames, FRAME_MS);
}

poll();
frames();
</script>
</body>
</html>
'''
DASHBOARD_PAGE = DASHBOARD_HTML.encode("utf-8")

if __name__ == "__main__":
    sys.exit(main())
