"""A local stand-in for the OpenAI, Cohere and Voyage AI embedding HTTP APIs.

The real SDKs can be pointed at :class:`FakeEmbeddingAPI` and will parse its answers as if
they came from the real services::

    with FakeEmbeddingAPI(full_dim=1536) as api:
        client = openai.OpenAI(api_key="test", base_url=api.openai_base_url, max_retries=0)
        client.embeddings.create(model="text-embedding-3-small", input=["a"], dimensions=256)
        assert api.requests[-1].json["dimensions"] == 256

Endpoints (``POST`` only):

* ``/v1/embeddings`` and ``/embeddings``: OpenAI ``embeddings.create`` and Voyage ``embed``.
  Both SDKs use the same path; a body carrying any of Voyage's own fields (``input_type``,
  ``truncation``, ``output_dtype``, ``output_dimension``; the Voyage SDK always sends them,
  possibly as ``null``) is treated as Voyage, anything else as OpenAI.  Both get the same
  ``{"object": "list", "data": [...], "model": ..., "usage": ...}`` shape.
* ``/v2/embed``: Cohere ``ClientV2.embed`` (embeddings keyed by type); ``texts``, ``images``
  (data URIs) or ``inputs`` (``{"content": [text / image_url parts]}``).
* ``/v1/multimodalembeddings``: Voyage ``multimodal_embed`` (``inputs`` of text and
  ``image_base64`` data-URI segments).
* ``/v1/embeddings`` with a Jina field (``task``, ``normalized``, ``embedding_type``): Jina's
  API, whose ``input`` holds strings, ``{"text": ...}`` and ``{"image": base64}`` items.

An image is embedded as :func:`image_key` of its base64 data (with or without the data-URI
prefix), so one image has one vector on every endpoint.
* ``/v1/embed``: Cohere ``Client.embed`` (v1; a bare float list unless ``embedding_types``).

Embeddings are deterministic (see :meth:`FakeEmbeddingAPI.vector_for`) and behave like a
Matryoshka model: asking for fewer dimensions returns the renormalised prefix of the full
vector.  Every value is exactly representable as float32, so the JSON float and the base64
float32 wire formats decode to identical Python floats.

Scripted misbehaviour is queued with :meth:`FakeEmbeddingAPI.queue` and consumed in FIFO
order, one item per request to any embedding endpoint, before normal service resumes:
:class:`Fault`, :class:`Malformed`, :class:`WrongLength`, :class:`WrongCount`,
:class:`NonFinite`, :class:`Shuffle`, :class:`Delay` and :class:`Disconnect`.

Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import random
import struct
import sys
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "Delay",
    "Disconnect",
    "Dtype",
    "Fault",
    "FakeEmbeddingAPI",
    "Malformed",
    "NonFinite",
    "Provider",
    "RecordedRequest",
    "Script",
    "Shuffle",
    "WrongCount",
    "WrongLength",
]

Provider = Literal["openai", "voyage", "voyage-multimodal", "jina", "cohere-v1", "cohere-v2"]
"""Which wire format a request was served with."""

Dtype = Literal["float", "int8", "uint8", "binary", "ubinary"]
"""Voyage ``output_dtype`` values; Cohere's ``embedding_types`` are these plus ``base64``."""

