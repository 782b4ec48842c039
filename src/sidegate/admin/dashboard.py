"""The admin dashboard: ``GET /`` serves one page that polls ``/stats`` and draws its own charts.

Three files ship inside the package (``sidegate/admin/static``): the page, its script and its
style sheet. No build step and nothing from elsewhere: the Content-Security-Policy lets the page
load scripts, styles and data only from the admin server itself, and run no inline script.
Each file is read on its first request and kept: a pod nobody looks at holds none of them.
"""

from __future__ import annotations

from pathlib import Path

from sidegate.admin.app import AdminRequest, AdminResponse, Handler

#: Everything from this origin only; no inline script or style, no plug-ins, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: URL path -> (file in ``static``, content type).
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


STATIC = Path(__file__).resolve().parent / "static"


def dashboard_routes() -> dict[tuple[str, str], Handler]:
    """Admin routes serving the dashboard's files."""
    routes: dict[tuple[str, str], Handler] = {}
    for path, (name, content_type) in FILES.items():
        loaded: list[AdminResponse] = []

        def serve(
            _: AdminRequest,
            name: str = name,
            content_type: str = content_type,
            loaded: list[AdminResponse] = loaded,
        ) -> AdminResponse:
            if not loaded:
                loaded.append(AdminResponse(200, (STATIC / name).read_bytes(), content_type, _HEADERS))
            return loaded[0]

        routes[("GET", path)] = serve
    return routes
