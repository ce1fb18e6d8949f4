"""What keeps the server safe by default.

Paths: every path from a request is checked against the roots (the workspace and the allowed
folders of settings.toml) before anything is read or written. `..`, backslashes, drive letters,
NUL bytes and percent-escapes left after URL decoding are refused outright; what remains is
resolved (following links) and must still lie inside its root, so a link pointing outside is
refused too.

Access: `Guard` is an ASGI middleware in front of every route — pages, API, files, event
streams, /docs and /openapi.json. With a token, a request needs `Authorization: Bearer TOKEN`
or the session cookie that /login sets (HttpOnly, SameSite=Strict; it holds an HMAC of the
token, not the token). Without a token (only allowed on a loopback address) the Host header must
name a loopback address, which defeats DNS rebinding. State-changing requests that do not carry
the Bearer header (browsers with the cookie, scripts on loopback) are refused when their Origin
(or Sec-Fetch-Site) says they come from another site.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .errors import Refused

COOKIE = "lorakit_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
OPEN_PATHS = {"/login"}  # the login page itself
_DRIVE = re.compile(r"^[A-Za-z]:")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


# -- paths ------------------------------------------------------------------------------------


def _refuse(value: str, why: str) -> Refused:
    shown = value if len(value) <= 200 else value[:200] + "..."
    return Refused(f"path {shown!r} refused: {why}. Use a path inside the workspace or an allowed folder.")


def _check_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused("an empty path was given; name a file or folder inside the workspace.")
    if len(value) > 4096:
        raise _refuse(value, "it is longer than 4096 characters")
    if "\x00" in value:
        raise _refuse(value, "it contains a NUL byte")
    if "\ufffd" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise _refuse(value, "it is not valid UTF-8 (an over-long or broken %-escape?)")
    if "\\" in value:
        raise _refuse(value, "backslashes are not path separators here (write a/b, not a\\b)")
    if _DRIVE.match(value):
        raise _refuse(value, "drive letters are not paths on this server")
    if unquote(value) != value:
        raise _refuse(value, "it still holds %-escapes after URL decoding (encoded twice?)")
    return value


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _parts(value: str) -> list[str]:
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(value, "'..' is not allowed")
    return parts


def resolve_location(location: str, roots: dict[str, Path]) -> Path:
    """A request's location (`rel/path` in the workspace, `@NAME/rel/path` in an allowed folder)
    as a real path inside its root. Absolute paths are refused."""
    value = _check_text(location)
    if value.startswith(("/", "~")):
        raise _refuse(value, "absolute paths are not accepted; give the path relative to the workspace")
    prefix = ""
    if value.startswith("@"):
        prefix, _, value = value.partition("/")
        if prefix not in roots:
            known = ", ".join(k for k in roots if k) or "none are set in settings.toml"
            raise _refuse(location, f"{prefix} is not an allowed folder (allowed: {known})")
    return _within(roots[prefix], _parts(value), location)


def _within(root: Path, parts: list[str], shown: str) -> Path:
    root = root.resolve()
    try:
        path = root.joinpath(*parts).resolve()
    except (OSError, ValueError, RuntimeError) as e:  # a link loop, a name the OS rejects
        raise _refuse(shown, f"it cannot be resolved ({e})") from e
    if not _inside(path, root):
        raise _refuse(shown, "it leads outside its folder (through a link)")
    return path


def resolve_user_path(value: str, roots: dict[str, Path]) -> Path:
    """A path inside a config or a job's arguments: relative (to the workspace), `@NAME/...`, or
    absolute, and then inside one of the roots (configs from sd-scripts use absolute paths)."""
    text = _check_text(value)
    if not text.startswith("/"):
        return resolve_location(text, roots)
    _parts(text)
    try:
        path = Path(text).resolve()
    except (OSError, ValueError, RuntimeError) as e:
        raise _refuse(text, f"it cannot be resolved ({e})") from e
    if any(_inside(path, root.resolve()) for root in roots.values()):
        return path
    raise _refuse(text, "it is outside the workspace and the allowed folders of settings.toml")


def location_of(path: Path, roots: dict[str, Path]) -> str | None:
    """The location a request would use for `path` (None when it is outside every root)."""
    path = Path(path).resolve()
    for prefix, root in sorted(roots.items(), key=lambda item: -len(str(item[1]))):
        root = root.resolve()
        if _inside(path, root):
            rel = path.relative_to(root).as_posix()
            rel = "" if rel == "." else rel
            return f"{prefix}/{rel}".strip("/") if prefix else rel
    return None


# -- access -----------------------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"lorakit-ui-session", hashlib.sha256).hexdigest()


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    """ASGI middleware: token (or loopback Host), then the cross-site check for changes."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token
        self.cookie = session_value(token) if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = self.check(scope, headers)
        if problem is None:
            return await self.app(scope, receive, send)
        status, message, login = problem
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _answer(
            send, status, message, login and scope.get("method") == "GET" and _wants_html(headers), scope
        )

    def check(self, scope, headers: dict[str, str]) -> tuple[int, str, bool] | None:
        """None when the request may go on, else (status, message, offer the login page)."""
        path = scope.get("path", "")
        bearer = False
        if self.token is None:
            if not is_loopback(_host_name(headers.get("host", ""))):
                return 403, "this server answers only to localhost addresses (Host header refused)", False
        elif path not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            bearer = auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token)
            if not bearer and not hmac.compare_digest(_cookie(headers, COOKIE), self.cookie):
                return (
                    401,
                    "a token is needed: send 'Authorization: Bearer TOKEN' or log in at /login "
                    "(the token is printed when lorakit ui starts)",
                    True,
                )
        if scope.get("method", "GET") not in SAFE_METHODS and not bearer:
            cross = cross_site(headers, scope)
            if cross:
                return 403, f"cross-site request refused ({cross})", False
        return None


