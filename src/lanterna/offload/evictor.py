"""The shared-filesystem evictor: deletes least-recently-read block files between usage watermarks.

One pass: measure usage (``statvfs`` of the filesystem, or the bytes under ``root`` against a configured
capacity); below ``high`` stop; else stream the tree with ``os.scandir`` keeping only the ``k`` oldest
block files (``evict_policy.OldestCandidates``), delete oldest-first until usage would reach ``low``, and
rescan for the next ``k`` while more is needed. Memory is O(k + directory fan-out), never O(files).

Concurrency (NOTE: these are the invariants the tests check with real writer and reader processes):
- writers publish with temp + ``os.replace``; only ``<hex>.bin`` names are ever deleted, so a file is
  either complete or absent, and temp files are never touched (they still count as used bytes);
- a reader that opened a file keeps reading all of it after the unlink (POSIX); one that opens later
  gets ``ENOENT``, a cache miss, never a partial file;
- each victim is re-``stat``ed just before the unlink, and skipped if its recency moved since the scan
  (it was read, or rewritten by another pod, in between).
Recency is atime; on a ``noatime`` mount atime never moves, so ``auto`` uses mtime there (write order).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from lanterna.offload.evict_policy import Candidate, OldestCandidates, Watermarks, pick_victims
from lanterna.offload.layout import BlockName, is_temp_file, parse_block_file

log = logging.getLogger(__name__)

Recency = Literal["atime", "mtime"]
PROGRESS_EVERY_FILES = 250_000


@dataclass(frozen=True, slots=True)
class EvictorConfig:
    root: str
    watermarks: Watermarks = Watermarks()
    capacity_bytes: int | None = None  # None: the filesystem's own size and usage (statvfs)
    dry_run: bool = False
    max_candidates: int = 100_000  # k: entries one scan keeps; bounds memory
    max_rounds: int = 16  # rescans per pass when k files were not enough
    recency: Recency = "atime"


@dataclass(slots=True)
class PassResult:
    used_bytes: int = 0  # at the start of the pass
    capacity_bytes: int = 0
    need_bytes: int = 0
    files_scanned: int = 0
    temp_files_seen: int = 0
    files_deleted: int = 0  # in dry-run: files that would be deleted
    bytes_deleted: int = 0
    files_skipped: int = 0  # read or gone between scan and delete
    rounds: int = 0
    scan_s: float = 0.0
    max_retained: int = 0  # the most candidates held at once (the memory bound)


@dataclass(slots=True)
class _Scan:
    total_bytes: int = 0
    files: int = 0
    temps: int = 0


def detect_recency(path: str, mountinfo: str = "/proc/self/mountinfo") -> Recency:
    """``mtime`` when ``path`` sits on a ``noatime`` mount (atime never moves there), else ``atime``."""
    real = os.path.realpath(path)
    best, opts = "", ""
    try:
        with open(mountinfo) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                mnt = parts[4].replace("\\040", " ")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, opts = mnt, parts[5]
    except OSError:  # not Linux: assume atime works
        return "atime"
    return "mtime" if "noatime" in opts.split(",") else "atime"


def _walk_files(root: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(parent dir name, entry) for every regular file; a stack of directories, never of files."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # removed by a concurrent cleanup, or not ours
        parent = os.path.basename(d)
        with it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        yield parent, e
                except OSError:
                    continue


class Evictor:
    """Runs passes; ``on_removed`` gets each deleted block (for KV ``BlockRemoved`` events)."""

    def __init__(self, config: EvictorConfig, *, on_removed: Callable[[list[BlockName]], None] | None = None,
                 on_pass: Callable[[PassResult], None] | None = None) -> None:
        self.config = config
        self._on_removed = on_removed
        self._on_pass = on_pass

    # -- measuring -----------------------------------------------------------------------------
    def _statvfs(self) -> tuple[int, int]:
        st = os.statvfs(self.config.root)
        cap = st.f_blocks * st.f_frsize
        return cap - st.f_bfree * st.f_frsize, cap

    def _scan(self, heap: OldestCandidates, res: PassResult) -> _Scan:
        use_atime = self.config.recency == "atime"
        s = _Scan()
        for parent, e in _walk_files(self.config.root):
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # renamed or deleted since the listing
                continue
            s.total_bytes += st.st_size
            if is_temp_file(e.name):
                s.temps += 1
                continue
            if parse_block_file(e.name, parent) is None:
                continue
            s.files += 1
            heap.offer(Candidate(st.st_atime_ns if use_atime else st.st_mtime_ns, st.st_size, e.path))
            res.max_retained = max(res.max_retained, len(heap))
            if s.files % PROGRESS_EVERY_FILES == 0:
                log.info("evict_scan_progress", extra={"files": s.files, "bytes": s.total_bytes})
        return s

    # -- deleting ------------------------------------------------------------------------------
    def _delete(self, victims: list[Candidate], res: PassResult) -> int:
        use_atime = self.config.recency == "atime"
        freed = 0
        removed: list[BlockName] = []
        for c in victims:
            try:
                st = os.stat(c.path)
            except FileNotFoundError:
                res.files_skipped += 1
                continue
            if (st.st_atime_ns if use_atime else st.st_mtime_ns) != c.recency_ns:
                res.files_skipped += 1  # read (or rewritten) since the scan: no longer a victim
                continue
            if not self.config.dry_run:
                try:
                    os.unlink(c.path)
                except FileNotFoundError:
                    res.files_skipped += 1
                    continue
            freed += st.st_size
            res.files_deleted += 1
            name = parse_block_file(os.path.basename(c.path), os.path.basename(os.path.dirname(c.path)))
            if name is not None:
                removed.append(name)
        res.bytes_deleted += freed
        if removed and self._on_removed is not None and not self.config.dry_run:
            self._on_removed(removed)
        return freed

    # -- passes --------------------------------------------------------------------------------
    def run_once(self) -> PassResult:
        """One pass: measure, then scan/delete rounds until usage would reach ``low`` (or no progress)."""
        cfg = self.config
        res = PassResult()
        fixed = cfg.capacity_bytes
        if fixed is None:
            res.used_bytes, res.capacity_bytes = self._statvfs()
            res.need_bytes = cfg.watermarks.bytes_to_free(res.used_bytes, res.capacity_bytes)
            if res.need_bytes == 0:
                return self._finish(res)
        need: int | None = None
        for _ in range(cfg.max_rounds):
            heap = OldestCandidates(cfg.max_candidates)
            t0 = time.perf_counter()
            scan = self._scan(heap, res)
            res.scan_s += time.perf_counter() - t0
            res.rounds += 1
            res.files_scanned += scan.files
            res.temp_files_seen = scan.temps
            if need is None:  # first round
                if fixed is not None:
                    res.used_bytes, res.capacity_bytes = scan.total_bytes, fixed
                    res.need_bytes = cfg.watermarks.bytes_to_free(scan.total_bytes, fixed)
                need = res.need_bytes
            if need <= 0:
                break
            freed = self._delete(pick_victims(heap.oldest_first(), need), res)
            need -= freed
            if cfg.dry_run or freed == 0 or need <= 0:
                break  # dry-run cannot make progress; freed == 0: nothing left that may go
        return self._finish(res)

    def _finish(self, res: PassResult) -> PassResult:
        log.info("evict_pass", extra={
            "used_bytes": res.used_bytes, "capacity_bytes": res.capacity_bytes, "need_bytes": res.need_bytes,
            "files_scanned": res.files_scanned, "files_deleted": res.files_deleted,
            "bytes_deleted": res.bytes_deleted, "files_skipped": res.files_skipped, "rounds": res.rounds,
            "scan_s": round(res.scan_s, 3), "dry_run": self.config.dry_run})
        if self._on_pass is not None:
            self._on_pass(res)
        return res

    def run_forever(self, interval_s: float, stop: threading.Event) -> None:
        """Passes every ``interval_s`` until ``stop`` is set; a failed pass is logged, not fatal."""
        while not stop.is_set():
            try:
                self.run_once()
            except OSError as exc:
                log.error("evict_pass_failed", extra={"error": str(exc)})
            stop.wait(interval_s)