_OPENAI_PATHS = frozenset({"/v1/embeddings", "/embeddings"})
_VOYAGE_ONLY_FIELDS = frozenset({"input_type", "truncation", "output_dtype", "output_dimension"})
_JINA_ONLY_FIELDS = frozenset({"task", "normalized", "embedding_type", "late_chunking"})
_MULTIMODAL_PATHS = frozenset({"/v1/multimodalembeddings", "/multimodalembeddings"})
_DTYPES: frozenset[str] = frozenset({"float", "int8", "uint8", "binary", "ubinary"})
_COHERE_TYPES: frozenset[str] = _DTYPES | {"base64"}
# struct format characters for packing each dtype into base64.
_STRUCT_CODE: dict[str, str] = {
    "float": "f",
    "int8": "b",
    "uint8": "B",
    "binary": "b",
    "ubinary": "B",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``headers`` has lower-cased names.  ``json`` is the parsed body, or ``None`` when the body
    was not JSON.  ``provider`` is the wire format it was routed to (``None`` for an unknown
    path, which is answered 404).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    provider: Provider | None


# --------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class Fault:
    """Answer with an HTTP error ``status`` instead of embeddings.

    ``headers`` are added to the response (e.g. ``{"Retry-After": "0.2"}``).  ``body`` is sent
    as JSON when it is a dict or list, verbatim as ``text/plain`` when it is ``str`` or
    ``bytes``; the default (``None``) is a JSON error that every SDK recognises:
    ``{"error": {"message", "type", "code", "param"}, "message": ..., "detail": ...}``
    (OpenAI reads ``error``, Voyage needs ``detail`` to pick its exception class).
    """

    status: int = 500
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Malformed:
    """Answer 200 with a body that is not a usable embeddings payload.

    With ``valid_json=True`` (default) the body is well-formed JSON of the provider's shape with
    the embeddings left out (no ``data`` for OpenAI/Voyage, no ``embeddings`` for Cohere).
    With ``valid_json=False`` it is the first half of a normal answer: truncated JSON, still
    labelled ``application/json``.
    """

    valid_json: bool = True


@dataclass(frozen=True)
class WrongLength:
    """Answer 200 with every vector ``delta`` elements longer (negative: shorter).

    The default drops the last element of each vector.  For integer dtypes the packed values
    are resized (e.g. one byte fewer for ``binary``); extra elements are zeros.
    """

    delta: int = -1


@dataclass(frozen=True)
class WrongCount:
    """Answer 200 with ``delta`` more vectors than texts (negative: fewer, dropped from the end).

    Extra vectors repeat the last one.
    """

    delta: int = -1


@dataclass(frozen=True)
class NonFinite:
    """Answer 200 with ``value`` (NaN by default, or ``math.inf``) at ``vectors[row][col]``.

    JSON float output carries it as Python's non-standard ``NaN`` / ``Infinity`` literal, which
    every SDK here parses with :func:`json.loads`; base64 float32 output carries the IEEE bit
    pattern, which is what a broken upstream would realistically send.  Integer dtypes cannot
    hold it and are answered normally.  ``row``/``col`` index modulo the sizes.
    """

    value: float = math.nan
    row: int = 0
    col: int = 0


@dataclass(frozen=True)
class Shuffle:
    """Answer 200 with the items of an OpenAI / Voyage answer in another order.

    ``order`` lists positions of the normal answer (default: reversed); each item keeps its own
    correct ``index``, as a real server may answer out of order.  ``indexes``, when given,
    relabels the items (in the new order) to make gaps or duplicates.  Cohere answers carry no
    per-item index and are sent as usual.
    """

    order: tuple[int, ...] | None = None
    indexes: tuple[int, ...] | None = None

    def apply(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        order = self.order if self.order is not None else range(len(items) - 1, -1, -1)
        moved = [dict(items[i]) for i in order]
        for item, index in zip(moved, self.indexes or (), strict=False):
            item["index"] = index
        return moved


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` and then answer normally; use it to trip client timeouts.

    The wait ends early when the server stops.
    """

    seconds: float


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without sending any response (a dropped connection)."""


Script = Fault | Malformed | WrongLength | WrongCount | NonFinite | Shuffle | Delay | Disconnect
"""Anything :meth:`FakeEmbeddingAPI.queue` accepts."""


# --------------------------------------------------------------------------- helpers


class _BadRequest(Exception):
    """The request is invalid for the endpoint; answered 400."""


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class _Job:
    """What a valid embeddings request asks for."""

    texts: list[str]
    model: str
    dim: int
    kinds: list[str]
    base64: bool = False
    by_type: bool = True


def _as_float32(values: Sequence[float]) -> list[float]:
    """Round ``values`` to the nearest float32 (returned as Python floats)."""
    fmt = f"<{len(values)}f"
    return list(struct.unpack(fmt, struct.pack(fmt, *values)))


def _normalised(values: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(v * v for v in values))
    return _as_float32([v / norm for v in values])


def _pack_base64(values: Sequence[float], dtype: str) -> str:
    data = struct.pack(f"<{len(values)}{_STRUCT_CODE[dtype]}", *values)
    return base64.b64encode(data).decode("ascii")


def _tokens(texts: Sequence[str]) -> int:
    return sum(max(1, len(t.split())) for t in texts)


def _json_bytes(payload: Any) -> bytes:
    # allow_nan=True (the default) is deliberate: NonFinite relies on NaN/Infinity literals.
    return json.dumps(payload).encode("utf-8")


def _error_payload(status: int, message: str) -> dict[str, Any]:
    kind = (
        "rate_limit_exceeded"
        if status == 429
        else "server_error"
        if status >= 500
        else "invalid_request_error"
    )
    return {
        "error": {"message": message, "type": kind, "code": None, "param": None},
        "message": message,
        "detail": message,
    }


def _error_reply(status: int, message: str) -> _Reply:
    return _Reply(status, _json_bytes(_error_payload(status, message)))


def _route(path: str, payload: Any) -> Provider | None:
    if path in _OPENAI_PATHS:
        if isinstance(payload, dict) and _JINA_ONLY_FIELDS & payload.keys():
            return "jina"
        if isinstance(payload, dict) and _VOYAGE_ONLY_FIELDS & payload.keys():
            return "voyage"
        return "openai"
    if path in _MULTIMODAL_PATHS:
        return "voyage-multimodal"
    if path == "/v2/embed":
        return "cohere-v2"
    if path == "/v1/embed":
        return "cohere-v1"
    return None


# --------------------------------------------------------------------------- server


class FakeEmbeddingAPI:
    """Threaded local HTTP server speaking the OpenAI, Cohere and Voyage embedding APIs.

    ``full_dim`` is the model's native dimension (requests may ask for ``1..full_dim``);
    ``seed`` changes every vector.  Use :meth:`start`/:meth:`stop` or ``with``.  All public
    methods are thread-safe.
    """

    def __init__(self, full_dim: int = 1536, *, seed: int = 0) -> None:
        if full_dim < 1:
            raise ValueError("full_dim must be positive")
        self.full_dim = full_dim
        self.seed = seed
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: deque[Script] = deque()
        self._cache: dict[str, list[float]] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FakeEmbeddingAPI:
        """Bind an ephemeral port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeEmbeddingAPI is already running")
        self._stopping.clear()
        server = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeEmbeddingAPI:{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        self._port = int(server.server_address[1])
        return self

    def stop(self) -> None:
        """Stop serving and close the port; pending :class:`Delay` waits end at once."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeEmbeddingAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        """The bound port.  After :meth:`stop` it still names the (now closed) port, so the
        URLs below can be used to provoke connection-refused errors."""
        if self._port is None:
            raise RuntimeError("FakeEmbeddingAPI has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` with no path."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For ``openai.OpenAI(base_url=...)``; the SDK appends ``/embeddings``."""
        return f"{self.base_url}/v1"

    @property
    def voyage_base_url(self) -> str:
        """For ``voyageai.Client(base_url=...)``; the SDK appends ``/embeddings``."""
        return f"{self.base_url}/v1"

    @property
    def cohere_base_url(self) -> str:
        """For ``cohere.ClientV2`` / ``cohere.Client`` ``base_url``; the SDK adds ``/v2/embed``."""
        return self.base_url

    # ----------------------------------------------------------------- scripting and records

    def queue(self, *items: Script) -> None:
        """Append scripted behaviours, consumed one per embeddings request in FIFO order."""
        for item in items:
            if not isinstance(item, Script):
                raise TypeError(f"not a scripted behaviour: {item!r}")
        with self._lock:
            self._scripts.extend(items)

    @property
    def pending(self) -> int:
        """How many queued behaviours have not been consumed yet."""
        with self._lock:
            return len(self._scripts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and drop queued behaviours."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()

    # ----------------------------------------------------------------- embeddings

    def vector_for(self, text: str, dim: int | None = None) -> list[float]:
        """The embedding the server returns for ``text`` at ``dim`` dimensions.

        A Gaussian vector of ``full_dim`` values seeded by SHA-256 of ``seed`` and ``text``,
        L2-normalised; for ``dim < full_dim`` the first ``dim`` values renormalised.  Values are
        float32-exact.
        """
        dim = self.full_dim if dim is None else dim
        if not 1 <= dim <= self.full_dim:
            raise ValueError(f"dim must be in 1..{self.full_dim}, got {dim}")
        full = self._cache.get(text)
        if full is None:
            digest = hashlib.sha256(f"{self.seed}\0{text}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            full = _normalised([rng.gauss(0.0, 1.0) for _ in range(self.full_dim)])
            self._cache[text] = full
        return list(full) if dim == self.full_dim else _normalised(full[:dim])

    def quantized_for(self, text: str, dim: int | None = None, dtype: Dtype = "int8") -> list[int]:
        """The integer embedding returned for Voyage ``output_dtype`` / Cohere embedding types.

        ``int8``: ``round(127 * v / max|v|)``; ``uint8``: that plus 128; ``ubinary``: the sign
        bits (``v > 0``) packed MSB-first into bytes, zero-padded to a whole byte; ``binary``:
        ``ubinary - 128``.  ``dtype="float"`` is rejected: use :meth:`vector_for`.
        """
        vector = self.vector_for(text, dim)
        if dtype in ("int8", "uint8"):
            scale = max(abs(v) for v in vector)
            ints = [max(-128, min(127, round(127 * v / scale))) for v in vector]
            return ints if dtype == "int8" else [i + 128 for i in ints]
        if dtype in ("binary", "ubinary"):
            bits = [1 if v > 0 else 0 for v in vector]
            bits += [0] * (-len(bits) % 8)
            packed = [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8)]
            return packed if dtype == "ubinary" else [b - 128 for b in packed]
        raise ValueError(f"not an integer dtype: {dtype!r}")

    def _values(self, text: str, dim: int, dtype: str) -> list[float] | list[int]:
        if dtype == "float":
            return self.vector_for(text, dim)
        return self.quantized_for(text, dim, dtype)

    # ----------------------------------------------------------------- request handling

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_script(self) -> Script | None:
        with self._lock:
            return self._scripts.popleft() if self._scripts else None

    def _serve(self, provider: Provider, payload: Any) -> _Reply | None:
        """Build the answer to one embeddings request; ``None`` means drop the connection."""
        script = self._next_script()
        if isinstance(script, Disconnect):
            return None
        if isinstance(script, Delay):
            self._stopping.wait(script.seconds)
        if isinstance(script, Fault):
            return self._fault_reply(script)
        try:
            job = _parse_job(provider, payload, self.full_dim)
        except _BadRequest as exc:
            return _error_reply(400, str(exc))
        vectors = {kind: self._rows(job, kind, script) for kind in job.kinds}
        payload_out = self._body(provider, job, vectors)
        if isinstance(script, Shuffle) and "data" in payload_out:
            payload_out["data"] = script.apply(payload_out["data"])
        if isinstance(script, Malformed):
            if script.valid_json:
                payload_out.pop("embeddings" if provider.startswith("cohere") else "data")
            else:
                body = _json_bytes(payload_out)
                return _Reply(200, body[: len(body) // 2])
        return _Reply(200, _json_bytes(payload_out))

    def _fault_reply(self, fault: Fault) -> _Reply:
        body = fault.body
        if body is None:
            reply = _error_reply(fault.status, f"fake error {fault.status}")
        elif isinstance(body, bytes | str):
            raw = body.encode("utf-8") if isinstance(body, str) else body
            reply = _Reply(fault.status, raw, content_type="text/plain; charset=utf-8")
        else:
            reply = _Reply(fault.status, _json_bytes(body))
        for name, value in fault.headers.items():
            if name.lower() == "content-type":
                reply.content_type = value
            else:
                reply.headers[name] = value
        return reply

    def _rows(self, job: _Job, kind: str, script: Script | None) -> list[list[Any]]:
        """The vectors for one output kind, with any data fault applied (before encoding)."""
        dtype = "float" if kind == "base64" else kind
        rows: list[list[Any]] = [list(self._values(t, job.dim, dtype)) for t in job.texts]
        if isinstance(script, WrongLength):
            d = script.delta
            rows = [row[: len(row) + d] if d < 0 else row + [0] * d for row in rows]
        elif isinstance(script, NonFinite) and dtype == "float" and rows:
            row = rows[script.row % len(rows)]
            if row:
                row[script.col % len(row)] = script.value
        elif isinstance(script, WrongCount):
            d = script.delta
            rows = rows[: max(0, len(rows) + d)] if d < 0 else rows + [rows[-1]] * d
        return rows

    def _body(
        self, provider: Provider, job: _Job, vectors: dict[str, list[list[Any]]]
    ) -> dict[str, Any]:
        tokens = _tokens(job.texts)
        response_id = f"fake-{next(self._ids)}"
        if provider in ("openai", "voyage", "voyage-multimodal", "jina"):
            (kind,) = job.kinds
            rows = vectors[kind]
            items = [
                {
                    "object": "embedding",
                    "embedding": _pack_base64(row, kind) if job.base64 else row,
                    "index": i,
                }
                for i, row in enumerate(rows)
            ]
            return {
                "object": "list",
                "data": items,
                "model": job.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        meta = {
            "api_version": {"version": "2" if provider == "cohere-v2" else "1"},
            "billed_units": {"input_tokens": tokens},
        }
        if not job.by_type:
            # v1 without embedding_types: a bare list of float vectors.
            embeddings: Any = vectors["float"]
            response_type = "embeddings_floats"
        else:
            embeddings = {
                kind: [_pack_base64(r, "float") for r in rows] if kind == "base64" else rows
                for kind, rows in vectors.items()
            }
            response_type = "embeddings_by_type"
        return {
            "id": response_id,
            "response_type": response_type,
            "embeddings": embeddings,
            "texts": job.texts,
            "meta": meta,
        }


def _parse_dim(value: Any, full_dim: int, name: str) -> int:
    if value is None:
        return full_dim
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= full_dim:
        raise _BadRequest(f"{name} must be an integer in 1..{full_dim}, got {value!r}")
    return value


def _parse_texts(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _BadRequest(f"{name} must be a non-empty string or list")
    texts: list[str] = []
    for item in value:
        if isinstance(item, str):
            if not item:
                raise _BadRequest(f"{name} must not contain empty strings")
            texts.append(item)
        elif isinstance(item, int | list):
            # OpenAI token arrays: embed their JSON text form.
            texts.append(json.dumps(item))
        else:
            raise _BadRequest(f"{name} items must be strings")
    return texts


def image_key(data: str) -> str:
    """The text a base64 image is embedded as (the same with or without a data-URI prefix), so
    one image gets one vector whatever the provider's wire form."""
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.startswith("data:image/") or not header.endswith(";base64"):
            raise _BadRequest(f"not a base64 image data URI: {header[:40]!r}")
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise _BadRequest("image data is not valid base64") from None
    return f"image:{hashlib.sha256(data.encode()).hexdigest()}"


def _segment_key(segment: Any, provider: Provider) -> str:
    """One part of a Cohere ``inputs`` item or a Voyage multimodal ``content`` list."""
    kind = segment.get("type") if isinstance(segment, dict) else None
    if kind == "text" and isinstance(segment.get("text"), str) and segment["text"]:
        return str(segment["text"])
    if provider == "cohere-v2" and kind == "image_url":
        url = segment.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        if isinstance(url, str) and url.startswith("data:"):
            return image_key(url)
    if provider == "voyage-multimodal" and kind == "image_base64":
        data = segment.get("image_base64")
        if isinstance(data, str) and data.startswith("data:"):
            return image_key(data)
    raise _BadRequest(f"unsupported content segment: {json.dumps(segment)[:80]}")


def _parse_inputs(value: Any, provider: Provider) -> list[str]:
    """The keys of ``inputs`` (Cohere v2 and Voyage multimodal): each ``{"content": [...]}``."""
    if not isinstance(value, list) or not value:
        raise _BadRequest("inputs must be a non-empty list")
    keys = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if not isinstance(content, list) or not content:
            raise _BadRequest("each input needs a non-empty content list")
        keys.append("\n".join(_segment_key(segment, provider) for segment in content))
    return keys


def _parse_jina_input(value: Any) -> list[str]:
    """Jina's ``input``: strings, ``{"text": ...}`` or ``{"image": base64}`` objects."""
    if not isinstance(value, list) or not value:
        raise _BadRequest("input must be a non-empty list")
    keys = []
    for item in value:
        if isinstance(item, str) and item:
            keys.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"]:
            keys.append(item["text"])
        elif isinstance(item, dict) and isinstance(item.get("image"), str):
            keys.append(image_key(item["image"]))
        else:
            raise _BadRequest(f"input items must be texts or images, got {json.dumps(item)[:60]}")
    return keys


def _parse_jina(payload: dict[str, Any], model: str, full_dim: int) -> _Job:
    if payload.get("task") not in (None, "retrieval.query", "retrieval.passage", "text-matching"):
        raise _BadRequest(f"unknown task {payload.get('task')!r}")
    if payload.get("embedding_type", "float") != "float":
        raise _BadRequest("this fake serves embedding_type 'float' only")
    dim = _parse_dim(payload.get("dimensions"), full_dim, "dimensions")
    return _Job(_parse_jina_input(payload.get("input")), model, dim, ["float"])


def _parse_multimodal(payload: dict[str, Any], model: str, full_dim: int) -> _Job:
    keys = _parse_inputs(payload.get("inputs"), "voyage-multimodal")
    dim = _parse_dim(payload.get("output_dimension"), full_dim, "output_dimension")
    dtype = payload.get("output_dtype") or "float"
    if dtype not in _DTYPES:
        raise _BadRequest(f"output_dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _Job(keys, model, dim, [dtype])


def _cohere_texts(payload: dict[str, Any]) -> list[str] | None:
    """The keys of a Cohere v2 ``images`` or ``inputs`` request (``None`` for ``texts``)."""
    given = [key for key in ("texts", "images", "inputs") if payload.get(key) is not None]
    if len(given) != 1:
        raise _BadRequest(f"give exactly one of texts, images and inputs, got {given}")
    if given == ["inputs"]:
        return _parse_inputs(payload["inputs"], "cohere-v2")
    if given == ["images"]:
        return [image_key(uri) for uri in _parse_texts(payload["images"], "images")]
    return None


def _parse_openai_voyage(
    provider: Provider, payload: dict[str, Any], model: str, full_dim: int
) -> _Job:
    raw_input = payload.get("input")
    if (
        provider == "openai"
        and isinstance(raw_input, list)
        and raw_input
        and all(isinstance(t, int) for t in raw_input)
    ):
        raw_input = [raw_input]  # a single token array
    texts = _parse_texts(raw_input, "input")
    encoding = payload.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise _BadRequest(f"encoding_format must be 'float' or 'base64', got {encoding!r}")
    if provider == "openai":
        dim = _parse_dim(payload.get("dimensions"), full_dim, "dimensions")
        dtype = "float"
    else:
        dim = _parse_dim(payload.get("output_dimension"), full_dim, "output_dimension")
        dtype = payload.get("output_dtype") or "float"
        if dtype not in _DTYPES:
            raise _BadRequest(f"output_dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _Job(texts, model, dim, [dtype], base64=encoding == "base64")


def _parse_job(provider: Provider, payload: Any, full_dim: int) -> _Job:
    """Validate an embeddings request body and extract what it asks for."""
    if not isinstance(payload, dict):
        raise _BadRequest("request body must be a JSON object")
    model = payload.get("model")
    if provider in ("openai", "cohere-v2", "jina", "voyage-multimodal") and not isinstance(
        model, str
    ):
        raise _BadRequest("model is required")
    model = model if isinstance(model, str) else "fake-model"
    if provider == "jina":
        return _parse_jina(payload, model, full_dim)
    if provider == "voyage-multimodal":
        return _parse_multimodal(payload, model, full_dim)

    if provider in ("openai", "voyage"):
        return _parse_openai_voyage(provider, payload, model, full_dim)
    texts = _cohere_texts(payload) if provider == "cohere-v2" else None
    texts = texts or _parse_texts(payload.get("texts"), "texts")
    if provider == "cohere-v2" and not isinstance(payload.get("input_type"), str):
        raise _BadRequest("input_type is required")
    if provider == "cohere-v2":
        dim = _parse_dim(payload.get("output_dimension"), full_dim, "output_dimension")
    else:
        dim = full_dim
    kinds = payload.get("embedding_types")
    if kinds is None:
        # v1 without embedding_types answers a bare float list; v2 defaults to by-type floats.
        return _Job(texts, model, dim, ["float"], by_type=provider == "cohere-v2")
    if (
        not isinstance(kinds, list)
        or not kinds
        or not all(isinstance(k, str) and k in _COHERE_TYPES for k in kinds)
    ):
        raise _BadRequest(f"embedding_types must be a list drawn from {sorted(_COHERE_TYPES)}")
    return _Job(texts, model, dim, list(dict.fromkeys(kinds)))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: FakeEmbeddingAPI
    ) -> None:
        self.api = api
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up leave broken sockets behind; that is expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        path = urlsplit(self.path).path
        provider = _route(path, payload)
        api = self.server.api
        api._record(
            RecordedRequest(
                method="POST",
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                json=payload,
                provider=provider,
            )
        )
        if provider is None:
            self._send(_error_reply(404, f"no such endpoint: POST {path}"))
            return
        reply = api._serve(provider, payload)
        if reply is None:
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("x-request-id", f"req_fake_{next(self.server.api._ids)}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. timed out during a Delay)

    def log_message(self, format: str, *args: Any) -> None:
        pass
