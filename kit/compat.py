"""The one place kit touches private names of its dependencies, each because no public API does the
job (checked against torch 2.11-2.14 and accelerate 1.x). Anything here may break on an upgrade;
each function degrades to a safe answer rather than failing.

- cpu_has_bf16: torch has no public query for a CPU's bf16 instructions (torch.cpu's
  `_is_avx512_bf16_supported`, `_is_amx_tile_supported`); missing -> False (fp32 training).
- reset_accelerate_precision: accelerate keeps one process-wide AcceleratorState and refuses an
  Accelerator with another mixed precision once it exists; several runs in one process (a recipe
  training members in-process, the tests) need different precisions, so the shared state is reset
  between them (never under DDP: the process group must survive).
"""
from __future__ import annotations

import torch
from accelerate.state import AcceleratorState


def cpu_has_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX512-BF16 or AMX). Measured on such a CPU (2-core AMD
    EPYC): bf16 autocast trained the quick recipes 1.3-1.9x faster at the same accuracy."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def reset_accelerate_precision(precision: str) -> None:
    """Forget accelerate's process-wide state when it holds another mixed precision (single process only)."""
    state = getattr(AcceleratorState, "_shared_state", None)
    if state and state.get("_mixed_precision", state.get("mixed_precision")) not in (None, precision) and \
            str(state.get("distributed_type", "NO")).endswith("NO") and hasattr(AcceleratorState, "_reset_state"):
        AcceleratorState._reset_state()
