// CSV text of float64 rows, each value exactly as Python's repr() writes it (the shortest text
// that reads back to the same double). Python's own repr costs ~0.6 s per 65,536 x 15 block, ten
// times the sampling it writes out; std::to_chars (Ryu-style shortest digits) does it in C++.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>

#include <pybind11/numpy.h>

#include "bindings.hpp"

namespace strnn {

namespace py = pybind11;

namespace {

// Appends repr(value) for a finite double. Python's repr ('r' format): the shortest round-trip
// digits, positional when the decimal exponent is in [-4, 16), else d.ddde+XX (two exponent
// digits at least); integral positional values end in ".0".
void append_repr(std::string& out, double value) {
  char sci[40];
  // Scientific form gives the shortest digits and the exponent; the layout is then Python's.
  auto res = std::to_chars(sci, sci + sizeof(sci), value, std::chars_format::scientific);
  const char* end = res.ptr;
  const char* p = sci;
  if (*p == '-') {
    out.push_back('-');
    ++p;
  }
  char digits[24];
  int n = 0;
  const char* e = p;
  for (; e < end && *e != 'e'; ++e)
    if (*e != '.') digits[n++] = *e;
  int exp = 0;  // to_chars writes no terminating NUL: parse "e[+-]dd" within [e, end)
  std::from_chars(e + 1 + (e[1] == '+'), end, exp);
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out.append("0.");
      out.append(static_cast<std::size_t>(-exp - 1), '0');
      out.append(digits, n);
    } else if (n <= exp + 1) {
      out.append(digits, n);
      out.append(static_cast<std::size_t>(exp + 1 - n), '0');
      out.append(".0");
    } else {
      out.append(digits, exp + 1);
      out.push_back('.');
      out.append(digits + exp + 1, n - exp - 1);
    }
  } else {
    out.push_back(digits[0]);
    if (n > 1) {
      out.push_back('.');
      out.append(digits + 1, n - 1);
    }
    char tail[8];
    const int k = std::snprintf(tail, sizeof(tail), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out.append(tail, k);
  }
}

py::bytes format_csv_rows(const py::array_t<double, py::array::c_style | py::array::forcecast>& values) {
  if (values.ndim() != 2) throw py::value_error("values must be a 2-D float64 array (rows x columns)");
  const auto rows = static_cast<std::size_t>(values.shape(0));
  const auto cols = static_cast<std::size_t>(values.shape(1));
  const double* data = values.data();
  for (std::size_t k = 0; k < rows * cols; ++k)
    if (!std::isfinite(data[k])) throw py::value_error("values must be finite (no NaN or infinity)");
  std::string out;
  {
    py::gil_scoped_release release;
    out.reserve(rows * cols * 20 + rows);
    for (std::size_t i = 0; i < rows; ++i) {
      for (std::size_t j = 0; j < cols; ++j) {
        if (j) out.push_back(',');
        append_repr(out, data[i * cols + j]);
      }
      out.push_back('\n');
    }
  }
  return py::bytes(out);
}

}  // namespace

void bind_csv_format(py::module_& m) {
  m.def("format_csv_rows", &format_csv_rows, py::arg("values"),
        "CSV lines of a finite 2-D float64 array, each value as Python's repr() writes it, comma-separated,\n"
        "one '\\n'-terminated line per row; returns bytes (ASCII).");
}

}  // namespace strnn
