"""LoRA adapter slots of one simulated engine: ``max_loras`` GPU slots, LRU eviction, a load cost per swap.

vLLM (V1) runs at most ``max_loras`` distinct adapters in one batch: a waiting request whose adapter would
be one too many is skipped this step (not head-of-line blocking), and the worker keeps the adapters of the
last batches in ``max_loras`` GPU slots, evicting the least recently used one that the batch does not need.
Activating an adapter that is not resident copies its weights in before the step runs, so the whole step
(every request in the batch) pays ``load_s``. Nothing here reads a clock: the engine asks and adds the cost.

Worked example, ``max_loras`` 2, slots shown oldest first::

    admit a       slots [a]      load a (cost)       running {a:1}
    admit b       slots [a, b]   load b (cost)       running {a:1, b:1}
    admit c       skipped: a and b are running (2 = max_loras); c waits
    a finishes                                       running {b:1}
    admit c       slots [b, c]   evict a, load c     running {b:1, c:1}
    admit b       slots [c, b]   resident: free      running {b:2, c:1}
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from lanterna.sim.profiles import ModelProfile

DEFAULT_LORA_BANDWIDTH_BPS = 2e9  # vLLM reads the safetensors from local disk, then copies into the slot
DEFAULT_LORA_OVERHEAD_S = 0.005  # per load: file open, tensor setup, slot copy launch


def adapter_bytes(rank: int, *, hidden_size: int, intermediate_size: int, kv_dim: int, num_layers: int,
                  dtype_bytes: int = 2) -> int:
    """Bytes of a LoRA adapter on all seven Llama projections: rank x (in + out) per matrix per layer."""
    h, i = hidden_size, intermediate_size
    per_layer = (h + h) + 2 * (h + kv_dim) + (h + h) + 2 * (h + i) + (i + h)
    return rank * per_layer * num_layers * dtype_bytes


def profile_load_s(profile: ModelProfile, rank: int, *, bandwidth_bps: float = DEFAULT_LORA_BANDWIDTH_BPS,
                   overhead_s: float = DEFAULT_LORA_OVERHEAD_S) -> float:
    """Seconds to load a rank-``rank`` adapter of ``profile``'s shape (one TP shard per device, loaded in parallel)."""
    n = adapter_bytes(rank, hidden_size=profile.hidden_size, intermediate_size=profile.intermediate_size,
                      kv_dim=profile.num_kv_heads * profile.head_dim, num_layers=profile.num_layers,
                      dtype_bytes=profile.dtype_bytes)
    return LoraLoadCost(n // max(1, profile.tp), bandwidth_bps, overhead_s).load_s


@dataclass(frozen=True, slots=True)
class LoraLoadCost:
    """Seconds to make a non-resident adapter usable: fixed overhead + bytes / bandwidth."""

    adapter_bytes: int = 0
    bandwidth_bps: float = DEFAULT_LORA_BANDWIDTH_BPS
    overhead_s: float = 0.0

    @property
    def load_s(self) -> float:
        return self.overhead_s + (self.adapter_bytes / self.bandwidth_bps if self.bandwidth_bps > 0 else 0.0)


class LoraSlots:
    """Resident adapters (LRU order) and the adapters of running requests (counted)."""

    __slots__ = ("max_loras", "load_s", "_resident", "_running", "num_loads", "num_evictions")

    def __init__(self, max_loras: int, load_s: float = 0.0) -> None:
        if max_loras < 1:
            raise ValueError(f"max_loras must be >= 1, got {max_loras}")
        self.max_loras = max_loras
        self.load_s = load_s
        self._resident: OrderedDict[str, None] = OrderedDict()
        self._running: Counter[str] = Counter()
        self.num_loads = 0
        self.num_evictions = 0

    def can_run(self, name: str) -> bool:
        """True when a request for ``name`` may join the batch without exceeding ``max_loras`` adapters."""
        return name in self._running or len(self._running) < self.max_loras

    def start(self, name: str) -> float:
        """A request for ``name`` starts running (caller checked ``can_run``); -> load seconds (0 if resident)."""
        running = self._running
        assert name in running or len(running) < self.max_loras  # NOTE: the engine's admission rule
        running[name] += 1
        resident = self._resident
        if name in resident:
            resident.move_to_end(name)
            return 0.0
        if len(resident) >= self.max_loras:
            # NOTE: at most max_loras - 1 other adapters run, so an idle resident one always exists
            victim = next(a for a in resident if a not in running)
            del resident[victim]
            self.num_evictions += 1
        resident[name] = None
        self.num_loads += 1
        return self.load_s

    def stop(self, name: str) -> None:
        """A request for ``name`` stopped running (finished, preempted or aborted); it stays resident."""
        n = self._running[name] - 1
        if n > 0:
            self._running[name] = n
        else:
            del self._running[name]

    def running(self) -> list[str]:
        return list(self._running)

    def resident(self) -> list[str]:
        """Resident adapters, least recently used first."""
        return list(self._resident)
