// Blending segment kernel: megatron's greedy error-minimising rule, continued across weight changes.
#pragma once
#include <pybind11/pybind11.h>

namespace cpt {

// Registers `blend_segment` on the module (called from module.cpp).
void register_blending(pybind11::module_& m);

}  // namespace cpt
