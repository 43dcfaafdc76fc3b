"""Where a stage finds its services when it is given none, and how an address is shown without its password.

The harness passes every stage the DSN/URL it resolved (``harness.services``); these defaults serve a stage started
on its own. Defined here, in the system under test, so that the harness imports them and never the reverse.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

LOCAL_HOST = "127.0.0.1"
LOCAL_PG_PORT = 5432
LOCAL_REDIS_PORT = 6379
HARNESS_DATABASE = "telemetry_bench"  # the database the harness creates and a stage started alone writes to
LOCAL_PG_DSN = f"postgresql://postgres@{LOCAL_HOST}:{LOCAL_PG_PORT}/{HARNESS_DATABASE}"
LOCAL_REDIS_URL = f"redis://{LOCAL_HOST}:{LOCAL_REDIS_PORT}/0"
LOCAL_NATS_PORT = 4222
LOCAL_AMQP_PORT = 5672
LOCAL_NATS_URL = f"nats://{LOCAL_HOST}:{LOCAL_NATS_PORT}"
LOCAL_AMQP_URL = f"amqp://guest:guest@{LOCAL_HOST}:{LOCAL_AMQP_PORT}/"

_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/]*)(?P<rest>.*)$", re.DOTALL)
_QUERY_PASSWORD_RE = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
_KV_PASSWORD_RE = re.compile(r"(?i)(?<![\w.])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)")


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every password replaced by ``***``.

    Handles PostgreSQL URLs (``postgresql://user:pw@host/db``, ``?password=pw``), PostgreSQL key=value strings
    (``host=h password=pw``, quoted values too) and Redis URLs (``redis://:pw@host``, ``rediss://``,
    ``unix://user:pw@/path``, ``?password=pw``). Anything else is returned unchanged.
    """
    m = _URL_RE.match(dsn)
    if m is None:
        return _KV_PASSWORD_RE.sub(r"\1***", dsn)
    authority = m["authority"]
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{hostport}"
    return m["scheme"] + authority + _QUERY_PASSWORD_RE.sub(r"\1***", m["rest"])


def passwords_in(dsn: str) -> list[str]:
    """The passwords written in ``dsn`` (raw and decoded), to scrub them from error messages."""
    found: list[str] = []
    m = _URL_RE.match(dsn)
    if m is not None:
        userinfo, at, _ = m["authority"].rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += re.findall(r"(?i)[?&](?:ssl)?password=([^&#]*)", m["rest"])
    else:
        for _, value in _KV_PASSWORD_RE.findall(dsn):
            if value.startswith("'"):
                value = re.sub(r"\\(.)", r"\1", value.strip("'"))
            found.append(value)
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p}, key=len, reverse=True)
