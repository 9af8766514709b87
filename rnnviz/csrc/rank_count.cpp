// The two loops of rnnviz's exact analysis that touch every value (rnnviz/exact.py):
// counting each unit's float16 values, and turning a block of them into doubled midranks
// and float64 values laid out unit by unit for the matrix products that follow.
//
// float16 bit patterns are mapped to keys that sort like the values (negative values have
// every bit flipped, positive ones the sign bit set), the same map as rnnviz.exact.f16_keys.
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>

namespace {

inline uint16_t key_of(uint16_t bits) {
  return bits ^ ((bits & 0x8000) ? 0xFFFF : 0x8000);
}

// hist (H, 65536) int32 += counts of the keys of bits (c, H) int16.
void count_keys(torch::Tensor bits, torch::Tensor hist) {
  TORCH_CHECK(bits.dim() == 2 && bits.scalar_type() == torch::kInt16 && bits.is_contiguous(), "bits: (c, H) int16");
  const int64_t c = bits.size(0), h = bits.size(1);
  TORCH_CHECK(hist.scalar_type() == torch::kInt32 && hist.is_contiguous() && hist.size(0) == h &&
              hist.size(1) == 65536, "hist: (H, 65536) int32");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  int32_t* out = hist.data_ptr<int32_t>();
  // Unit by unit over a block of rows: the units' tables lie 256 KiB apart, so one row
  // touching every table would evict itself (they share cache sets).
  constexpr int64_t kRows = 256;
  for (int64_t i0 = 0; i0 < c; i0 += kRows) {
    const int64_t i1 = std::min(c, i0 + kRows);
    for (int64_t u = 0; u < h; ++u) {
      int32_t* hu = out + (u << 16);
      for (int64_t i = i0; i < i1; ++i) ++hu[key_of(b[i * h + u])];
    }
  }
}

// ranks (H, c) float64 = lut2[u][key] (doubled midranks), values (H, c) float64 = the value
// of each bit pattern (table: (65536,) float64 indexed by the raw bits).
void rank_values(torch::Tensor bits, torch::Tensor lut2, torch::Tensor table, torch::Tensor ranks,
                 torch::Tensor values) {
  TORCH_CHECK(bits.dim() == 2 && bits.scalar_type() == torch::kInt16 && bits.is_contiguous(), "bits: (c, H) int16");
  const int64_t c = bits.size(0), h = bits.size(1);
  TORCH_CHECK(lut2.scalar_type() == torch::kInt32 && lut2.is_contiguous() && lut2.size(0) == h, "lut2: (H, 65536) int32");
  TORCH_CHECK(table.scalar_type() == torch::kFloat64 && table.numel() == 65536, "table: (65536,) float64");
  TORCH_CHECK(ranks.scalar_type() == torch::kFloat64 && values.scalar_type() == torch::kFloat64 &&
              ranks.is_contiguous() && values.is_contiguous() && ranks.size(0) == h && ranks.size(1) == c &&
              values.size(0) == h && values.size(1) == c, "ranks, values: (H, c) float64");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  const int32_t* lut = lut2.data_ptr<int32_t>();
  const double* tab = table.data_ptr<double>();
  double* r = ranks.data_ptr<double>();
  double* x = values.data_ptr<double>();
  constexpr int64_t kRows = 256;  // a block of rows stays in cache while every unit reads it
  for (int64_t i0 = 0; i0 < c; i0 += kRows) {
    const int64_t i1 = std::min(c, i0 + kRows);
    for (int64_t u = 0; u < h; ++u) {
      const int32_t* lu = lut + (u << 16);
      double* ru = r + u * c;
      double* xu = x + u * c;
      for (int64_t i = i0; i < i1; ++i) {
        const uint16_t v = b[i * h + u];
        ru[i] = static_cast<double>(lu[key_of(v)]);
        xu[i] = tab[v];
      }
    }
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("count_keys", &count_keys, "hist[u, key(bits[i, u])] += 1");
  m.def("rank_values", &rank_values, "doubled midranks and float64 values, unit by unit");
}
