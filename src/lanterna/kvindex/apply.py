"""Turn ZMQ KV-event messages into index updates, with per-endpoint sequence tracking (pure).

The adapter (``zmq_source``) hands every received message to ``EventApplier.ingest``; this module
decides what the message means for the endpoint's stream:

- in order (seq = last + 1, or the very first message at seq 0): apply it;
- duplicate (seq <= last right after a replay, whose tail overlaps the live stream): skip;
- restart (seq went backwards otherwise: the engine restarted and numbering began at 0): the old
  engine's cache is gone, so clear the endpoint, then treat the message as the first of a new stream;
- gap (seq > last + 1, or a first message at seq > 0): ask the adapter to replay from last + 1 when the
  publisher has a replay socket (``Verdict.REPLAY``; the adapter then calls ``apply_replayed`` for each
  replayed message and ``finish_replay``), otherwise clear the endpoint's entries and rebuild from here.

Malformed input (wrong frame count, bad sequence frame, undecodable payload, unknown event type,
bad token ids) is counted per reason and dropped; it never touches other endpoints' entries.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec

from lanterna.kvindex.index import KVIndex
from lanterna.kvindex.ingest import decode_hot
from lanterna.protocol.kv_events import (
    KVEvent,
    KVEventBatch,
    KVEventDecodeError,
    decode_payload,
    decode_seq,
)

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REPLAY = "replay"  # the adapter must replay from ``Stream.last_seq + 1`` then call finish_replay
    MALFORMED = "malformed"


@dataclass(slots=True)
class Stream:
    """One endpoint's event stream as seen so far."""

    last_seq: int = -1
    after_replay: bool = False
    pending: tuple[int, bytes] | None = None  # the message that revealed a gap, applied after replay
    reconnected: bool = False  # the transport reconnected: an out-of-order next seq means a new engine
    last_batch_ts: float = 0.0
    lag_s: float = 0.0
    num_messages: int = 0  # live messages received from this endpoint (well-formed or not)


@dataclass(slots=True)
class ApplierCounters:
    num_messages: int = 0
    num_gaps: int = 0
    num_restarts: int = 0
    num_replays: int = 0
    num_duplicates: int = 0
    num_resyncs_without_replay: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by event type
    malformed: Counter[str] = field(default_factory=Counter)  # by reason


_generic = msgspec.msgpack.Decoder()


def _decode_tolerant(payload: bytes) -> tuple[KVEventBatch, int]:
    """Decode a payload; on failure retry event by event so one unknown event type costs only itself."""
    try:
        return decode_payload(payload), 0
    except KVEventDecodeError:
        raw = _generic.decode(payload)  # raises msgspec.DecodeError for garbage
        if not (isinstance(raw, list) and len(raw) >= 2 and isinstance(raw[1], list)):
            raise
        events: list[KVEvent] = []
        bad = 0
        for ev in raw[1]:
            try:
                events.append(msgspec.convert(ev, KVEvent))
            except (msgspec.ValidationError, TypeError):
                bad += 1
        ts = float(raw[0]) if isinstance(raw[0], int | float) else 0.0
        return KVEventBatch(ts, events, None), bad


