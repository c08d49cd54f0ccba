"""The app's own HTTP routes, beside Streamlit's: the session cookie, and the map's files served by the app.

`streamlit run app.py` serves app.py's `app` (an `st.App`, Streamlit's ASGI server) with these routes and this
middleware:
- `GET /terraseg/session?code=...&next=...`: trades a sign-in's one-time code (core.sessions) for the session
  cookie (HttpOnly, SameSite=Lax, Secure over HTTPS, Max-Age the session's lifetime) and sends the browser on to
  `next`, a path of this app (anything else goes to the app's start page).
- `/terraseg/assets/...`: Leaflet, Leaflet.draw, the offline basemap and the map's own scripts (map_assets/, each
  with its licence), so the maps work on a machine with no outside network.
- On every page load (an HTML response), a valid session cookie is signed again with a fresh Max-Age (the session
  slides), and one that no longer opens a session (signed out, expired, a changed key) is deleted.
"""

from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings, get_settings
from core.sessions import COOKIE_NAME, CookieSigner, SessionStore, session_key

MAP_ASSETS_DIR = Path(__file__).resolve().parent / "map_assets"
ASSETS_PATH = "/terraseg/assets"
SESSION_PATH = "/terraseg/session"


def session_store(settings: Settings) -> SessionStore:
    return SessionStore(settings.cache_dir / "admin", settings.app_session_hours * 3600)


def cookie_signer(settings: Settings) -> CookieSigner:
    configured = settings.app_session_key.get_secret_value() if settings.app_session_key else None
    return CookieSigner(session_key(settings.cache_dir / "admin", configured))


def session_token(settings: Settings, cookie: str | None) -> str | None:
    """The session token in a cookie's value, if the cookie is this app's and signed within the lifetime."""
    if not cookie:
        return None
    return cookie_signer(settings).token(cookie, settings.app_session_hours * 3600)


def local_path(target: str | None) -> str:
    """`target` if it is a path of this site ("/results?job=..."), else "/": the route sends browsers only
    within the app (no open redirect to another host, not even with "//host" or "/\\host")."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def is_https(scope: Scope, settings: Settings) -> bool:
    """Whether the browser reached the app over HTTPS: directly, or through the configured reverse proxies
    (their X-Forwarded-Proto; a header nobody in front of the app vouches for is ignored)."""
    if scope.get("scheme") == "https":
        return True
    if settings.app_proxy_hops:
        headers = dict(scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")
        return forwarded[-settings.app_proxy_hops :][0].strip().lower() == "https" if forwarded else False
    return False


def cookie_header(settings: Settings, value: str, secure: bool) -> str:
    """A Set-Cookie value for the session cookie (`value` ""; an expired one that deletes it)."""
    max_age = int(settings.app_session_hours * 3600) if value else 0
    attributes = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


async def start_session(request: Request) -> Response:
    """The sign-in's last step: the one-time code for the cookie, then on to the page the user was on."""
    settings = get_settings()
    response = RedirectResponse(local_path(request.query_params.get("next")), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    token = session_store(settings).redeem(request.query_params.get("code", ""))
    if token is not None:
        secure = is_https(request.scope, settings)
        response.headers.append(
            "Set-Cookie", cookie_header(settings, cookie_signer(settings).sign(token), secure)
        )
    return response


class SessionCookieMiddleware:
    """On each page load (an HTML response to a GET), re-sign a valid session cookie with a fresh Max-Age, or
    delete one that opens no session. Other requests (the WebSocket, files, uploads) pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET":
            await self.app(scope, receive, send)
            return
        cookie = Request(scope).cookies.get(COOKIE_NAME)
        if not cookie:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if headers.get("content-type", "").startswith("text/html") and "set-cookie" not in headers:
                    headers.append("Set-Cookie", self.renewed(scope, cookie))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def renewed(scope: Scope, cookie: str) -> str:
        settings = get_settings()
        token = session_token(settings, cookie)
        alive = token is not None and session_store(settings).account_name(token) is not None
        value = cookie_signer(settings).sign(token) if alive and token else ""
        return cookie_header(settings, value, is_https(scope, settings))


ROUTES = [
    Route(SESSION_PATH, start_session, methods=["GET"]),
    Mount(ASSETS_PATH, StaticFiles(directory=MAP_ASSETS_DIR), name="map-assets"),
]
