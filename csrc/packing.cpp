// Packing segment kernel (see cpt/sampling/packing.py for the Python face and the NumPy reference).
//
// The documents of a stream, in stream order, are one flat token sequence. Sample k spans the
// seq_length + add_extra tokens starting at flat token k * seq_length; its start is recorded as a
// boundary (position of the document in stream order, offset within it), exactly the loop of
// megatron-core's `build_sample_idx`. This kernel continues that loop from a cursor over a window of
// document lengths and stops before a boundary that the window cannot complete, so a stream of any
// length is packed in bounded memory, window after window.
#include "packing.h"

#include <pybind11/numpy.h>

#include <cstdint>
#include <stdexcept>
#include <tuple>

namespace py = pybind11;

namespace cpt {
namespace {

// Returns (samples produced, position, offset) of the cursor after the last produced boundary.
std::tuple<int64_t, int64_t, int64_t> pack_loop(const int32_t* lengths, int64_t m, int64_t pos,
                                                int64_t offset, int64_t seq_length, int64_t extra,
                                                int64_t* out, int64_t max_samples, int64_t base) {
  int64_t produced = 0;
  while (produced < max_samples) {
    int64_t p = pos, off = offset;
    int64_t remaining = seq_length + extra;
    bool complete = false;
    while (p < m) {
      const int64_t doc_len = static_cast<int64_t>(lengths[p]) - off;
      remaining -= doc_len;
      if (remaining <= 0) {
        off += remaining + doc_len - extra;
        complete = true;
        break;
      }
      ++p;
      off = 0;
    }
    if (!complete) break;  // the window ends before this boundary: the caller supplies more documents
    out[2 * produced] = base + p;
    out[2 * produced + 1] = off;
    ++produced;
    pos = p;
    offset = off;
  }
  return {produced, pos, offset};
}

std::tuple<int64_t, int64_t, int64_t> pack_segment(const py::array_t<int32_t, 0>& lengths, int64_t pos,
                                                   int64_t offset, int64_t seq_length, int64_t add_extra_token,
                                                   py::array_t<int64_t, 0>& out, int64_t base) {
  // The Python face (cpt.sampling.packing) validates values; here only what memory safety needs.
  if (lengths.ndim() != 1 || out.ndim() != 2 || out.shape(1) != 2) {
    throw std::invalid_argument("pack_segment: lengths must be 1-D and out of shape (n, 2)");
  }
  if (!(lengths.flags() & py::array::c_style) || !(out.flags() & py::array::c_style)) {
    throw std::invalid_argument("pack_segment: arrays must be C-contiguous");
  }
  if (seq_length < 1 || add_extra_token < 0 || pos < 0 || offset < 0) {
    throw std::invalid_argument("pack_segment: seq_length >= 1, add_extra_token >= 0, pos >= 0, offset >= 0");
  }
  const int32_t* l = lengths.data();
  const int64_t m = lengths.size();
  int64_t* o = out.mutable_data();
  const int64_t n = out.shape(0);
  py::gil_scoped_release release;
  return pack_loop(l, m, pos, offset, seq_length, add_extra_token, o, n, base);
}

}  // namespace

void register_packing(py::module_& m) {
  m.def("pack_segment", &pack_segment, py::arg("lengths"), py::arg("pos"), py::arg("offset"),
        py::arg("seq_length"), py::arg("add_extra_token"), py::arg("out"), py::arg("base"),
        "Continue megatron's sample-boundary loop from (pos, offset) over `lengths`; fill out[:k] with "
        "(base + position, offset) and return (k, pos, offset). See cpt/sampling/packing.py.");
}

}  // namespace cpt
