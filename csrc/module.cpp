// The pybind11 module `cpt._C`: thin C++ kernels behind the Python face in cpt/sampling/.
// Kernels fill caller-allocated numpy arrays and never touch torch (see STYLE.md, rule 8).
#include <pybind11/pybind11.h>

#include "blending.h"
#include "packing.h"

namespace py = pybind11;

// Bumped whenever a kernel's output for the same input changes; cache keys include it.
constexpr int kKernelVersion = 1;

PYBIND11_MODULE(_C, m) {
  m.doc() = "cpt C++ kernels (sampling, packing)";
  m.attr("KERNEL_VERSION") = kKernelVersion;
  cpt::register_blending(m);
  cpt::register_packing(m);
}
