"""ATen's CPU exp, log, sqrt, erfinv and tanh without MKL's vector math (VM), whose code path no pin fixes.

On CPU, ATen computes these (and acos, asin, atan, cos, erf, erfc, log10,
log2, sin, tan) on float tensors with MKL's VM functions (vsExp, vdSqrt, ...).
VM picks its kernels by the CPU it finds and ignores MKL_CBWR: measured with
`perf`, an AMD EPYC (Zen 4) runs its generic EX kernels whatever MKL_CBWR or
MKL_ENABLE_INSTRUCTIONS say, and its results differ from other CPUs' in the
last bits (torch.sqrt on float64 is not even correctly rounded there). AdamW's
sqrt, trunc_normal_'s erfinv, the crop boxes' exp and sqrt and the k-NN's
exp all reach it, so the same pinned job gave another table on AMD than on
Intel.

A pinned CPU process replaces the CPU kernels of the five functions the study
reaches (functional, in-place and out= forms) with compositions of ATen
kernels that never call VM: Sleef's pow and ATen's rsqrt under the pinned AVX2
capability, and the scalar ndtri and xlogy, which call glibc's log. Each
computes in float64 and rounds once to the input's dtype, so float32 results
stay within about an ulp of the true value (float64 ones within a few ulps;
erfinv's within 2e-16 absolute near 0, where its (1 - |x|) / 2 rounds). Autograd is untouched (its formulas call
these kernels in turn). The other VM functions are left as they are: no job of
the study calls them (tests/test_vector_math.py checks that against every
method's training and the k-NN).
"""

import math
import warnings

import torch

REPLACED = ("exp", "log", "sqrt", "erfinv", "tanh")
LEFT_TO_MKL = ("acos", "asin", "atan", "cos", "erf", "erfc", "log10", "log2", "sin", "tan")
_library = None


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float64 (complex stays complex; integers and bools become floats, as ATen promotes them)."""
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() or x.is_complex() else torch.get_default_dtype()


def exp(x):
    return torch.pow(math.e, _wide(x))


def log(x):
    return torch.special.xlogy(1.0, _wide(x))


def sqrt(x):
    wide = _wide(x)
    return torch.pow(wide, 0.5) if wide.is_complex() else torch.reciprocal(torch.rsqrt(wide))


def erfinv(x):
    wide = _wide(x)
    # -ndtri((1 - |x|) / 2): 1 - |x| is exact for |x| >= 0.5, where erfinv is steep; near 0 it costs 1e-16 absolute
    return torch.copysign(-torch.special.ndtri((1 - wide.abs()) / 2) * math.sqrt(0.5), wide)


def tanh(x):
    wide = _wide(x)
    # tanh = expm1(2x) / (expm1(2x) + 2), odd, computed on |x| (no overflow: |x| > 20 rounds to +-1 in float64)
    magnitude = wide.abs().clamp(max=20.0)
    grown = torch.special.expm1(2 * magnitude)
    return torch.copysign(grown / (grown + 2), wide)


COMPUTE = {"exp": exp, "log": log, "sqrt": sqrt, "erfinv": erfinv, "tanh": tanh}


def _functional(compute):
    return lambda x: compute(x).to(_result_dtype(x))


def _in_place(compute):
    return lambda x: x.copy_(compute(x))


def _out(compute):
    def kernel(x, *, out):
        out.resize_(x.shape)
        return out.copy_(compute(x))

    return kernel


def replace() -> None:
    """Route this process's CPU exp, log, sqrt, erfinv and tanh around MKL's VM (idempotent; after torch loads)."""
    global _library
    if _library is not None:
        return
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():  # "Overriding a previously registered kernel": that is the point
        warnings.simplefilter("ignore")
        for name in REPLACED:
            compute = COMPUTE[name]
            library.impl(name, _functional(compute), "CPU")
            library.impl(f"{name}_", _in_place(compute), "CPU")
            library.impl(f"{name}.out", _out(compute), "CPU")
    _library = library


def replaced() -> bool:
    return _library is not None
