"""The layering rules of DESIGN.md, checked by walking every import in the package.

Arrows point down only: a lower layer never imports a higher one, ``http``/``routing``/
``policy``/``config``/``filters`` never touch asyncio or sockets, and ``server``/``upstream``
see only the compiled snapshot, never the config model. And no two modules import each other, by any
path: the import graph (TYPE_CHECKING and function-level imports included) has no circle.
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
    "egress": (
        "egress",
        "upstream",
        "server.timers",
        "server.framing",  # the inbound listener's response framing rules, pure functions
        "http",
        "config.snapshot",
        "config.egress_spec",  # the compiled destinations
        "config.egress_credential_spec",  # a destination's credentials, as plain values (no pydantic)
        "observe",  # the inbound side's metric buckets, trace context and tracer (one pipeline)
        "config.egress_tls_spec",  # a destination's TLS origination, as plain values (no pydantic)
        "errors",
    ),
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
    "inject": ("inject", "config", "cache.env", "units", "errors"),  # a one-shot command, like validate
    "transparent": ("transparent", "config", "errors"),  # `sidegate iptables`, a one-shot command
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


def _module_graph() -> dict[str, set[str]]:
    """Every module's sidegate imports, resolved to modules: top-level, function-level and
    ``TYPE_CHECKING`` ones alike (a reader has to hold them all at once)."""
    names = {module for module, _ in _modules()}

    def resolve(name: str) -> str | None:
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in _modules():
        targets = graph.setdefault(module, set())
        for name in _imports(path):
            if name.startswith("sidegate."):
                target = resolve(name.removeprefix("sidegate."))
                if target is not None and target != module:
                    targets.add(target)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    circles = _circles(_module_graph())
    assert not circles, "modules that import each other (break the circle): " + "; ".join(
        " <-> ".join(c) for c in circles
    )


def test_the_circle_check_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
