"""The CPU flags that decide bf16 and int8 kernels, read from /proc/cpuinfo."""

from keras_alexnet import hardware

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16
processor\t: 1
flags\t\t: fpu sse2
"""


def test_the_first_cpus_flags_are_read(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    flags = hardware.cpu_flags(tmp_path / "cpuinfo")
    assert {"avx2", "avx512_bf16"} <= flags and "fpu" in flags
    assert hardware.simd_summary(flags) == "avx2 fma avx512f avx512_vnni avx512_bf16"
    assert hardware.cpu_flags(tmp_path / "absent") == frozenset()


def test_bf16_is_flagged_only_where_it_is_emulated():
    avx2, bf16, amx = {"avx2", "fma"}, {"avx512f", "avx512_bf16"}, {"amx_bf16", "amx_tile"}
    warning = hardware.bf16_warning("mixed_bfloat16", False, avx2)
    assert warning.startswith("mixed_bfloat16: this CPU has no native bf16")
    assert hardware.bf16_warning("mixed_bfloat16", False, bf16) is None
    assert hardware.bf16_warning("mixed_bfloat16", False, amx) is None
    assert hardware.bf16_warning("mixed_bfloat16", True, avx2) is None  # a GPU does bf16
    assert hardware.bf16_warning("float32", False, avx2) is None
    assert hardware.simd_summary(set()) == "none of AVX2+"
