"""``sidegate inject``: put Sidegate beside the app in Kubernetes workloads, as ``deploy/base`` does.

- :mod:`sidegate.inject.options`: the options, one frozen value, and sizes read from a config;
- :mod:`sidegate.inject.sidecar`: the container, volumes and annotations, pure values;
- :mod:`sidegate.inject.workload`: one workload's pod spec patched, refusals and advice;
- :mod:`sidegate.inject.merge`: edits that change only what differs (idempotence);
- :mod:`sidegate.inject.stream`: the multi-document YAML stream, untouched documents kept verbatim.

Like ``validate``, it never imports asyncio or the runtime.
"""
