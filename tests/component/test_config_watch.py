"""The config watcher with the pod's labels file beside the config: which changes reload, and how often.

Real files, a real event loop, the kubelet's way of updating a volume (``..data`` symlink swaps).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path

from e2e.helpers import ConfigMapDir
from sidegate.watch import watch_config

INTERVAL = 0.01


def on_a_loop(test: Callable[[Path], Coroutine[None, None, None]]) -> Callable[[Path], None]:
    """A coroutine test run on its own event loop (the component tests' way, no plugin)."""

    @functools.wraps(test)
    def run(tmp_path: Path) -> None:
        asyncio.run(test(tmp_path))

    return run


class Watching:
    """``watch_config`` running in the background, counting the reloads it asks for."""

    def __init__(self, config: Path, watched: Callable[[], Sequence[str]] | None) -> None:
        self.config = config
        self.watched = watched
        self.reloads = 0
        self.stop = asyncio.Event()

    async def on_change(self) -> None:
        self.reloads += 1

    async def __aenter__(self) -> Watching:
        self.task = asyncio.get_running_loop().create_task(
            watch_config(str(self.config), self.on_change, self.stop, interval=INTERVAL, watched=self.watched)
        )
        await asyncio.sleep(INTERVAL * 3)  # it has taken its first look
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 2)

    async def settle(self) -> int:
        await asyncio.sleep(INTERVAL * 10)
        return self.reloads


def setup(tmp_path: Path) -> tuple[Path, ConfigMapDir]:
    config = tmp_path / "sidegate.yaml"
    config.write_text("routes: []\n")
    podinfo = ConfigMapDir(tmp_path / "podinfo", name="labels")
    podinfo.dir.mkdir()
    podinfo.write('version="v1"')
    return config, podinfo


@on_a_loop
async def test_a_relabel_reloads_once(tmp_path: Path) -> None:
    config, podinfo = setup(tmp_path)
    async with Watching(config, lambda: (str(config), str(podinfo.path))) as watching:
        podinfo.write('version="v2"')
        assert await watching.settle() == 1
        podinfo.write('version="v2"')  # the kubelet rewrote the same labels: nothing changed
        assert await watching.settle() == 1


@on_a_loop
async def test_the_labels_file_is_not_watched_when_the_config_does_not_read_it(tmp_path: Path) -> None:
    config, podinfo = setup(tmp_path)
    async with Watching(config, None) as watching:  # the default: the config file only
        podinfo.write('version="v2"')
        assert await watching.settle() == 0
        config.write_text("routes: [changed]\n")
        assert await watching.settle() == 1


@on_a_loop
async def test_a_file_the_watch_takes_on_later_is_watched_from_what_it_then_holds(tmp_path: Path) -> None:
    config, podinfo = setup(tmp_path)
    files = [str(config)]
    async with Watching(config, lambda: files) as watching:
        podinfo.write('version="v2"')
        files.append(str(podinfo.path))  # a reload gave the config profiles: now the labels count
        assert await watching.settle() == 0
        podinfo.write('version="v3"')
        assert await watching.settle() == 1


@on_a_loop
async def test_both_files_changed_at_once_are_one_reload(tmp_path: Path) -> None:
    config, podinfo = setup(tmp_path)
    watching = Watching(config, lambda: (str(config), str(podinfo.path)))
    async with watching:
        # Both changes land between two looks of the watcher (it is not scheduled meanwhile).
        podinfo.write('version="v2"')
        tmp = config.with_suffix(".tmp")
        tmp.write_text("routes: [changed]\n")
        os.replace(tmp, config)
        assert await watching.settle() == 1


@on_a_loop
async def test_a_labels_file_missing_for_a_moment_is_no_change(tmp_path: Path) -> None:
    config, podinfo = setup(tmp_path)
    async with Watching(config, lambda: (str(config), str(podinfo.path))) as watching:
        data = podinfo.dir / "..data"
        target = os.readlink(data)
        data.unlink()
        assert await watching.settle() == 0
        data.symlink_to(target)
        assert await watching.settle() == 0
