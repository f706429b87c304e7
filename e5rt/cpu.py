"""CPU facts for picking int8 kernels and for labelling benchmark figures (no third-party dependencies)."""

from __future__ import annotations

import platform
from functools import lru_cache

INT8_TARGETS = ("avx2", "avx512", "avx512_vnni", "arm64")
# The flags that decide which int8 GEMM kernels onnxruntime can use, and what benchmarks record.
INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where it is unavailable)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break  # one processor is enough: they are alike
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU flags the kernel reports (x86 'flags', Arm 'Features')."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine()


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
    flags = cpu_flags()
    return {name: name in flags for name in INT8_FLAGS}


def exact_int8_needed(weight_type: str | None, target: str | None = None) -> bool:
    """Whether an int8 graph with these weights needs ONNX Runtime's exact u8u8 mode on the serving CPU.

    Signed (s8) weights run as u8 x s8 products; x86 without VNNI computes those with vpmaddubsw, whose int16
    intermediate saturates and can give wrong vectors. `session.x64quantprecision=1` makes ORT use u8 x u8 there
    (slower, exact). VNNI and Arm dot products accumulate in int32 and need nothing; unsigned weights never
    saturate. Decided from the CPU that loads the model, not the one that exported it.
    """
    if weight_type != "QInt8":
        return False
    return (target or detect_int8_target()) in ("avx2", "avx512")


# Linux's auxiliary vector: AT_HWCAP2 and its BF16 bit on aarch64 (asm/hwcap.h). /proc/cpuinfo's "bf16" feature
# says the same; the auxiliary vector is what the kernel (or an emulator such as qemu-user) hands the process.
_AT_HWCAP2 = 26
_HWCAP2_BF16 = 1 << 14


def arm64_bf16() -> bool:
    """Whether this is an Arm CPU with the BF16 instructions ONNX Runtime's bf16 fast-math GEMM needs."""
    if platform.machine().lower() not in ("arm64", "aarch64"):
        return False
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
        getauxval.restype = ctypes.c_ulong
        getauxval.argtypes = [ctypes.c_ulong]
        return bool(getauxval(_AT_HWCAP2) & _HWCAP2_BF16)
    except (OSError, AttributeError):  # not glibc: fall back to the kernel's feature list
        return "bf16" in cpu_flags()


def check_arm64_bf16() -> None:
    """Refuse bf16 fast math where the CPU lacks BF16: ONNX Runtime would compute NaNs there, not fail."""
    if not arm64_bf16():
        from .errors import ConfigError

        where = platform.machine()
        raise ConfigError(
            f"arm64_bf16 needs an Arm CPU with BF16 (Graviton 3/4, Neoverse V1/V2/N2, Ampere One, Apple M2+); this "
            f"CPU ({where}, {cpu_model()}) does not report it. Load without arm64_bf16 (fp32 or int8 run exactly)"
        )
