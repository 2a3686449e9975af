"""LoRA adapters of one simulated server: the registry behind ``/v1/models`` and ``/v1/*_lora_adapter``.

vLLM lists every loaded adapter as its own model (``parent`` = base model) and keeps at most ``max_loras``
adapters *running* in a batch at once; requests for further adapters wait. The engine models that limit and
the GPU slots (``sim/lora_slots.py``) and is the source of ``vllm:lora_requests_info``; the in-flight counts
here are the fallback for an engine built without slots. Response and error texts are vLLM's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lanterna.errors import InvalidRequest, ModelNotFound


class LoraInvalidInput(InvalidRequest):
    error_type = "InvalidUserInput"


@dataclass(frozen=True, slots=True)
class LoraAdapter:
    name: str
    path: str
    int_id: int


class LoraRegistry:
    """Loaded adapters plus in-flight counts per adapter (insertion order = first come, first running)."""

    def __init__(self, *, enabled: bool, max_loras: int = 1, max_adapters: int = 1024) -> None:
        self.enabled = enabled
        self.max_loras = max_loras
        self.max_adapters = max_adapters  # NOTE: bounds memory; vLLM's own list is unbounded
        self._adapters: dict[str, LoraAdapter] = {}
        self._next_id = 1
        self._in_flight: Counter[str] = Counter()

    def names(self) -> list[str]:
        return list(self._adapters)

    def adapters(self) -> list[LoraAdapter]:
        return list(self._adapters.values())

    def load(self, name: str, path: str) -> str:
        """-> vLLM's plain-text success message; raises vLLM's errors."""
        if not name or not path:
            raise LoraInvalidInput("Both 'lora_name' and 'lora_path' must be provided.")
        if name in self._adapters:
            raise LoraInvalidInput(f"The lora adapter '{name}' has already been loaded.")
        if len(self._adapters) >= self.max_adapters:
            raise LoraInvalidInput(f"Cannot load more than {self.max_adapters} LoRA adapters.")
        self._adapters[name] = LoraAdapter(name, path, self._next_id)
        self._next_id += 1
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> str:
        if not name:
            raise LoraInvalidInput("'lora_name' needs to be provided to unload a LoRA adapter.")
        if self._adapters.pop(name, None) is None:
            raise _LoraNotFound(f"The lora adapter '{name}' cannot be found.", param="lora_name")
        return f"Success: LoRA adapter '{name}' removed successfully."

    def started(self, name: str) -> None:
        self._in_flight[name] += 1

    def finished(self, name: str) -> None:
        self._in_flight[name] -= 1
        if self._in_flight[name] <= 0:
            del self._in_flight[name]

    def running_and_waiting(self) -> tuple[list[str], list[str]]:
        active = list(self._in_flight)
        return active[: self.max_loras], active[self.max_loras:]


class _LoraNotFound(ModelNotFound):
    pass
