// A minimal parallel-for: the core is used from 2-core laptops to servers, and its loops are
// embarrassingly parallel over rows, so static chunks over std::thread are enough.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace strnn {

// Read once: glibc answers hardware_concurrency() by opening /sys/devices/system/cpu/online,
// which cost 7 us a call (measured), more than a whole small masked layer.
inline unsigned default_threads() {
  static const unsigned n = [] {
    const unsigned c = std::thread::hardware_concurrency();
    return c == 0 ? 1u : c;
  }();
  return n;
}

// Runs f(begin, end) on disjoint chunks of [0, n) on at most `max_threads` threads (0: all
// cores); rethrows the first exception.
template <class F>
void parallel_for(std::size_t n, F&& f, std::size_t min_chunk = 64, unsigned max_threads = 0) {
  unsigned threads = max_threads == 0 ? default_threads() : std::min(max_threads, default_threads());
  if (n == 0) return;
  std::size_t chunks = std::min<std::size_t>(threads, (n + min_chunk - 1) / min_chunk);
  if (chunks <= 1) {
    f(std::size_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(chunks);
  std::size_t step = (n + chunks - 1) / chunks;
  auto run = [&](std::size_t c) {
    std::size_t b = c * step, e = std::min(n, b + step);
    try {
      if (b < e) f(b, e);
    } catch (...) {
      errors[c] = std::current_exception();
    }
  };
  // The caller runs chunk 0 itself rather than waiting idle: one thread fewer to start a call.
  for (std::size_t c = 1; c < chunks; ++c) pool.emplace_back(run, c);
  run(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Scratch vectors kept between calls. A kernel's packing buffers are allocated inside threads
// that live for one call, whose freed memory glibc may hand back to the OS, so calls page-faulted
// their buffers again (pooling them took a d=1000 forward+backward loop from 187K to 153K page
// faults, measured). Taken in any thread, given back by the destructor; at most kKeep vectors
// stay pooled.
template <class T>
class ScratchPool {
 public:
  static ScratchPool& instance() {
    static ScratchPool* pool = new ScratchPool();  // never destroyed: threads may outlive statics
    return *pool;
  }
  std::vector<T> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.empty()) return {};
    std::vector<T> v = std::move(free_.back());
    free_.pop_back();
    return v;
  }
  void give(std::vector<T>&& v) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < kKeep) free_.push_back(std::move(v));
  }

 private:
  static constexpr std::size_t kKeep = 8;
  std::mutex mutex_;
  std::vector<std::vector<T>> free_;
};

// A pooled vector for one scope: `Scratch<float> s; s.v.assign(n, 0.f);`.
template <class T>
struct Scratch {
  std::vector<T> v = ScratchPool<T>::instance().take();
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { ScratchPool<T>::instance().give(std::move(v)); }
};

}  // namespace strnn
