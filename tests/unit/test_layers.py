"""The layering rules of DESIGN.md, checked by walking every import in the package.

Arrows point down only: a lower layer never imports a higher one, ``http``/``routing``/
``policy``/``config``/``filters`` never touch asyncio or sockets, and ``server``/``upstream``
see only the compiled snapshot, never the config model.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "sidegate"

# What each part may import from sidegate (a prefix match on the dotted module name).
ALLOWED: dict[str, tuple[str, ...]] = {
    "errors": (),
    "units": (),
    "http": ("http", "errors"),
    "policy": ("policy", "http", "errors"),
    "routing": ("routing", "http", "config.snapshot", "errors"),
    "config": ("config", "routing", "filters", "http", "units", "errors"),
    "filters": (
        "filters",
        "http",
        "config.snapshot",
        "units",
        "policy",
        "cache",
        "auth",
        "ratelimit",
        "errors",
    ),
    "auth": ("auth", "policy", "http", "config.snapshot", "errors"),
    "ratelimit": ("ratelimit", "policy", "http", "config.snapshot", "errors"),
    "cache": ("cache", "policy", "http", "config.snapshot", "errors"),
    "server": ("server", "http", "config.snapshot", "errors"),
    "upstream": ("upstream", "server.timers", "http", "config.snapshot", "errors"),
    "observe": ("observe", "errors"),
    "admin": ("admin", "observe", "http", "cache", "config.snapshot", "errors"),
    "forwarding": ("forwarding", "config.snapshot", "http"),
    "request": (
        "request",
        "forwarding",
        "filters",
        "http",
        "routing",
        "upstream",
        "server",
        "observe",
        "config.snapshot",
        "errors",
    ),
    "watch": (),
    "native": (),
    "gateway": ("",),
    "control": ("",),
    "reload": ("",),
    "runtime": ("",),
    "supervisor": ("",),
    "cli": ("",),
}
NO_IO = ("http", "policy", "routing", "config", "filters", "forwarding", "units")
IO_MODULES = {"asyncio", "socket", "uvloop", "selectors"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_imports_follow_the_layers(module: str, path: Path) -> None:
    if not module:
        return
    part = module.split(".", maxsplit=1)[0]
    assert part in ALLOWED, f"{module}: new top-level part; add it to ALLOWED in {__file__}"
    allowed = ALLOWED[part]
    for name in _imports(path):
        if name == "sidegate" or not name.startswith("sidegate."):
            continue
        target = name.removeprefix("sidegate.")
        if target == "__version__" or target.startswith("__"):
            continue
        assert any(a in ("", target) or target.startswith(a + ".") for a in allowed), (
            f"{module} imports sidegate.{target}, which its layer may not ({part} may import {allowed})"
        )


@pytest.mark.parametrize(("module", "path"), [m for m in _modules() if m[0].split(".")[0] in NO_IO])
def test_pure_layers_do_no_io(module: str, path: Path) -> None:
    used = {name.split(".")[0] for name in _imports(path)} & IO_MODULES
    assert not used, f"{module} imports {used}; its layer must stay free of I/O"
