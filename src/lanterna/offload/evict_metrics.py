"""Prometheus metrics for the evictor, fed once per pass (nothing per file on the scan path)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lanterna.offload.evictor import PassResult

_SCAN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class EvictorMetrics:
    """``lanterna_offload_evict_*``; ``observe`` is the evictor's ``on_pass`` hook."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.files_deleted = Counter("lanterna_offload_evict_files_deleted", "Block files deleted (or, in dry-run, "
                                     "that would have been).", registry=r)
        self.bytes_deleted = Counter("lanterna_offload_evict_bytes_deleted", "Bytes of block files deleted.",
                                     registry=r)
        self.files_skipped = Counter("lanterna_offload_evict_files_skipped", "Victims skipped: read, rewritten "
                                     "or gone between scan and delete.", registry=r)
        self.files_scanned = Counter("lanterna_offload_evict_files_scanned", "Block files visited by scans.",
                                     registry=r)
        self.passes = Counter("lanterna_offload_evict_passes", "Eviction passes run.", registry=r)
        self.scan_duration = Histogram("lanterna_offload_evict_scan_duration_seconds", "Time per pass spent "
                                       "scanning.", buckets=_SCAN_BUCKETS, registry=r)
        self.used_bytes = Gauge("lanterna_offload_evict_used_bytes", "Used bytes at the last pass start.",
                                registry=r)
        self.capacity_bytes = Gauge("lanterna_offload_evict_capacity_bytes", "Capacity the watermarks apply to.",
                                    registry=r)
        self.usage_ratio = Gauge("lanterna_offload_evict_usage_ratio", "used / capacity at the last pass start.",
                                 registry=r)
        self.temp_files = Gauge("lanterna_offload_evict_temp_files", "In-flight temp files seen by the last "
                                "scan (never deleted).", registry=r)

    def observe(self, res: PassResult) -> None:
        self.passes.inc()
        self.files_deleted.inc(res.files_deleted)
        self.bytes_deleted.inc(res.bytes_deleted)
        self.files_skipped.inc(res.files_skipped)
        self.files_scanned.inc(res.files_scanned)
        if res.rounds:
            self.scan_duration.observe(res.scan_s)
        self.used_bytes.set(res.used_bytes)
        self.capacity_bytes.set(res.capacity_bytes)
        self.usage_ratio.set(res.used_bytes / res.capacity_bytes if res.capacity_bytes else 0.0)
        self.temp_files.set(res.temp_files_seen)
