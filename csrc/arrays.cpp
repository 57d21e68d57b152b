#include "arrays.hpp"

#include <cmath>

namespace strnn {

namespace {

std::string bound_text(long long v) { return v == kMaxDim ? "2**31 - 1" : std::to_string(v); }

// Calls f(value) for every element of a 2-D array read through its strides with type T; stops
// and returns false at the first value that is neither 0 nor 1 (NaN included).
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

// The dtypes a binary matrix may hold: bool, integers, float32/float64, native byte order.
void check_dtype(const py::dtype& dt, const std::string& name) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (dt.byteorder() == '>')  // data from a big-endian file; numpy marks native order with '=' or '|'
    throw py::type_error(name + " has non-native byte order; convert it with .astype(native dtype)");
  const bool supported = (kind == 'b' && size == 1) ||
                         ((kind == 'u' || kind == 'i') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
                         (kind == 'f' && (size == 4 || size == 8));
  if (!supported)
    throw py::type_error(name + " must hold bool, integer or float32/float64 values, got dtype " +
                         std::string(py::str(dt)));
}

void check_shape(long long rows, long long cols, const std::string& name) {
  if (rows <= 0 || cols <= 0)
    throw py::value_error(name + " must not be empty, got shape (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + ")");
  if (rows > kMaxDim || cols > kMaxDim) throw py::value_error(name + " is too large: each side must be < 2**31");
  if (static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols) > kMaxEntries)
    throw py::value_error(name + " is too large: more than 2**34 entries");
}

BitMatrix read_dense(const py::handle& obj, const std::string& name) {
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (arr.ndim() != 2)
    throw py::value_error(name + " must be 2-D (n_out x n_in), got ndim=" + std::to_string(arr.ndim()));
  const auto rows = arr.shape(0), cols = arr.shape(1);
  check_shape(rows, cols, name);
  py::dtype dt = arr.dtype();
  check_dtype(dt, name);
  const char kind = dt.kind();
  const auto size = dt.itemsize();
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

// A 1-D array attribute of a CSR matrix, converted to T (a copy only when the dtype differs).
template <class T>
py::array_t<T, py::array::c_style | py::array::forcecast> csr_part(const py::handle& obj, const char* attr,
                                                                    const std::string& name) {
  py::object part = obj.attr(attr);
  if (!py::isinstance<py::array>(part)) throw py::type_error(name + "." + attr + " must be a numpy array");
  auto arr = py::reinterpret_borrow<py::array>(part);
  if (arr.ndim() != 1) throw py::value_error(name + "." + attr + " must be 1-D");
  const char kind = arr.dtype().kind();
  if (std::string(attr) == "data") check_dtype(arr.dtype(), name);
  else if (kind != 'i' && kind != 'u') throw py::type_error(name + "." + attr + " must hold integers");
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(part);
}

BitMatrix read_csr(const py::handle& obj, const std::string& name) {
  py::object shape = obj.attr("shape");
  if (!py::isinstance<py::tuple>(shape) || py::len(shape) != 2) throw py::value_error(name + ".shape must be a pair");
  auto shp = py::reinterpret_borrow<py::tuple>(shape);
  const long long rows = read_int(shp[0], name + ".shape[0]", 0, std::numeric_limits<long long>::max());
  const long long cols = read_int(shp[1], name + ".shape[1]", 0, std::numeric_limits<long long>::max());
  check_shape(rows, cols, name);
  const auto indptr = csr_part<std::int64_t>(obj, "indptr", name);
  const auto indices = csr_part<std::int64_t>(obj, "indices", name);
  const auto data = csr_part<double>(obj, "data", name);
  if (indptr.size() != rows + 1)
    throw py::value_error(name + ".indptr must have shape[0] + 1 = " + std::to_string(rows + 1) + " entries");
  const std::int64_t* p = indptr.data();
  const std::int64_t nnz = p[rows];
  if (p[0] != 0 || nnz > indices.size() || nnz > data.size())
    throw py::value_error(name + " is not a valid CSR matrix: indptr does not match indices/data");
  BitMatrix out(static_cast<std::size_t>(rows), static_cast<std::size_t>(cols));
  const std::int64_t* idx = indices.data();
  const double* val = data.data();
  std::string error;
  {
    py::gil_scoped_release release;
    for (long long i = 0; i < rows && error.empty(); ++i) {
      if (p[i + 1] < p[i]) {
        error = name + " is not a valid CSR matrix: indptr decreases";
        break;
      }
      for (std::int64_t t = p[i]; t < p[i + 1]; ++t) {
        if (idx[t] < 0 || idx[t] >= cols) {
          error = name + " is not a valid CSR matrix: column index " + std::to_string(idx[t]) + " out of range";
          break;
        }
        const auto j = static_cast<std::size_t>(idx[t]);
        if (val[t] == 0.0) continue;  // an explicitly stored zero
        if (val[t] != 1.0) {
          error = name + " must be binary: every entry 0 or 1 (no NaN)";
          break;
        }
        if (out.test(static_cast<std::size_t>(i), j)) {
          // scipy sums duplicates, so two stored ones are a 2.
          error = name + " has duplicate entries; call .sum_duplicates() first";
          break;
        }
        out.set(static_cast<std::size_t>(i), j);
      }
    }
  }
  if (!error.empty()) throw py::value_error(error);
  return out;
}

template <class T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  // The array owns the vector's buffer: no copy of what may be hundreds of MB of indices.
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* ptr) { delete static_cast<std::vector<T>*>(ptr); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, {static_cast<py::ssize_t>(sizeof(T))}, heap->data(),
                        owner);
}

