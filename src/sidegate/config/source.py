"""Reading a config's YAML text into plain data, remembering where every value came from.

PyYAML's usual ``safe_load`` loses line numbers and silently keeps the last of two duplicate keys.
Here the text is *composed* into a node tree, and the tree is walked by hand:

- every value (and every mapping key) records ``start_mark.line + 1`` under its path, a tuple such as
  ``("routes", 0, "match", "path_prefix")``, so a later error at any path can name its line
  (:func:`line_for` falls back to the nearest enclosing node for a missing key);
- a key written twice in one mapping is an issue, and the first one is kept (keys merged in with
  ``<<`` may still be overridden);
- scalars are built by the safe constructor, as in ``safe_load``, except that only ``true`` and
  ``false`` are booleans (YAML 1.2): ``X-Debug: on`` or ``country: no`` stay strings, and a
  boolean field still accepts ``yes``/``on`` since the model parses those strings; an explicit tag
  on a list or mapping (``!!python/object``...) is refused.

Then :func:`substitute_env` replaces ``${NAME}`` and ``${NAME:-default}`` in string values
(``$${`` is a literal ``${``; like the shell, the default also applies when NAME is empty).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from sidegate.errors import ConfigIssue

Path = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)(\}?)")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans (only true/false, in any of three casings)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def format_path(path: Path) -> str:
    """``("routes", 0, "match")`` -> ``"routes[0].match"``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def line_for(lines: Mapping[Path, int], path: Path) -> int | None:
    """Line of ``path``, or of its nearest ancestor that exists in the file."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


@dataclass
class Document:
    """The data of one YAML document, its line map, and the problems found reading it."""

    data: Any = None
    lines: dict[Path, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    fatal: bool = False  # nothing usable could be read


def parse_yaml(text: str) -> Document:
    """Compose ``text`` and build plain data plus a path -> line map; never raises YAML errors."""
    doc = Document()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _Builder(loader, doc).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = ": ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        doc.issues.append(ConfigIssue("", f"YAML syntax error: {problem}", line))
        doc.fatal = True
    except yaml.YAMLError as exc:
        doc.issues.append(ConfigIssue("", f"YAML error: {exc}"))
        doc.fatal = True
    finally:
        loader.dispose()
    return doc


class _Builder:
    def __init__(self, loader: _Loader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.active: set[int] = set()  # nodes being built (a recursive alias would loop)

    def build(self, node: Node, path: Path) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.active:
            self._issue(path, "a YAML alias refers to a node that contains it (recursive)", node)
            return None
        if node.tag not in _COLLECTION_TAGS:
            raise ConstructorError(None, None, f"unsupported YAML tag {node.tag!r}", node.start_mark)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return None
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        repeated: set[int] = set()  # ids of the key nodes of second copies, skipped below
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self._issue(
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first_line[key]}); "
                    "YAML would silently keep the last one: remove or merge one of them",
                    key_node,
                )
                repeated.add(id(key_node))
            else:
                first_line[key] = line
        self.loader.flatten_mapping(node)  # resolve "<<" merges the way safe_load does
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if id(key_node) in repeated:
                continue
            key = self._key(key_node, path)
            key_path = (*path, key)
            self.doc.lines[key_path] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, key_path)
        return result

    def _key(self, key_node: Node, path: Path) -> Any:
        key = self.loader.construct_object(key_node, deep=True)
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        self._issue(path, f"mapping key {key!r} must be a string", key_node)
        return repr(key)

    def _issue(self, path: Path, message: str, node: Node) -> None:
        self.doc.issues.append(ConfigIssue(format_path(path), message, node.start_mark.line + 1))


def substitute_env(doc: Document, environ: Mapping[str, str]) -> set[Path]:
    """Replace ``${NAME}`` references in every string value of ``doc.data``, in place.

    Adds an issue for each unset variable (without default) or malformed reference, and returns
    the paths of those values so that later checks do not report them a second time.
    """
    bad: set[Path] = set()

    def visit(value: Any, path: Path) -> Any:
        if isinstance(value, str):
            return _substitute(value, path) if "${" in value else value
        if isinstance(value, dict):
            return {key: visit(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [visit(item, (*path, i)) for i, item in enumerate(value)]
        return value

    def _substitute(text: str, path: Path) -> str:
        def replace(ref: re.Match[str]) -> str:
            if ref.group(0) == "$${":
                return "${"
            body, closed = ref.group(1), ref.group(2)
            variable = _VARIABLE.fullmatch(body)
            if not closed or variable is None:
                problem = "has no closing '}'" if not closed else "is not ${NAME} or ${NAME:-default}"
                _report(path, f"'${{{body}{closed}' {problem}; write $${{ for a literal '${{'")
                return ""
            name, default = variable.group(1), variable.group(2)
            found = environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    fix = f"set it or give a default: ${{{name}:-value}}"
                    _report(path, f"environment variable {name} is not set; {fix}")
                    return ""
                return default
            return found

        return _REFERENCE.sub(replace, text)

    def _report(path: Path, message: str) -> None:
        bad.add(path)
        doc.issues.append(ConfigIssue(format_path(path), message, line_for(doc.lines, path)))

    doc.data = visit(doc.data, ())
    return bad
