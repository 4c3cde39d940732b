"""Builds the C++ sampler kernels in csrc/ as the pybind11 extension `cpt._C`.

Everything else about the package lives in pyproject.toml; setuptools needs setup.py only to declare
the extension. The kernels have no torch dependency, so the build needs only a C++17 compiler.

The compile flags are part of the sample sequence's contract: the blender evaluates
`(B + w * d) - c` in IEEE double exactly in that order, so contraction into fused multiply-adds
(`-ffp-contract=off`) and value-changing math (`-fno-fast-math`, `-fno-unsafe-math-optimizations`)
are ruled out here, not only by a pragma in the source. (x86-64 does double arithmetic in SSE2
registers, so there is no x87 excess precision to rule out; g++ has no C++ `-fexcess-precision`.)
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

DETERMINISM_FLAGS = ["-ffp-contract=off", "-fno-fast-math", "-fno-unsafe-math-optimizations"]

ext_modules = [
    Pybind11Extension(
        "cpt._C",
        sorted(["csrc/module.cpp", "csrc/blending.cpp", "csrc/packing.cpp"]),
        cxx_std=17,
        extra_compile_args=["-O3", *DETERMINISM_FLAGS],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
