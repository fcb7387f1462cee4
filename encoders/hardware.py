"""What the machine is good at, from torch's own report: the dtype and thread count to run with.

bf16 matmuls are fast on CPUs with avx512_bf16 or AMX tiles (measured here: a SmolLM2 forward
2.6x faster than fp32 on an avx512_bf16 EPYC, bench/RESULTS.md) and on CUDA devices that support
bf16; on an AVX2-only CPU torch emulates them and bf16 is several times slower than fp32. Callers
that pick a dtype "auto" ask here instead of guessing.

An encoder's ``dtype`` says how its vectors are computed, never what they are: ``auto`` resolves
at load time (:func:`resolve_dtype`) and ``EMBER_DTYPE`` (the CLI's ``--dtype``) overrides the
config, so one saved encoder runs in bf16 on one host and fp32 on the next with the same
fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

DTYPE_ENV = "EMBER_DTYPE"
# What a config or EMBER_DTYPE may ask for; "int8" is fp32 weights with the Linear layers
# quantised dynamically (int8 weights, activations quantised per batch), for CPUs without bf16.
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "int8")

# torch's count at import, before any caller set one (see configure_threads)
_TORCH_DEFAULT_THREADS = torch.get_num_threads()
_threads_configured = False


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (avx512_bf16 or AMX): torch's own
    probe (``torch.cpu._is_*_supported``, cpuinfo-based) where this torch has it, else the
    kernel's /proc/cpuinfo flags."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    probes = [getattr(cpu, name) for name in checks if hasattr(cpu, name)]
    if probes:
        return any(bool(probe()) for probe in probes)
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


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


def requested_dtype(configured: str) -> str:
    """``EMBER_DTYPE`` when set, else the config's dtype; a bad value is an error naming it."""
    env = os.environ.get(DTYPE_ENV, "").strip()
    value = env or configured
    if value not in DTYPE_CHOICES:
        source = DTYPE_ENV if env else "dtype"
        raise ValueError(f"{source}={value!r}: expected one of {', '.join(DTYPE_CHOICES)}")
    return value


def resolve_dtype(
    configured: str, device: torch.device | str = "cpu", *, environment: bool = True
) -> str:
    """The dtype an encoder runs in on ``device``: ``auto`` is bfloat16 where bf16 matmuls are
    native (:func:`has_fast_bf16`) and float32 elsewhere; anything else is taken as asked.
    ``environment`` false ignores ``EMBER_DTYPE`` (a caller that needs exactly ``configured``)."""
    value = requested_dtype(configured) if environment else configured
    if value not in DTYPE_CHOICES:
        raise ValueError(f"dtype={value!r}: expected one of {', '.join(DTYPE_CHOICES)}")
    if value == "auto":
        return "bfloat16" if has_fast_bf16(device) else "float32"
    if value == "int8" and torch.device(device).type != "cpu":
        raise ValueError(f"dtype int8 (dynamic quantisation) runs on the CPU only, not {device}")
    return value


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else the cores available."""
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        value = 0
    return value if value > 0 else available_cores()


def configure_threads() -> int:
    """Give torch one intra-op thread per available core, once per process, unless the caller
    chose a count already (``torch.set_num_threads`` before the first encoder load, or
    ``OMP_NUM_THREADS``). torch's own default comes from its OpenMP / MKL runtime when torch
    starts and need not match the affinity mask (MKL builds count physical cores; a mask set
    after start is not seen); more threads than cores make them fight over one. Returns the
    count torch uses."""
    global _threads_configured
    if not _threads_configured:
        _threads_configured = True
        if torch.get_num_threads() == _TORCH_DEFAULT_THREADS:
            wanted = default_threads()
            if wanted != torch.get_num_threads():
                torch.set_num_threads(wanted)
    return torch.get_num_threads()