def cross_site(headers: dict[str, str], scope) -> str | None:
    """Why a browser request comes from another site, or None (same origin, or not a browser)."""
    host = headers.get("host", "")
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc != host or parts.scheme not in ("http", "https"):
            return f"Origin {origin} is not this server ({host})"
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site}"
    referer = headers.get("referer")
    if referer and urlsplit(referer).netloc != host:
        return f"Referer {referer} is not this server"
    return None


def _cookie(headers: dict[str, str], name: str) -> str:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _wants_html(headers: dict[str, str]) -> bool:
    return "text/html" in headers.get("accept", "")


async def _answer(send, status: int, message: str, to_login: bool, scope) -> None:
    if to_login:
        target = scope.get("path", "/") + (
            "?" + scope["query_string"].decode() if scope.get("query_string") else ""
        )
        await _send(send, 303, b"", [(b"location", ("/login?next=" + quote(target, safe="")).encode())])
        return
    body = json.dumps({"detail": message}).encode()
    await _send(send, status, body, [(b"content-type", b"application/json")])


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


# -- the login page ----------------------------------------------------------------------------


def safe_next(value: str | None) -> str:
    """Only paths on this server (no //host or scheme: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


LOGIN_WORDS = {
    "en": {
        "title": "log in",
        "intro": "Enter the token that <code>lorakit ui</code> printed when it started.",
        "button": "Log in",
        "wrong": "wrong token",
    },
    "zh-CN": {
        "title": "登录",
        "intro": "请输入 <code>lorakit ui</code> 启动时打印出来的 token。",
        "button": "登录",
        "wrong": "token 不对",
    },
}


def login_language(accept_language: str | None) -> str:
    """The login page in Chinese when the browser asks for Chinese first (as the pages do)."""
    first = (accept_language or "").split(",")[0].strip().lower()
    return "zh-CN" if first.startswith("zh") else "en"


def login_page(next_url: str, wrong: bool = False, language: str = "en") -> str:
    words = LOGIN_WORDS[language]
    note = f'<p class="error">{html.escape(words["wrong"])}</p>' if wrong else ""
    return f"""<!doctype html>
<html lang="{language}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>lorakit — {words["title"]}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}} .error{{color:#b00020}}</style>
</head><body><h1>lorakit</h1>
<p>{words["intro"]}</p>{note}
<form method="post" action="/login">
<label for="token">Token</label><input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<input type="hidden" name="next" value="{html.escape(next_url)}">
<p><button type="submit">{words["button"]}</button></p></form></body></html>"""


def form_fields(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def environment_token() -> str | None:
    """LORAKIT_UI_TOKEN, so a token need not appear in the process list."""
    return os.environ.get("LORAKIT_UI_TOKEN") or None
