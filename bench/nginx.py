"""nginx in its roles: the origin ("the app") and the reverse proxy Sidegate is measured against, plain
or with `proxy_cache` (the cache-hit case).

Each instance gets its own prefix directory: config, pid file, error log and temp paths all live there, so
nothing touches /etc/nginx, /var/log or /var/lib and no root-owned path is needed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from procs import BenchError, Proc, ProcessGroup, wait_ready

ORIGIN_BODY = b"Hello, world!"
CACHEABLE_PATH = "/cacheable"  # the origin answers it with `Cache-Control: public, max-age=3600`

_COMMON = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{body}
}}
"""

# `/` is what every default scenario measures; `/cacheable` (the cache-hit scenarios) answers the same
# body with a one-hour public freshness lifetime, so a cache in front may store it and answer from it.
_ORIGIN = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{text}"; }}
        location = {cacheable} {{
            add_header Cache-Control "public, max-age=3600" always;
            return 200 "{text}";
        }}
    }}"""

_PROXY = """\
    upstream app {{
        server 127.0.0.1:{app_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


# The same reverse proxy with a cache: a zone in the instance's own prefix, 200s kept for an hour (the
# origin's `max-age` says the same), and `X-Cache` telling the preflight whether an answer was a HIT.
_CACHE_PROXY = (
    "    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=bench:10m max_size=64m inactive=1h "
    "use_temp_path=off;\n"
    + _PROXY.replace(
        'proxy_set_header Connection "";',
        'proxy_set_header Connection "";\n'
        "            proxy_cache bench;\n"
        "            proxy_cache_valid 200 1h;\n"
        "            add_header X-Cache $upstream_cache_status;",
    )
)


def nginx_binary() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if path is None:
        raise BenchError("nginx not found: run `scripts/install-system-deps.sh nginx-light wrk` as root")
    return path


def nginx_version() -> str:
    out = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False)
    return out.stderr.strip().removeprefix("nginx version: ")


def origin_conf(prefix: Path, port: int) -> str:
    body = _ORIGIN.format(port=port, text=ORIGIN_BODY.decode(), cacheable=CACHEABLE_PATH)
    return _COMMON.format(prefix=prefix, body=body)


def proxy_conf(prefix: Path, port: int, app_port: int) -> str:
    return _COMMON.format(prefix=prefix, body=_PROXY.format(port=port, app_port=app_port))


def cache_proxy_conf(prefix: Path, port: int, app_port: int) -> str:
    body = _CACHE_PROXY.format(prefix=prefix, port=port, app_port=app_port)
    return _COMMON.format(prefix=prefix, body=body)


def start_nginx(
    group: ProcessGroup, name: str, port: int, cpu: int | None, conf: Callable[[Path], str]
) -> Proc:
    """Write `conf(prefix)` into a fresh prefix under the group's work dir, start nginx, wait for it."""
    name = group.unique(name)
    prefix = group.workdir / name
    prefix.mkdir()
    # Workers drop to `nobody` when started as root; they must be able to reach their prefix.
    prefix.chmod(0o755)
    (prefix / "nginx.conf").write_text(conf(prefix))
    argv = [nginx_binary(), "-p", str(prefix), "-e", str(prefix / "error.log")]
    argv += ["-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    proc = group.start(name, argv, cpu)
    wait_ready(proc, port, "/", timeout=10)
    return proc
