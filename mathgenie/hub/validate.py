"""The shape checks every request of the local hub goes through, and the caps on header and body sizes.

A request that does not fit the Hub API's shape gets a `StoreError` with a 4xx status and a message naming the field,
what it holds and what was expected; the server answers it as ``{"error": message}`` (which huggingface_hub shows in
its exception) and keeps serving. Nothing here touches the store.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math

from starlette.requests import Request

from mathgenie.hub.store import StoreError

MAX_HEADER_BYTES = 64 * 1024  # all request headers together (a Hub token is ~40 bytes)
MAX_JSON_BYTES = 32 * 1024 * 1024  # a JSON body (preupload of ~50k files with their 512-byte samples fits)
MAX_COMMIT_BYTES = 1024 * 1024 * 1024  # ndjson commit: base64 contents of regular files, each under the LFS threshold
MAX_JSON_DEPTH = 32  # the Hub API's bodies nest 4 levels; deeper is an attack on the parser or the handlers


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refused with 413 as soon as it (or its declared Content-Length) passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise StoreError(400, f"Content-Length {declared[:40]!r} is not a number")
        if int(declared) > limit:
            raise StoreError(413, f"{what} of {int(declared):,} bytes is over this hub's limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise StoreError(413, f"{what} is over this hub's limit of {limit:,} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # starlette's form() and body() read this instead of the (consumed) stream
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth(value, limit: int, max_nodes: int | None = None) -> int:
    """Nesting depth of parsed JSON/YAML, without recursion; past ``max_nodes`` nodes it counts as too deep."""
    deepest, stack, nodes = 0, [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        deepest, nodes = max(deepest, depth), nodes + 1
        if deepest > limit or (max_nodes is not None and nodes > max_nodes):
            return limit + 1
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_json(raw: bytes | str, what: str = "request body"):
    """Strict JSON: UTF-8, no NaN/Infinity, at most `MAX_JSON_DEPTH` levels deep."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise StoreError(400, f"{what} is not UTF-8 text: {e}") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise StoreError(400, f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError and the NaN/Infinity refusal
        raise StoreError(400, f"{what} is not valid JSON: {e}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise StoreError(400, f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def small_enough(value, max_depth: int = MAX_JSON_DEPTH, max_nodes: int = 100_000) -> bool:
    """Whether parsed YAML is fit to send as JSON: YAML aliases can make a few lines expand to billions of nodes."""
    return _depth(value, max_depth, max_nodes) <= max_depth


def json_object(raw: bytes, what: str = "request body") -> dict:
    """A JSON object body; an empty body is ``{}`` (the Hub accepts bodiless POSTs where every field is optional)."""
    if not raw.strip():
        return {}
    body = parse_json(raw, what)
    if not isinstance(body, dict):
        raise StoreError(400, f"{what} must be a JSON object, got {_kind(body)}")
    return body


async def json_body(request: Request, limit: int = MAX_JSON_BYTES) -> dict:
    return json_object(await read_body(request, limit))


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _wrong(where: str, key: str, expected: str, value) -> StoreError:
    shown = repr(value) if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 80 else _kind(value)
    return StoreError(400, f"{where}: '{key}' must be {expected}, got {shown}")


def get_str(obj: dict, key: str, where: str, *, required: bool = False, max_len: int = 10_000) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise _wrong(where, key, "a non-empty string" if required else "a string", value)
    if len(value) > max_len:
        raise StoreError(400, f"{where}: '{key}' is {len(value):,} characters long (at most {max_len:,})")
    return value


def get_int(obj: dict, key: str, where: str, *, required: bool = False) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _wrong(where, key, "a non-negative integer", value)
    return value


def get_bool(obj: dict, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _wrong(where, key, "true or false", value)
    return value


def get_objects(obj: dict, key: str, where: str) -> list[dict]:
    """A list of objects (absent or null: empty), each checked to be an object."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong(where, key, "a list of objects", value)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _wrong(where, f"{key}[{i}]", "an object", item)
    return value


def get_object(obj: dict, key: str, where: str) -> dict:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _wrong(where, key, "an object", value)
    return value


def header_bytes(scope) -> int:
    return sum(len(k) + len(v) for k, v in scope.get("headers") or ())


def sanitize_header(text: str, limit: int = 1000) -> str:
    """A message fit for an HTTP header: ASCII, no control characters (no header injection), bounded."""
    text = text.encode("ascii", "replace").decode()
    return "".join(c if " " <= c < "\x7f" else " " for c in text)[:limit]


def jsonable(value):
    """A parquet cell or parsed YAML as JSON: NaN/inf become null (JSON has neither), bytes base64, dates ISO 8601,
    mapping keys strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, datetime.timedelta)):
        return str(value)
    return value


def truthy(value: str | None) -> bool:
    """A query or form flag: ``1``, ``true`` or ``yes`` (any case)."""
    return (value or "").lower() in ("1", "true", "yes")