class EventApplier:
    """Applies events to one ``KVIndex``; one instance per gateway replica."""

    def __init__(self, index: KVIndex, has_replay: dict[str, bool] | None = None) -> None:
        self.index = index
        self.counters = ApplierCounters()
        self.streams: dict[str, Stream] = {}
        self._has_replay = has_replay if has_replay is not None else {}

    def add_endpoint(self, endpoint_id: str, model: str, *, replay: bool = False, storage: str | None = None) -> None:
        self.index.add_endpoint(endpoint_id, model, storage)
        self.streams[endpoint_id] = Stream()
        self._has_replay[endpoint_id] = replay

    def remove_endpoint(self, endpoint_id: str) -> None:
        self.index.remove_endpoint(endpoint_id)
        self.streams.pop(endpoint_id, None)
        self._has_replay.pop(endpoint_id, None)

    def _malformed(self, endpoint_id: str, reason: str) -> Verdict:
        self.counters.malformed[reason] += 1
        log.warning("kv_event_malformed", extra={"endpoint": endpoint_id, "reason": reason})
        return Verdict.MALFORMED

    def ingest(self, endpoint_id: str, frames: list[bytes], now_wall: float = 0.0) -> Verdict:
        """Handle one live message (``[topic, seq, payload]``)."""
        st = self.streams.get(endpoint_id)
        if st is None:
            return self._malformed(endpoint_id, "unknown_endpoint")
        self.counters.num_messages += 1
        st.num_messages += 1
        if len(frames) != 3:
            return self._malformed(endpoint_id, "frame_count")
        try:
            seq = decode_seq(frames[1])
        except KVEventDecodeError:
            return self._malformed(endpoint_id, "seq_frame")
        payload = frames[2]
        if st.reconnected:
            st.reconnected = False
            if st.last_seq >= 0 and seq != st.last_seq + 1:
                # after a reconnect the publisher may be a new process whose first messages we missed
                # (ZMQ's slow joiner), so seq can even be above last: not a gap in the old stream
                self._restart(endpoint_id, st, seq)
        if seq <= st.last_seq:
            if st.after_replay:
                self.counters.num_duplicates += 1
                return Verdict.DUPLICATE
            self._restart(endpoint_id, st, seq)
        st.after_replay = False
        if seq != st.last_seq + 1:
            self.counters.num_gaps += 1
            if self._has_replay.get(endpoint_id):
                st.pending = (seq, payload)
                self.counters.num_replays += 1
                return Verdict.REPLAY
            if st.last_seq >= 0:  # a first message at seq > 0 has nothing stale to drop
                self.counters.num_resyncs_without_replay += 1
                self.index.clear_endpoint(endpoint_id)
        return self._apply(endpoint_id, st, seq, payload, now_wall)

    def _restart(self, endpoint_id: str, st: Stream, seq: int) -> None:
        self.counters.num_restarts += 1
        log.info("kv_publisher_restart", extra={"endpoint": endpoint_id, "seq": seq, "last": st.last_seq})
        self.index.clear_endpoint(endpoint_id)
        st.last_seq = -1

    def mark_reconnected(self, endpoint_id: str) -> None:
        """The adapter saw the transport reconnect; the next message decides restart vs. same stream."""
        st = self.streams.get(endpoint_id)
        if st is not None:
            st.reconnected = True

    def apply_replayed(self, endpoint_id: str, seq: int, payload: bytes, now_wall: float = 0.0) -> None:
        """A message from the replay socket: applied only if newer than what we hold."""
        st = self.streams.get(endpoint_id)
        if st is None or seq <= st.last_seq:
            return
        if st.last_seq >= 0 and seq != st.last_seq + 1:  # the replay buffer itself has a hole
            self.counters.num_resyncs_without_replay += 1
            self.index.clear_endpoint(endpoint_id)
        self._apply(endpoint_id, st, seq, payload, now_wall)

    def finish_replay(self, endpoint_id: str, now_wall: float = 0.0) -> None:
        """After a replay (complete or failed): apply the message that revealed the gap if still new."""
        st = self.streams.get(endpoint_id)
        if st is None:
            return
        pending, st.pending = st.pending, None
        if pending is not None and pending[0] > st.last_seq:
            if st.last_seq >= 0 and pending[0] != st.last_seq + 1:
                self.counters.num_resyncs_without_replay += 1
                self.index.clear_endpoint(endpoint_id)
            self._apply(endpoint_id, st, pending[0], pending[1], now_wall)
        st.after_replay = True

    def _apply(self, endpoint_id: str, st: Stream, seq: int, payload: bytes, now_wall: float) -> Verdict:
        st.last_seq = seq
        try:  # the common payload (GPU tier, int hashes, no LoRA) decodes into lean Structs
            hot = decode_hot(payload)
        except msgspec.DecodeError:
            hot = None
        if hot is not None:
            ts = hot.ts
            self.index.apply_hot(
                endpoint_id, hot.events, self.counters.events, lambda: self._malformed(endpoint_id, "event_fields")
            )
        else:
            try:
                batch, bad = _decode_tolerant(payload)
            except (KVEventDecodeError, msgspec.DecodeError):
                return self._malformed(endpoint_id, "payload")
            if bad:
                self.counters.malformed["unknown_event"] += bad
            ts = batch.ts
            self.apply_events(endpoint_id, batch.events)
        st.last_batch_ts = ts
        if now_wall:
            st.lag_s = max(0.0, now_wall - ts)
        return Verdict.APPLIED

    def apply_events(self, endpoint_id: str, events: list[Any]) -> None:
        """Apply decoded events in order (also used directly by the in-process virtual cluster).

        One call per payload: ``KVIndex.apply_batch`` keeps the per-event cost low for the many
        one-block events vLLM sends while decoding."""
        self.index.apply_batch(
            endpoint_id, events, self.counters.events, lambda: self._malformed(endpoint_id, "event_fields")
        )
