"""CPU feature detection for picking an int8 kernel target (no third-party dependencies)."""

from __future__ import annotations

import platform
from functools import lru_cache

INT8_TARGETS = ("avx2", "avx512", "avx512_vnni", "arm64")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU flags the kernel reports (empty where /proc/cpuinfo is unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_int8_target() -> str:
    """The best int8 target for this CPU: VNNI > AVX-512 > AVX2 on x86, arm64 on Arm."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    if "avx512_vnni" in flags or "avx512vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    if "avx512bw" in flags:
        return "avx512"
    return "avx2"


def int8_features() -> dict[str, bool]:
    """The flags that decide which int8 GEMM kernels onnxruntime can use here."""
    flags = cpu_flags()
    names = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
    return {name: name in flags for name in names}
