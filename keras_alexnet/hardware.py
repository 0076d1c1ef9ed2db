"""What this machine's CPU does in hardware: the SIMD flags that pick fp32, int8 and bf16 kernels.

Read from /proc/cpuinfo (Linux), with no TensorFlow: oneDNN picks its kernels by the same
flags, so they say whether bf16 training or VNNI int8 inference can beat float32 here.
"""

from pathlib import Path

# The flags that decide which kernels run: fp32 AVX2 / AVX-512, int8 VNNI, bf16, AMX.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# Native bf16 dot products (AVX512_BF16's vdpbf16ps, AMX tiles): without one, oneDNN converts
# bf16 to float32 around every product and mixed_bfloat16 runs slower than float32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo=CPUINFO):
    """The first CPU's feature flags, as a set (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def simd_summary(flags):
    """The decisive SIMD flags among `flags`, space-separated, e.g. 'avx2 fma avx512f'."""
    return " ".join(f for f in SIMD_FLAGS if f in flags) or "none of AVX2+"


def has_native_bf16(flags):
    """Whether a CPU with `flags` multiplies bf16 in hardware."""
    return any(flag in flags for flag in BF16_FLAGS)


def bf16_warning(precision, on_gpu, flags):
    """A line for the training log when bf16 will run emulated on this CPU; else None."""
    if precision != "mixed_bfloat16" or on_gpu or has_native_bf16(flags):
        return None
    return (
        "mixed_bfloat16: this CPU has no native bf16 (AVX512_BF16 or AMX), so each bf16 "
        "product is emulated and training runs slower than in float32 here"
    )
