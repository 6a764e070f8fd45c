"""Configuration files that the proxy reloads when they change (prices, budget blocks).

`WatchedFiles` builds a value from a list of files and keeps serving the last good value: a file that
turns invalid or disappears after start is logged and ignored until it is fixed. Changes are noticed by a
cheap ``stat`` of each file (resolved path, mtime, size, inode), which also catches the symlink swap
Kubernetes makes when it updates a mounted ConfigMap (``prices.yaml -> ..data/prices.yaml``,
``..data -> ..2024_01_01_00_00_00.1``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_Stamp = tuple[str, int, int, int] | None


def _stamp(path: Path) -> _Stamp:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return real, st.st_mtime_ns, st.st_size, st.st_ino


class WatchedFiles[T]:
    """``build(files)`` kept current as the files change (see the module docstring).

    At construction a missing or invalid file raises ValueError, unless ``missing_ok``, in which case
    files that do not exist yet are left out of ``build``'s list until they appear. A file that was there
    and disappears keeps the last good value either way (a ConfigMap update swaps symlinks).
    """

    def __init__(
        self,
        files: Sequence[Path],
        build: Callable[[Sequence[Path]], T],
        *,
        what: str,
        keeps: str,
        missing_ok: bool = False,
    ) -> None:
        self.files: tuple[Path, ...] = tuple(Path(f) for f in files)
        self._build = build
        self.what = what
        self.keeps = keeps
        self.missing_ok = missing_ok
        self._stamps = [_stamp(f) for f in self.files]
        missing = self._missing(self._stamps)
        if missing and not missing_ok:
            raise ValueError(f"{what} not found: {', '.join(missing)}")
        try:
            self.value: T = self._build(self._present(self._stamps))
        except OSError as exc:
            raise ValueError(f"cannot read {what}: {exc}") from None

    def _missing(self, stamps: Sequence[_Stamp]) -> list[str]:
        return [str(f) for f, s in zip(self.files, stamps, strict=True) if s is None]

    def _present(self, stamps: Sequence[_Stamp]) -> list[Path]:
        return [f for f, s in zip(self.files, stamps, strict=True) if s is not None]

    def reload_if_changed(self) -> bool:
        """Rebuild if a file changed; True when a new value is in use.

        On an invalid or vanished file the last good value stays and the problem is logged once per change.
        """
        stamps = [_stamp(f) for f in self.files]
        if stamps == self._stamps:
            return False
        vanished = [
            str(f) for f, old, new in zip(self.files, self._stamps, stamps, strict=True) if old and not new
        ]
        self._stamps = stamps
        missing = vanished or ([] if self.missing_ok else self._missing(stamps))
        if missing:
            logger.error(
                "%s disappeared, keeping the last good %s: %s", self.what, self.keeps, ", ".join(missing)
            )
            return False
        try:
            value = self._build(self._present(stamps))
        except (OSError, ValueError) as exc:
            logger.error("%s change rejected, keeping the last good %s: %s", self.what, self.keeps, exc)
            return False
        self.value = value
        logger.info("%s reloaded from %s", self.keeps, ", ".join(str(f) for f in self.files))
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Check for changes every ``interval`` seconds until cancelled (run it as an asyncio task)."""
        while True:
            await asyncio.sleep(interval)
            if [_stamp(f) for f in self.files] != self._stamps:
                await asyncio.to_thread(self.reload_if_changed)

    def watch_in_thread(self, interval: float = 2.0) -> threading.Event:
        """Check for changes every ``interval`` seconds in a daemon thread; set the returned event to stop."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                self.reload_if_changed()

        threading.Thread(target=loop, name="spendmeter-filewatch", daemon=True).start()
        return stop
