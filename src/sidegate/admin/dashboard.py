"""The admin dashboard: ``GET /`` serves one page that polls ``/stats`` and draws its own charts.

Three files ship inside the package (``sidegate/admin/static``): the page, its script and its
style sheet. No build step and nothing from elsewhere: the Content-Security-Policy lets the page
load scripts, styles and data only from the admin server itself, and run no inline script.
The files are read once, when the routes are made.
"""

from __future__ import annotations

from importlib import resources

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


def dashboard_routes() -> dict[tuple[str, str], Handler]:
    """Admin routes serving the dashboard's files."""
    static = resources.files("sidegate.admin") / "static"
    routes: dict[tuple[str, str], Handler] = {}
    for path, (name, content_type) in FILES.items():
        response = AdminResponse(200, (static / name).read_bytes(), content_type, _HEADERS)

        def serve(_: AdminRequest, response: AdminResponse = response) -> AdminResponse:
            return response

        routes[("GET", path)] = serve
    return routes
