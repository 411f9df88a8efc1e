#pragma once
// A latency histogram in the manner of HdrHistogram: values (TSC cycles) fall into 32 linear
// sub-buckets per power of two, so every percentile is exact to within 1/32 (3 %), recording
// is a few instructions and the memory is fixed (64 x 32 counters). No allocation.

#include <array>
#include <bit>
#include <cstdint>

namespace kmodkit::bench {

class Histogram {
 public:
  static constexpr int kSubBits = 5;  // 32 sub-buckets

  void record(uint64_t value) {
    ++counts_[index(value)];
    ++total_;
    if (value > max_) max_ = value;
  }
  uint64_t count() const { return total_; }
  uint64_t max() const { return max_; }

  // The smallest value v such that at least `fraction` of the recorded values are <= v (the
  // upper bound of its sub-bucket, at most max()); 0 when nothing was recorded.
  uint64_t percentile(double fraction) const {
    if (total_ == 0) return 0;
    auto want = static_cast<uint64_t>(fraction * static_cast<double>(total_));
    if (want == 0) want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= want) {
        const uint64_t upper = upper_bound(i);
        return upper < max_ ? upper : max_;
      }
    }
    return max_;
  }

 private:
  static size_t index(uint64_t v) {
    if (v < (1U << kSubBits)) return static_cast<size_t>(v);  // exact below 32
    const int top = 63 - std::countl_zero(v);                 // >= kSubBits
    const int shift = top - kSubBits;
    const uint64_t sub = (v >> shift) & ((1U << kSubBits) - 1);
    return static_cast<size_t>((shift + 1) << kSubBits) + sub;
  }
  static uint64_t upper_bound(size_t i) {
    if (i < (1U << kSubBits)) return i;
    const int shift = static_cast<int>(i >> kSubBits) - 1;
    const uint64_t sub = i & ((1U << kSubBits) - 1);
    return (((uint64_t{1} << kSubBits) | sub) << shift) + ((uint64_t{1} << shift) - 1);
  }
  std::array<uint64_t, (64 - kSubBits + 1) << kSubBits> counts_{};
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace kmodkit::bench
