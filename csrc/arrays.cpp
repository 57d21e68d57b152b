#include "arrays.hpp"

#include <cmath>
#include <limits>

namespace strnn {

namespace {

template <class T>
bool read_as(const py::array& arr, BitMatrix& out) {
  const auto* base = static_cast<const char*>(arr.data());
  const auto s0 = arr.strides(0), s1 = arr.strides(1);
  for (std::size_t i = 0; i < out.rows(); ++i) {
    for (std::size_t j = 0; j < out.cols(); ++j) {
      T v;
      std::memcpy(&v, base + static_cast<std::ptrdiff_t>(i) * s0 + static_cast<std::ptrdiff_t>(j) * s1, sizeof(T));
      if (v == T(1)) {
        out.set(i, j);
      } else if (!(v == T(0))) {
        return false;  // NaN lands here too
      }
    }
  }
  return true;
}

}  // namespace

BitMatrix read_binary_matrix(const py::handle& obj, const std::string& name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy array, got " + std::string(py::str(py::type::of(obj))));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (arr.ndim() != 2)
    throw py::value_error(name + " must be 2-D (n_out x n_in), got ndim=" + std::to_string(arr.ndim()));
  const auto rows = arr.shape(0), cols = arr.shape(1);
  if (rows <= 0 || cols <= 0)
    throw py::value_error(name + " must not be empty, got shape (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + ")");
  if (rows > kMaxDim || cols > kMaxDim) throw py::value_error(name + " is too large: each side must be < 2**31");
  if (static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) > kMaxEntries)
    throw py::value_error(name + " is too large: more than 2**34 entries");
  py::dtype dt = arr.dtype();
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  const char order = dt.byteorder();
  if (order == '>')  // data from a big-endian file; numpy marks native order with '=' or '|'
    throw py::type_error(name + " has non-native byte order; convert it with .astype(native dtype)");

  const bool supported = (kind == 'b' && size == 1) ||
                         ((kind == 'u' || kind == 'i') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                         (kind == 'f' && (size == 4 || size == 8));
  if (!supported)
    throw py::type_error(name + " must hold bool, integer or float32/float64 values, got dtype " +
                         std::string(py::str(dt)));

  BitMatrix out(static_cast<std::size_t>(rows), static_cast<std::size_t>(cols));
  bool ok = false;
  {
    py::gil_scoped_release release;
    if (kind == 'b' || (kind == 'u' && size == 1)) ok = read_as<std::uint8_t>(arr, out);
    else if (kind == 'u' && size == 2) ok = read_as<std::uint16_t>(arr, out);
    else if (kind == 'u' && size == 4) ok = read_as<std::uint32_t>(arr, out);
    else if (kind == 'u' && size == 8) ok = read_as<std::uint64_t>(arr, out);
    else if (kind == 'i' && size == 1) ok = read_as<std::int8_t>(arr, out);
    else if (kind == 'i' && size == 2) ok = read_as<std::int16_t>(arr, out);
    else if (kind == 'i' && size == 4) ok = read_as<std::int32_t>(arr, out);
    else if (kind == 'i' && size == 8) ok = read_as<std::int64_t>(arr, out);
    else if (kind == 'f' && size == 4) ok = read_as<float>(arr, out);
    else ok = read_as<double>(arr, out);
  }
  if (!ok) throw py::value_error(name + " must be binary: every entry 0 or 1 (no NaN)");
  return out;
}

std::vector<std::size_t> read_hidden_sizes(const py::handle& obj, const std::string& name) {
  std::vector<std::size_t> sizes;
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
    throw py::type_error(name + " must be a sequence of positive integers");
  for (auto item : py::reinterpret_borrow<py::sequence>(obj)) {
    if (py::isinstance<py::bool_>(item) || !py::isinstance<py::int_>(item))
      throw py::type_error(name + " must contain integers, got " + std::string(py::repr(item)));
    long long v;
    try {
      v = item.cast<long long>();
    } catch (const py::cast_error&) {
      throw py::value_error(name + " entry " + std::string(py::repr(item)) + " is too large");
    }
    if (v <= 0) throw py::value_error(name + " entries must be positive, got " + std::to_string(v));
    if (v > kMaxDim) throw py::value_error(name + " entries must be < 2**31, got " + std::to_string(v));
    sizes.push_back(static_cast<std::size_t>(v));
  }
  return sizes;
}

py::array_t<std::uint8_t> zeros_u8(std::size_t rows, std::size_t cols) {
  // numpy.zeros allocates with calloc: the kernel hands out zero pages lazily, so sparse masks
  // never pay for a memset of the whole array.
  py::object zeros = py::module_::import("numpy").attr("zeros");
  return zeros(py::make_tuple(rows, cols), "uint8").cast<py::array_t<std::uint8_t>>();
}

MaskChain::MaskChain(std::size_t n_in, const std::vector<std::size_t>& widths, std::size_t n_out) {
  std::vector<std::size_t> fan = {n_in};
  fan.insert(fan.end(), widths.begin(), widths.end());
  fan.push_back(n_out);
  std::uint64_t used = 0;
  for (std::size_t l = 0; l + 1 < fan.size(); ++l) {
    const std::uint64_t n = static_cast<std::uint64_t>(fan[l]) * fan[l + 1];
    if (n / fan[l + 1] != fan[l] || (used += n) > kMaxEntries)
      throw py::value_error("hidden_sizes: the masks would hold more than 2**34 entries; use smaller hidden_sizes");
  }
  for (std::size_t l = 0; l + 1 < fan.size(); ++l) {
    arrays.push_back(zeros_u8(fan[l], fan[l + 1]));
    data.push_back(arrays.back().mutable_data());
  }
}

py::list MaskChain::to_list() const {
  py::list out;
  for (const auto& a : arrays) out.append(a);
  return out;
}

void write_transposed(const BitMatrix& m, std::uint8_t* out) {
  const std::size_t rows = m.rows();
  for (std::size_t i = 0; i < rows; ++i) m.for_each_set(i, [&](std::size_t j) { out[j * rows + i] = 1; });
}

}  // namespace strnn
