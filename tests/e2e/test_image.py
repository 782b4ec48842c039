"""The container image, built as a user builds it (``make image``) and run as a pod would run it.

No registry is reachable from the test machines, so the base is a Debian bookworm minbase with
python3 made by ``make image-base`` (``scripts/debootstrap-base.sh``, cached in /var/tmp, keyed by the
script), passed as ``BASE``; the Containerfile is the one every build uses. Then, inside the image:

* with ``buildah run --isolation chroot`` (host network): ``sidegate version``, the user, what the
  runtime stage left out, and ``sidegate run`` serving a real request to the recording origin on
  loopback, stopped with SIGTERM (exit 0);
* as a kubelet with ``readOnlyRootFilesystem: true`` would: the image's own user, environment,
  entrypoint and default command in a chroot of the image whose root is mounted read-only, with only
  /tmp, /dev/shm and the cache volume writable and the config directory mounted at /etc/sidegate.
  Two workers, the shared cache and the pod's rate-limit table all work there.

Needs root, buildah and debootstrap (``make system-deps``). Cold (nothing cached) this takes a few
minutes, mostly debootstrap and the mypyc build; warm, buildah's layer cache makes it seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.gateway import ROOT, OriginProcess, free_port, stop_process
from support.gateway import http_get as get

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

IMAGE = "localhost/sidegate:e2e-test"
BASE = "localhost/sidegate-base:bookworm"
UID = 65532
HOST = "127.0.0.1"


def _run(cmd: list[str], *, timeout: float, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if log is not None:
        log.write_text(f"$ {shlex.join(cmd)}\n{result.stdout}\n{result.stderr}")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        pytest.fail(f"{shlex.join(cmd)} exited {result.returncode}:\n{tail}")
    return result


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built by ``make image`` on the base of ``make image-base`` (both made if not cached)."""
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (debootstrap, buildah): run it as root")
    missing = [
        tool for tool in ("buildah", "debootstrap") if shutil.which(tool, path="/usr/bin:/usr/sbin") is None
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make system-deps` (as root)")
    logs = tmp_path_factory.mktemp("image-build")
    _run(["make", "-C", str(ROOT), "image-base", f"TEST_BASE={BASE}"], timeout=600, log=logs / "base.log")
    _run(
        ["make", "-C", str(ROOT), "image", f"IMAGE={IMAGE}", f"BASE={BASE}"],
        timeout=600,
        log=logs / "build.log",
    )
    return IMAGE


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[str]:
    """A working container of the image (``buildah from``), removed after the module."""
    name = _run(["buildah", "from", "--pull-never", image], timeout=60).stdout.strip()
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True, check=False, timeout=60)


def in_image(container: str, *command: str, volumes: tuple[str, ...] = ()) -> list[str]:
    """``buildah run`` with the image's user, host network, chroot isolation."""
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    return [
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        *mounts,
        container,
        "--",
        *command,
    ]


def image_config(image: str) -> dict[str, Any]:
    """The OCI image configuration (``config`` of ``buildah inspect``)."""
    out = _run(["buildah", "inspect", "--type", "image", image], timeout=30).stdout
    config: dict[str, Any] = json.loads(out)["OCIv1"]["config"]
    return config


def gateway_config(upstream: str, *, port: int, admin_port: int, **extra: Any) -> dict[str, Any]:
    """One route to ``upstream``; every listener on a free loopback port (the image shares the host's
    network), and no pause before the drain where the config knows one (``drain_delay``)."""
    listeners: dict[str, Any] = {
        "inbound": {"address": f"{HOST}:{port}"},
        "admin": {"address": f"{HOST}:{admin_port}"},
    }
    listeners["health"] = {"address": f"{HOST}:{free_port()}"}  # not the default 0.0.0.0:9902
    return {
        "listeners": listeners,
        "upstreams": {"app": {"endpoints": [upstream]}},
        "routes": [{"name": "all", "match": {"path_prefix": "/"}, "upstream": "app"}],
        "drain_delay": "0s",  # SIGTERM in a test: no 5 s of not-ready serving first
        **extra,
    }


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """The config as its ConfigMap directory: ``DIR/sidegate.yaml``, readable by the image's user."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    path = directory / "sidegate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o644)
    return directory


def wait_ready(admin_port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sidegate exited {proc.returncode} before ready:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError):
            if get(admin_port, "/ready", timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"sidegate not ready in {timeout} s:\n{log.read_text(errors='replace')}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children (buildah runs in the host's pid space)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in sorted(children.get(todo.pop(0), [])):
            out.append(child)
            todo.append(child)
    return out


def uid_of(pid: int) -> int:
    """The real UID a process runs as (from ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def response_headers(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET: status, headers (lower-case names), body; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# --- what is in the image --------------------------------------------------------------------


def test_sidegate_version_in_the_image_is_compiled(container: str) -> None:
    result = _run(in_image(container, "sidegate", "version"), timeout=60)
    assert result.stdout.strip() == f"sidegate {dist_version('sidegate')}, hot path compiled (mypyc)"


def test_image_runs_as_65532_with_sidegate_as_entrypoint(image: str, container: str) -> None:
    config = image_config(image)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["sidegate"]
    assert config["Cmd"] == ["run", "--config", "/etc/sidegate/sidegate.yaml"]
    assert "CACHE_DIR=/var/cache/sidegate" in config["Env"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9902/tcp"}
    assert config["Labels"]["org.opencontainers.image.version"] == dist_version("sidegate")
    assert config["Labels"]["org.opencontainers.image.base.name"] == BASE
    ids = _run(
        in_image(container, "sh", "-c", "id -u; id -g; id -un; stat -c %u:%g /var/cache/sidegate"), timeout=60
    )
    assert ids.stdout.split() == [str(UID), str(UID), "sidegate", f"{UID}:{UID}"]


def test_runtime_stage_has_no_compiler_pip_or_sources(container: str) -> None:
    probe = (
        "for c in cc gcc pip pip3; do command -v $c; done; ls /opt/sidegate/bin;"
        " ls -d /src /opt/build /usr/include/python3* 2>/dev/null;"
        " find /opt/sidegate -name '*.c' | head -3; true"
    )
    found = _run(in_image(container, "sh", "-c", probe), timeout=60).stdout.split()
    assert "sidegate" in found  # the console script is there ...
    assert not [f for f in found if f.startswith("/") or f.startswith("pip")], found  # ... and nothing else


def test_image_carries_iptables_for_the_transparent_init_container(container: str) -> None:
    """Transparent mode's init container runs this image's ``sidegate iptables --apply``: the
    image has the iptables-restore it calls, and the command prints its rules (applying them
    here would change the host's own nat table: the netns tests do that, in a namespace)."""
    versions = _run(in_image(container, "iptables-restore", "--version"), timeout=60)
    assert "iptables-restore" in versions.stdout + versions.stderr
    rules = _run(in_image(container, "sidegate", "iptables", "--proxy-uid", "65532"), timeout=60)
    assert "-A SIDEGATE_OUTPUT" in rules.stdout and "REDIRECT --to-ports 15001" in rules.stdout


# --- serving ---------------------------------------------------------------------------------


def test_sidegate_run_in_the_image_proxies_to_an_app_on_loopback(
    container: str, origin: OriginProcess, tmp_path: Path
) -> None:
    port, admin_port = free_port(), free_port()
    conf = write_config(tmp_path / "conf", gateway_config(origin.address, port=port, admin_port=admin_port))
    log = tmp_path / "sidegate.log"
    command = in_image(
        container,
        "sidegate",
        "run",
        "--config",
        "/etc/sidegate/sidegate.yaml",
        volumes=(f"{conf}:/etc/sidegate:ro",),
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(admin_port, proc, log)
        status, headers, body = response_headers(port, "/from-the-image?x=1")
        assert status == 200, body
        assert json.loads(body)["target"] == "/from-the-image?x=1"
        assert headers["via"] == "1.1 sidegate"
        received = origin.wait_for(1)[-1]
        assert received.header("x-request-id") == headers["x-request-id"]
        assert received.header("x-forwarded-for") == HOST

        # buildah run kills its child on SIGTERM; a kubelet signals the process itself.
        servers = [p for p in descendants(proc.pid) if _cmdline(p).startswith(b"/opt/sidegate/bin/python\0")]
        assert servers, "no sidegate process under buildah run"
        assert uid_of(servers[0]) == UID
        os.kill(servers[0], signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        stop_process(proc)


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


# --- read-only root --------------------------------------------------------------------------


def read_only_pod(
    rootfs: str, config: dict[str, Any], *, conf: Path, cache: Path, argv: list[str] | None = None
) -> list[str]:
    """The image's entrypoint and default command, as its user with its environment, in a chroot
    whose root is read-only: writable only /tmp and /dev/shm (tmpfs) and the cache volume, the config
    directory mounted read-only at /etc/sidegate. Its own mount namespace keeps the mounts private;
    the last ``exec`` makes the returned command's pid the gateway's own."""
    env = ["env", "-i", *config["Env"]]
    user = config["User"]
    argv = argv or [*config["Entrypoint"], *config["Cmd"]]
    script = f"""set -e
root={shlex.quote(rootfs)}
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount --bind {shlex.quote(str(cache))} "$root/var/cache/sidegate"
mount --bind -o ro {shlex.quote(str(conf))} "$root/etc/sidegate"
exec chroot --userspec={shlex.quote(user)} "$root" {shlex.join(env + argv)}
"""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


@pytest.fixture
def mounted(image: str) -> Iterator[str]:
    """A fresh container of the image and its root file system's path (``buildah mount``)."""
    ctr = _run(["buildah", "from", "--pull-never", image], timeout=60).stdout.strip()
    try:
        yield _run(["buildah", "mount", ctr], timeout=60).stdout.strip()
    finally:
        subprocess.run(["buildah", "umount", ctr], capture_output=True, check=False, timeout=60)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, check=False, timeout=60)


def test_read_only_pod_allows_writes_only_to_tmp_shm_and_the_cache(
    image: str, mounted: str, tmp_path: Path
) -> None:
    """The harness itself: the root refuses writes, the three writable paths take them."""
    conf, cache = write_config(tmp_path / "conf", {}), tmp_path / "cache"
    cache.mkdir()
    os.chown(cache, UID, UID)
    probe = (
        "for d in /tmp /dev/shm /var/cache/sidegate /opt/sidegate /etc/sidegate /; do"
        " touch $d/probe 2>/dev/null && echo $d:rw || echo $d:ro; done; id -u"
    )
    command = read_only_pod(mounted, image_config(image), conf=conf, cache=cache, argv=["sh", "-c", probe])
    result = _run(command, timeout=60)
    writable = ["/tmp:rw", "/dev/shm:rw", "/var/cache/sidegate:rw"]
    assert result.stdout.split() == [*writable, "/opt/sidegate:ro", "/etc/sidegate:ro", "/:ro", str(UID)]
    assert (cache / "probe").stat().st_uid == UID


def test_read_only_root_serves_with_workers_cache_and_rate_limit(
    image: str, mounted: str, origin: OriginProcess, tmp_path: Path
) -> None:
    port, admin_port = free_port(), free_port()
    config = gateway_config(origin.address, port=port, admin_port=admin_port, workers=2)
    config["routes"] = [
        {
            "name": "limited",
            "match": {"path_prefix": "/limited"},
            "upstream": "app",
            "filters": {"rate_limit": {"requests": 2, "per": "1m", "burst": 2, "key": "ip"}},
        },
        {"name": "cached", "match": {"path_prefix": "/cache"}, "upstream": "app", "filters": {"cache": {}}},
    ]
    conf = write_config(tmp_path / "conf", config)
    cache = tmp_path / "cache"  # the emptyDir, owned by fsGroup 65532
    cache.mkdir()
    os.chown(cache, UID, UID)
    log = tmp_path / "sidegate.log"
    command = read_only_pod(mounted, image_config(image), conf=conf, cache=cache)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(admin_port, proc, log)
        assert uid_of(proc.pid) == UID

        # The shared cache writes its LMDB store into the volume: the second answer is a hit.
        target = "/cache/ro?cc=max-age%3D60&body=hello"
        first, second = response_headers(port, target), response_headers(port, target)
        assert first[0] == second[0] == 200
        assert first[2] == second[2]
        assert first[2].startswith(b"hello #")
        assert [r.target for r in origin.received()] == [target]
        assert list(cache.iterdir()), "nothing written to the cache volume"

        # The pod's table in /dev/shm counts across both workers: the third request is refused.
        assert [get(port, "/limited")[0] for _ in range(3)] == [200, 200, 429]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop_process(proc)
    output = log.read_text(errors="replace")
    assert "Read-only file system" not in output, output
    assert "Traceback" not in output, output
