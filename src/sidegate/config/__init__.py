"""L1: configuration, from YAML text to the immutable :class:`~sidegate.config.snapshot.Snapshot`.

- :mod:`~sidegate.config.load`: ``load_config(path)`` / ``load_config_text(text)`` read, substitute
  ``${ENV}``, validate and report every issue (dotted path, line, fix) as one ``ConfigError``.
- :mod:`~sidegate.config.model`: the pydantic models and ``config_json_schema()``.
- :mod:`~sidegate.config.compile`: ``compile_snapshot(loaded)``, the plain values the data plane runs on.
- :mod:`~sidegate.config.source`, :mod:`~sidegate.config.units`, :mod:`~sidegate.config.redact`:
  YAML with line marks, duration/size/address parsing, secret redaction.

This package module imports nothing on purpose: the data plane imports
:mod:`sidegate.config.snapshot` without pulling in pydantic or YAML.
"""
