"""What the machine's matrix units are good at, from torch's own report.

bf16 matmuls are fast on CPUs with avx512_bf16 or AMX tiles (measured here: a SmolLM2 forward
2.6x faster than fp32 on an avx512_bf16 EPYC, bench/RESULTS.md) and on CUDA devices that support
bf16; on an AVX2-only CPU torch emulates them and bf16 is several times slower than fp32. Callers
that pick a dtype "auto" ask here instead of guessing.
"""

from __future__ import annotations

import torch


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (avx512_bf16 or AMX)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def has_fast_bf16(device: torch.device | str = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_fast_bf16()
    return False


def cpu_capability() -> str:
    """torch's name for the widest vector ISA it dispatches to (``AVX2``, ``AVX512``, ...),
    with ``+bf16`` / ``+amx`` when those units exist: recorded next to speed figures."""
    name = str(torch.backends.cpu.get_cpu_capability())
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        name += "+bf16"
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        name += "+amx"
    return name
