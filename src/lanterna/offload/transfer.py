"""Batched KV block copies between a device cache and a pinned host pool (the ``[torch]`` extra).

Each layer is a block-major pair ``device[num_gpu_blocks, ...]`` / ``host[num_host_blocks, ...]`` (same
block shape and dtype). One transfer moves any set of scattered blocks with a constant number of tensor
ops per layer, never a Python loop per block:

  device -> host:  index_select on the device into a contiguous device staging buffer, one DMA into
                   pinned host memory, then a row scatter into the host pool (numpy: a memcpy per row) (skipped, and the DMA lands in
                   the pool itself, when the host slots are one contiguous run: allocate them that way);
  host -> device:  the mirror image (host gather into pinned staging, one DMA, device index_copy_).

On CUDA everything is queued on a dedicated stream that first waits for the compute stream (the KV it
copies was written there); ``TransferHandle`` wraps the CUDA event recorded at the end. Two staging sets
alternate, and a set is reused only after its previous transfer's event, so consecutive transfers overlap.
On a CPU-only machine the same code runs synchronously (that is how CI tests it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

NUM_STAGING_SETS = 2


@dataclass(slots=True)
class _Chunk:
    """One staged copy: the event that ends it on the GPU, then host-side work left to do after it."""

    event: torch.cuda.Event | None = None
    finish: list[Callable[[], None]] = field(default_factory=list)

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()
        while self.finish:
            self.finish.pop()()


@dataclass(slots=True)
class TransferHandle:
    """An issued transfer; ``wait`` blocks until the data is in place (running any host-side scatter)."""

    chunks: list[_Chunk] = field(default_factory=list)

    def done(self) -> bool:
        if any(c.event is not None and not c.event.query() for c in self.chunks):
            return False
        self.wait()
        return True

    def wait(self) -> None:
        for c in self.chunks:
            c.wait()


def _contiguous_run(idx: torch.Tensor) -> int | None:
    """The first index when ``idx`` is ``a, a+1, ..., a+n-1`` (so a slice can replace a gather), else None."""
    n = idx.numel()
    if n == 0:
        return None
    first = int(idx[0])
    if n == 1 or bool(torch.equal(idx, torch.arange(first, first + n, dtype=idx.dtype))):
        return first
    return None


def host_pool(like: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """A host pool for device layer ``like``: pinned when CUDA is up, so DMAs into it run at full speed."""
    pin = like.device.type == "cuda"
    return torch.empty((num_blocks, *like.shape[1:]), dtype=like.dtype, pin_memory=pin)


class BlockTransfer:
    """Owns staging buffers and the copy stream for one set of layers.

    Protocol: ``to_host``/``to_device`` return at once with a handle; ``wait()`` (or ``done()`` returning
    True) before reading the destination blocks on the host, or before reusing the source blocks.
    """

    def __init__(self, layers: Sequence[tuple[torch.Tensor, torch.Tensor]], max_blocks: int = 256) -> None:
        if not layers:
            raise ValueError("no layers")
        for dev, host in layers:
            if dev.shape[1:] != host.shape[1:] or dev.dtype != host.dtype:
                raise ValueError(f"layer mismatch: {tuple(dev.shape)} {dev.dtype} vs {tuple(host.shape)} {host.dtype}")
        self.layers = list(layers)
        self.device = layers[0][0].device
        self.max_blocks = max_blocks
        cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if cuda else None
        # per staging set, per layer: (device staging, pinned host staging)
        self._staging = [[(torch.empty((max_blocks, *d.shape[1:]), dtype=d.dtype, device=self.device),
                           torch.empty((max_blocks, *d.shape[1:]), dtype=d.dtype, pin_memory=True))
                          for d, _ in layers] for _ in range(NUM_STAGING_SETS if cuda else 0)]
        self._last: list[_Chunk | None] = [None] * NUM_STAGING_SETS
        self._turn = 0

    def to_host(self, device_blocks: Sequence[int] | torch.Tensor, host_blocks: Sequence[int] | torch.Tensor
                ) -> TransferHandle:
        return self._transfer(device_blocks, host_blocks, to_host=True)

    def to_device(self, host_blocks: Sequence[int] | torch.Tensor, device_blocks: Sequence[int] | torch.Tensor
                  ) -> TransferHandle:
        return self._transfer(device_blocks, host_blocks, to_host=False)

    def _transfer(self, dev_ids: Sequence[int] | torch.Tensor, host_ids: Sequence[int] | torch.Tensor,
                  *, to_host: bool) -> TransferHandle:
        d_idx = torch.as_tensor(dev_ids, dtype=torch.long)
        h_idx = torch.as_tensor(host_ids, dtype=torch.long)
        if d_idx.numel() != h_idx.numel():
            raise ValueError(f"{d_idx.numel()} device blocks vs {h_idx.numel()} host blocks")
        handle = TransferHandle()
        for start in range(0, d_idx.numel(), self.max_blocks):  # chunks of max_blocks, not blocks
            handle.chunks.append(self._chunk(d_idx[start:start + self.max_blocks],
                                             h_idx[start:start + self.max_blocks], to_host))
        return handle

    def _chunk(self, d_idx: torch.Tensor, h_idx: torch.Tensor, to_host: bool) -> _Chunk:
        turn, self._turn = self._turn, (self._turn + 1) % NUM_STAGING_SETS
        last = self._last[turn]
        if last is not None:
            last.wait()  # NOTE: a staging set is reused only after its previous copy has finished
        n = d_idx.numel()
        h_first = _contiguous_run(h_idx)
        chunk = _Chunk()
        stream = self._stream
        if stream is None:  # CPU "device": one gather/scatter per layer, straight between the two tensors
            for dev, host in self.layers:
                src, dst = (dev, host) if to_host else (host, dev)
                s_idx, t_idx = (d_idx, h_idx) if to_host else (h_idx, d_idx)
                t_first = h_first if to_host else _contiguous_run(d_idx)
                if t_first is not None:
                    np.take(_rows(src), s_idx.numpy(), axis=0, out=_rows(dst)[t_first:t_first + n])
                else:
                    _rows(dst)[t_idx.numpy()] = _rows(src)[s_idx.numpy()]
            self._last[turn] = chunk
            return chunk
        d_idx_dev = d_idx.to(self.device, non_blocking=True)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for (dev, host), (d_stage, h_stage) in zip(self.layers, self._staging[turn], strict=True):
                h_buf = host[h_first:h_first + n] if h_first is not None else h_stage[:n]
                if to_host:
                    torch.index_select(dev, 0, d_idx_dev, out=d_stage[:n])
                    h_buf.copy_(d_stage[:n], non_blocking=True)
                    if h_first is None:
                        chunk.finish.append(_scatter(host, h_idx, h_stage, n))
                else:
                    if h_first is None:
                        np.take(_rows(host), h_idx.numpy(), axis=0, out=_rows(h_stage)[:n])
                    d_stage[:n].copy_(h_buf, non_blocking=True)
                    dev.index_copy_(0, d_idx_dev, d_stage[:n])
            chunk.event = torch.cuda.Event()
            chunk.event.record(stream)
        self._last[turn] = chunk
        return chunk


def _rows(t: torch.Tensor) -> np.ndarray:  # type: ignore[type-arg, unused-ignore]
    """A host tensor as numpy uint8 rows (any dtype, bf16 included): numpy's row gather/scatter is a memcpy
    per row, several times faster than torch's CPU index_select/index_copy_ for rows of 64 KiB and up."""
    rows: np.ndarray = t.view(t.shape[0], -1).view(torch.uint8).numpy()  # type: ignore[type-arg, unused-ignore]
    return rows


def _scatter(host: torch.Tensor, h_idx: torch.Tensor, h_stage: torch.Tensor, n: int) -> Callable[[], None]:
    def run() -> None:
        _rows(host)[h_idx.numpy()] = _rows(h_stage)[:n]

    return run
