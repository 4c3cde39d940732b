// Packing segment kernel: documents in a given order -> sample boundaries (megatron build_sample_idx).
#pragma once
#include <pybind11/pybind11.h>

namespace cpt {

// Registers `pack_segment` on the module (called from module.cpp).
void register_packing(pybind11::module_& m);

}  // namespace cpt