py::array_t<std::uint8_t> zeros_u8(std::size_t rows, std::size_t cols) {
  // numpy.zeros allocates with calloc: the kernel hands out zero pages lazily, so sparse masks
  // never pay for a memset of the whole array.
  py::object zeros = py::module_::import("numpy").attr("zeros");
  return zeros(py::make_tuple(rows, cols), "uint8").cast<py::array_t<std::uint8_t>>();
}

}  // namespace

long long read_int(const py::handle& obj, const std::string& name, long long lo, long long hi) {
  if (py::isinstance<py::bool_>(obj) || !py::isinstance<py::int_>(obj))
    throw py::type_error(name + " must be an int, got " + std::string(py::repr(obj)));
  long long v;
  try {
    v = obj.cast<long long>();
  } catch (const py::cast_error&) {
    throw py::value_error(name + " must be in [" + bound_text(lo) + ", " + bound_text(hi) + "], got " +
                          std::string(py::repr(obj)) + " (too large)");
  }
  if (v < lo || v > hi)
    throw py::value_error(name + " must be in [" + bound_text(lo) + ", " + bound_text(hi) + "], got " +
                          std::to_string(v));
  return v;
}

BitMatrix read_binary_matrix(const py::handle& obj, const std::string& name) {
  if (py::isinstance<py::array>(obj)) return read_dense(obj, name);
  if (py::hasattr(obj, "format") && py::hasattr(obj, "indptr")) {
    const std::string format = py::str(obj.attr("format"));
    if (format != "csr")
      throw py::type_error(name + " is a sparse matrix in format '" + format + "'; convert it with .tocsr()");
    return read_csr(obj, name);
  }
  throw py::type_error(name + " must be a numpy array or a scipy CSR matrix, got " +
                       std::string(py::str(py::type::of(obj))));
}

std::vector<BitMatrix> read_mask_chain(const py::handle& obj) {
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::isinstance<py::array>(obj))
    throw py::type_error("masks must be a list of 2-D arrays");
  auto seq = py::reinterpret_borrow<py::sequence>(obj);
  if (py::len(seq) == 0) throw py::value_error("masks must not be empty");
  std::vector<BitMatrix> chain;
  std::size_t idx = 0;
  for (auto item : seq) {
    chain.push_back(read_binary_matrix(item, "masks[" + std::to_string(idx) + "]"));
    if (idx > 0 && chain[idx - 1].cols() != chain[idx].rows())
      throw py::value_error("masks[" + std::to_string(idx - 1) + "] has " + std::to_string(chain[idx - 1].cols()) +
                            " columns but masks[" + std::to_string(idx) + "] has " +
                            std::to_string(chain[idx].rows()) + " rows; masks are (fan_in x fan_out), input first");
    ++idx;
  }
  return chain;
}

std::vector<std::size_t> read_hidden_sizes(const py::handle& obj, const std::string& name) {
  std::vector<std::size_t> sizes;
  if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
    throw py::type_error(name + " must be a sequence of positive integers");
  for (auto item : py::reinterpret_borrow<py::sequence>(obj))
    sizes.push_back(static_cast<std::size_t>(read_int(item, name + " entry", 1, kMaxDim)));
  return sizes;
}

std::uint64_t read_max_bytes(const py::handle& obj) {
  return static_cast<std::uint64_t>(read_int(obj, "max_bytes", 0, std::numeric_limits<long long>::max()));
}

MaskChain::MaskChain(std::size_t n_in, const std::vector<std::size_t>& widths, std::size_t n_out, bool sparse,
                     std::uint64_t max_bytes)
    : sparse_(sparse), max_bytes_(max_bytes) {
  fan_ = {n_in};
  fan_.insert(fan_.end(), widths.begin(), widths.end());
  fan_.push_back(n_out);
  if (sparse_) {
    csr_.resize(size());
    return;
  }
  std::uint64_t used = 0;
  for (std::size_t l = 0; l < size(); ++l) {
    const std::uint64_t n = static_cast<std::uint64_t>(fan_[l]) * fan_[l + 1];
    if (n / fan_[l + 1] != fan_[l] || (used += n) > kMaxEntries)
      throw py::value_error("hidden_sizes: the masks would hold more than 2**34 entries; use smaller hidden_sizes");
  }
  if (max_bytes_ && used > max_bytes_)
    throw py::value_error("hidden_sizes: the dense masks would take " + std::to_string(used) +
                          " bytes, above max_bytes=" + std::to_string(max_bytes_) + "; pass a larger max_bytes");
  for (std::size_t l = 0; l < size(); ++l) {
    dense_.push_back(zeros_u8(fan_[l], fan_[l + 1]));
    data_.push_back(dense_.back().mutable_data());
  }
}

void MaskChain::account(std::size_t l, std::uint64_t bytes) {
  used_bytes_ += bytes;
  if (max_bytes_ && used_bytes_ > max_bytes_)
    throw py::value_error("hidden_sizes: the sparse masks up to masks[" + std::to_string(l) + "] would take " +
                          std::to_string(used_bytes_) + " bytes, above max_bytes=" + std::to_string(max_bytes_) + "; pass a larger max_bytes");
}

py::list MaskChain::to_list() {
  py::list out;
  for (std::size_t l = 0; l < size(); ++l) {
    if (!sparse_) {
      out.append(dense_[l]);
      continue;
    }
    Csr& c = csr_[l];
    py::tuple shape = py::make_tuple(fan_[l], fan_[l + 1]);
    if (c.wide) out.append(py::make_tuple(to_numpy(std::move(c.indptr64)), to_numpy(std::move(c.indices64)), shape));
    else out.append(py::make_tuple(to_numpy(std::move(c.indptr32)), to_numpy(std::move(c.indices32)), shape));
  }
  return out;
}

}  // namespace strnn
