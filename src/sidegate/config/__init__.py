"""L1: configuration, from YAML text to the immutable :class:`~sidegate.config.snapshot.Snapshot`.

Two halves, in two processes:

- **Checking** (a short-lived child process, and ``sidegate validate``):
  :mod:`~sidegate.config.load` reads the YAML (:mod:`~sidegate.config.source` keeps line marks),
  substitutes ``${ENV}``, validates with the pydantic models of :mod:`~sidegate.config.model` and
  reports every issue (dotted path, line, fix) as one ``ConfigError``; :mod:`~sidegate.config.check`
  is the child's entry point and prints the normalised config as plain JSON.
- **Compiling** (the serving process, which never imports pydantic or YAML):
  :mod:`~sidegate.config.isolated` runs the checker and reads its answer;
  :mod:`~sidegate.config.compile` turns the plain dict into the snapshot (``compile_checked``).

Keeping pydantic and YAML out of the serving process keeps its resident memory under 30 MiB and
means a pathological file can only hurt the checker. This package module imports nothing on purpose.
"""
