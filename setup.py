"""Builds the C++ sampler kernels in csrc/ as the pybind11 extension `cpt._C`.

Everything else about the package lives in pyproject.toml; setuptools needs setup.py only to declare
the extension. The kernels have no torch dependency, so the build needs only a C++17 compiler.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "cpt._C",
        sorted(["csrc/module.cpp", "csrc/blending.cpp", "csrc/packing.cpp"]),
        cxx_std=17,
        extra_compile_args=["-O3"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
