// The two loops of rnnviz's exact analysis that touch every value (rnnviz/exact.py):
// counting each unit's float16 values (pass 1), and summing each unit's doubled midranks
// and values per group of characters and against the per-character feature weights
// (pass 2).
//
// float16 bit patterns are mapped to keys that sort like the values (negative values have
// every bit flipped, positive ones the sign bit set), the same map as rnnviz.exact.f16_keys.
//
// Both run on several threads, each taking the next few units from a shared counter, so a
// thread that the OS deschedules on a busy machine delays only the units it holds. Every
// sum a thread makes belongs to its own units: the results do not depend on the threads.
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <tuple>
#include <vector>

namespace {

inline uint16_t key_of(uint16_t bits) {
  return bits ^ static_cast<uint16_t>((bits & 0x8000) ? 0xFFFF : 0x8000);
}

// The value of a float16 bit pattern as a double, exactly. inf and NaN (exponent 31) give a
// finite stand-in: the units that hold them are scored from their columns elsewhere.
inline double half_value(uint16_t b) {
  const uint64_t sign = static_cast<uint64_t>(b >> 15) << 63;
  const uint64_t e = (b >> 10) & 0x1F, m = b & 0x3FF;
  const uint64_t normal = sign | ((e + 1008) << 52) | (m << 42);  // (1 + m/1024) 2^(e-15)
  double nv;
  std::memcpy(&nv, &normal, sizeof nv);
  const double sub = static_cast<double>(m) * 0x1p-24;            // subnormal: m 2^-24
  return e ? nv : (sign ? -sub : sub);
}

// out[t] = lut[keys[t]]. Scalar: GCC's emulated gathers are slower here.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void lookup(const int32_t* lut, const uint16_t* keys, int64_t n, int32_t* out) {
  for (int64_t t = 0; t < n; ++t) out[t] = lut[keys[t]];
}

// Calls work(first, last, scratch) for consecutive pieces of [0, n) of `step` items on
// `threads` threads; each thread takes the next piece when it is done with one, and keeps
// its own scratch buffer.
template <class Scratch, class Work>
void in_pieces(int64_t n, int64_t step, int64_t threads, Work work) {
  std::atomic<int64_t> next{0};
  auto run = [&]() {
    Scratch scratch;
    for (int64_t lo; (lo = next.fetch_add(step)) < n;) work(lo, std::min(n, lo + step), scratch);
  };
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, (n + step - 1) / step));
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < threads; ++i) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
}

void check_bits(const torch::Tensor& bits) {
  TORCH_CHECK(bits.dim() == 2 && bits.scalar_type() == torch::kInt16 && bits.is_contiguous(), "bits: (c, H) int16");
}

void check(const torch::Tensor& t, torch::ScalarType type, int64_t rows, int64_t cols, const char* what) {
  TORCH_CHECK(t.scalar_type() == type && t.is_contiguous() && t.dim() == 2 && t.size(0) == rows &&
              t.size(1) == cols, what);
}

// hist (H, 65536) int32 += counts of the keys of bits (c, H) int16.
void count_keys(torch::Tensor bits, torch::Tensor hist, int64_t threads) {
  check_bits(bits);
  const int64_t c = bits.size(0), h = bits.size(1);
  check(hist, torch::kInt32, h, 65536, "hist: (H, 65536) int32");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  int32_t* out = hist.data_ptr<int32_t>();
  // A few units at a time over all c rows: their columns are copied out (keys, unit by unit)
  // 16 rows at a time, then each unit's 256 KiB table takes all c of its values while it
  // is in cache. Runs of one key (saturated gates) add once.
  constexpr int64_t kUnits = 32, kRows = 16;   // 32 units: a whole 64-byte line of each row
  in_pieces<std::vector<uint16_t>>(h, kUnits, threads, [&](int64_t u0, int64_t u1, std::vector<uint16_t>& col) {
    const int64_t w = u1 - u0;
    col.resize(kUnits * c);
    for (int64_t t0 = 0; t0 < c; t0 += kRows) {
      const int64_t t1 = std::min(c, t0 + kRows);
      for (int64_t u = 0; u < w; ++u)
        for (int64_t t = t0; t < t1; ++t) col[u * c + t] = key_of(b[t * h + u0 + u]);
    }
    for (int64_t u = 0; u < w; ++u) {
      int32_t* hu = out + ((u0 + u) << 16);
      const uint16_t* k = col.data() + u * c;
      if (c == 0) continue;
      uint16_t prev = k[0];
      int32_t run = 0;
      for (int64_t t = 0; t < c; ++t) {
        if (k[t] != prev) {
          hu[prev] += run;
          prev = k[t];
          run = 0;
        }
        ++run;
      }
      hu[prev] += run;
    }
  });
}

constexpr int kFirstFinite = 0x0400, kLastFinite = 0xFBFF;   // keys of -65504 .. +65504
constexpr int kNegZero = 0x7FFF, kPosZero = 0x8000;

inline uint16_t bits_of(uint16_t key) {   // the inverse of key_of
  return key ^ static_cast<uint16_t>((key & 0x8000) ? 0x8000 : 0xFFFF);
}

// Per unit, from its counts: lut2 (H, 65536) int32 = the doubled midrank of each finite key
// it holds (2 * values below + count + 1; -0 and +0 one value; 0 elsewhere), and
// stats (H, 9): finite values, inf/NaN values, sum of squared midrank deviations, mean, sum
// of squared deviations, values < left, values > right, min, max (NaN without values), and
// order (H, P, 2): the keys of the order statistics floor(f (n - 1)) and the next one for each
// fraction f.
std::tuple<torch::Tensor, torch::Tensor> unit_table(torch::Tensor hist, torch::Tensor lut2, torch::Tensor fractions,
                                                    double left, double right, int64_t threads) {
  const int64_t h = hist.size(0);
  check(hist, torch::kInt32, h, 65536, "hist: (H, 65536) int32");
  check(lut2, torch::kInt32, h, 65536, "lut2: (H, 65536) int32");
  TORCH_CHECK(fractions.scalar_type() == torch::kFloat64 && fractions.dim() == 1 && fractions.is_contiguous(),
              "fractions: (P,) float64");
  const int64_t p = fractions.size(0);
  auto stats = torch::full({h, 9}, std::nan(""), torch::kFloat64);
  auto order = torch::zeros({h, p, 2}, torch::kInt64);
  const int32_t* hs = hist.data_ptr<int32_t>();
  int32_t* lt = lut2.data_ptr<int32_t>();
  const double* fr = fractions.data_ptr<double>();
  double* st = stats.data_ptr<double>();
  int64_t* od = order.data_ptr<int64_t>();
  static const std::vector<double> value = [] {   // the value of each finite key
    std::vector<double> v(65536, 0.0);
    for (int k = kFirstFinite; k <= kLastFinite; ++k) v[k] = half_value(bits_of(static_cast<uint16_t>(k)));
    return v;
  }();
  in_pieces<std::vector<std::pair<int, int64_t>>>(h, 1, threads, [&](int64_t u, int64_t,
                                                                     std::vector<std::pair<int, int64_t>>& used) {
    const int32_t* c = hs + (u << 16);
    int32_t* lut = lt + (u << 16);
    double* out = st + u * 9;
    std::fill(lut, lut + 65536, 0);
    int64_t bad = 0;
    for (int k = 0; k < kFirstFinite; ++k) bad += c[k];
    for (int k = kLastFinite + 1; k < 65536; ++k) bad += c[k];
    // (key, count) of the values held, without branches (the used keys are scattered), then
    // -0 and +0 (neighbouring keys) as one value.
    used.resize(kLastFinite - kFirstFinite + 1);
    size_t nu = 0;
    for (int k = kFirstFinite; k <= kLastFinite; ++k) {
      used[nu] = {k, c[k]};
      nu += c[k] != 0;
    }
    used.resize(nu);
    for (size_t i = 0; i + 1 < nu; ++i)
      if (used[i].first == kNegZero && used[i + 1].first == kPosZero) {
        used[i].second += used[i + 1].second;
        used.erase(used.begin() + i + 1);
        break;
      }
    int64_t m = 0;
    for (const auto& [k, n] : used) m += n;
    out[0] = static_cast<double>(m);
    out[1] = static_cast<double>(bad);
    if (m == 0) return;
    int64_t below = 0, above = 0, before = 0;
    double sum = 0.0, rank_ss = 0.0;
    for (const auto& [k, n] : used) {
      const int64_t r2 = 2 * before + n + 1;
      lut[k] = static_cast<int32_t>(r2);
      const double v = value[k];
      const double dev = (static_cast<double>(r2) - static_cast<double>(m + 1)) / 2.0;
      rank_ss += static_cast<double>(n) * dev * dev;
      sum += static_cast<double>(n) * v;
      below += v < left ? n : 0;
      above += v > right ? n : 0;
      before += n;
    }
    lut[kPosZero] = lut[kNegZero] = std::max(lut[kPosZero], lut[kNegZero]);
    const double mean = sum / static_cast<double>(m);
    double ss = 0.0;
    for (const auto& [k, n] : used) ss += static_cast<double>(n) * (value[k] - mean) * (value[k] - mean);
    out[2] = rank_ss, out[3] = mean, out[4] = ss;
    out[5] = static_cast<double>(below), out[6] = static_cast<double>(above);
    out[7] = value[used.front().first], out[8] = value[used.back().first];
    // Order statistics: the key holding 0-based position i is the first whose count so far
    // exceeds i; one sweep for every wanted position, in increasing order. The zeros are
    // reported as +0 (the key numpy keeps).
    std::vector<std::pair<int64_t, int64_t>> wants;   // (position, where to write its key)
    for (int64_t j = 0; j < p; ++j) {
      const int64_t at = static_cast<int64_t>(std::floor(fr[j] * static_cast<double>(m - 1)));
      for (int64_t s = 0; s < 2; ++s) wants.emplace_back(std::min(at + s, m - 1), (u * p + j) * 2 + s);
    }
    std::sort(wants.begin(), wants.end());
    int64_t seen = 0;
    size_t next = 0;
    for (const auto& [k, n] : used) {
      seen += n;
      for (; next < wants.size() && seen > wants[next].first; ++next)
        od[wants[next].second] = k == kNegZero ? kPosZero : k;
    }
  });
  return {stats, order};
}

// Pass 2 over a (c, H) block of the characters offset..offset+c. Per unit u, with r =
// lut2[u][key] (doubled midranks) and x the value of each character:
//   sr[u, g] += sum of r over the characters in group g (groups: (c,) int32 in [0, G)),
//   sx[u, g] += the same for x,
//   dr[u, j] += sum_t r[t] dense_r[t, j], dx[u, j] += sum_t x[t] dense_x[t, j]  ((c, D) weights);
//   top[u, b] / bottom[u, b] = the largest / smallest key of characters 32b..32b+31 (uint16
//   stored in int32; skipped when empty);
//   found[u, q] = offset + the first character whose key is targets[u, q] (-0 matching +0),
//   where found is still -1 (skipped when empty).
// r are integers below 2^31, so sr holds exact integers (below 2^53).
void accumulate(torch::Tensor bits, torch::Tensor lut2, torch::Tensor groups, torch::Tensor dense_r,
                torch::Tensor dense_x, torch::Tensor sr, torch::Tensor sx, torch::Tensor dr, torch::Tensor dx,
                torch::Tensor top, torch::Tensor bottom, torch::Tensor targets, torch::Tensor found, int64_t offset,
                int64_t threads) {
  check_bits(bits);
  const int64_t c = bits.size(0), h = bits.size(1), g = sr.size(1), d = dr.size(1);
  const int64_t nb = (c + 31) / 32, q = targets.numel() ? targets.size(1) : 0;
  check(lut2, torch::kInt32, h, 65536, "lut2: (H, 65536) int32");
  TORCH_CHECK(groups.scalar_type() == torch::kInt32 && groups.is_contiguous() && groups.numel() == c,
              "groups: (c,) int32");
  check(dense_r, torch::kFloat64, c, d, "dense_r: (c, D) float64");
  check(dense_x, torch::kFloat64, c, d, "dense_x: (c, D) float64");
  check(sr, torch::kFloat64, h, g, "sr: (H, G) float64");
  check(sx, torch::kFloat64, h, g, "sx: (H, G) float64");
  check(dr, torch::kFloat64, h, d, "dr: (H, D) float64");
  check(dx, torch::kFloat64, h, d, "dx: (H, D) float64");
  const bool spread = top.numel() > 0;
  if (spread) {
    check(top, torch::kInt32, h, nb, "top: (H, ceil(c / 32)) int32");
    check(bottom, torch::kInt32, h, nb, "bottom: (H, ceil(c / 32)) int32");
  }
  if (q) {
    check(targets, torch::kInt32, h, q, "targets: (H, Q) int32");
    check(found, torch::kInt64, h, q, "found: (H, Q) int64");
  }
  const int32_t* gid = groups.data_ptr<int32_t>();
  for (int64_t t = 0; t < c; ++t) TORCH_CHECK(gid[t] >= 0 && gid[t] < g, "groups: a group outside [0, G)");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  const int32_t* lut = lut2.data_ptr<int32_t>();
  const double* wr = dense_r.data_ptr<double>();
  const double* wx = dense_x.data_ptr<double>();
  double* osr = sr.data_ptr<double>();
  double* osx = sx.data_ptr<double>();
  double* odr = dr.data_ptr<double>();
  double* odx = dx.data_ptr<double>();
  int32_t* otop = spread ? top.data_ptr<int32_t>() : nullptr;
  int32_t* obot = spread ? bottom.data_ptr<int32_t>() : nullptr;
  const int32_t* tg = q ? targets.data_ptr<int32_t>() : nullptr;
  int64_t* fd = q ? found.data_ptr<int64_t>() : nullptr;

  // kLanes units side by side (the vector width of the sums). Their keys are copied out
  // unit by unit first (kPiece units: whole cache lines of each row), so that each unit's
  // 256 KiB table serves kRows characters in a row.
  constexpr int64_t kLanes = 4, kPiece = 32, kRows = 1024, kCopy = 16;
  struct Scratch {
    std::vector<uint16_t> keys;
    std::vector<double> r, x, gr, gx, ar, ax, xc;
    std::vector<int32_t> r32;
  };
  auto lanes = [&](int64_t u0, int64_t u1, const uint16_t* keys, Scratch& s) {
    const int64_t w = u1 - u0;
    s.r.resize(kRows * kLanes);
    s.x.resize(kRows * kLanes);
    for (auto* v : {&s.gr, &s.gx}) v->assign(g * kLanes, 0.0);
    for (auto* v : {&s.ar, &s.ax}) v->assign(d * kLanes, 0.0);
    auto &r = s.r, &x = s.x, &gr = s.gr, &gx = s.gx, &ar = s.ar, &ax = s.ax;
    s.r32.assign(kRows * kLanes, 0);       // lanes past the last unit stay 0
    s.xc.assign(kRows * kLanes, 0.0);
    int32_t* r32 = s.r32.data();
    double* xc = s.xc.data();
    for (int64_t l = 0; l < w; ++l) {
      const uint16_t* k = keys + l * c;
      const int64_t u = u0 + l;
      if (spread) {
        for (int64_t blk = 0; blk < nb; ++blk) {
          uint16_t most = 0, least = 0xFFFF;
          for (int64_t t = blk * 32; t < std::min(c, blk * 32 + 32); ++t) {
            most = std::max(most, k[t]);
            least = std::min(least, k[t]);
          }
          otop[u * nb + blk] = most;
          obot[u * nb + blk] = least;
        }
      }
      for (int64_t j = 0; j < q; ++j) {
        if (fd[u * q + j] >= 0) continue;
        const uint16_t want = static_cast<uint16_t>(tg[u * q + j]);
        const uint16_t also = want == kPosZero ? kNegZero : want;
        for (int64_t t = 0; t < c; ++t)
          if (k[t] == want || k[t] == also) {
            fd[u * q + j] = offset + t;
            break;
          }
      }
    }
    for (int64_t t0 = 0; t0 < c; t0 += kRows) {
      const int64_t rows = std::min(kRows, c - t0);
      for (int64_t l = 0; l < w; ++l) {
        const uint16_t* k = keys + l * c + t0;
        lookup(lut + ((u0 + l) << 16), k, rows, r32 + l * kRows);
        for (int64_t t = 0; t < rows; ++t) xc[l * kRows + t] = half_value(bits_of(k[t]));
      }
      for (int64_t t = 0; t < rows; ++t)
        for (int64_t l = 0; l < kLanes; ++l) {
          r[t * kLanes + l] = static_cast<double>(r32[l * kRows + t]);
          x[t * kLanes + l] = xc[l * kRows + t];
        }
      for (int64_t t = 0; t < rows; ++t) {
        double* gr_ = gr.data() + gid[t0 + t] * kLanes;
        double* gx_ = gx.data() + gid[t0 + t] * kLanes;
        const double* rt = r.data() + t * kLanes;
        const double* xt = x.data() + t * kLanes;
        for (int64_t l = 0; l < kLanes; ++l) {
          gr_[l] += rt[l];
          gx_[l] += xt[l];
        }
      }
      for (int64_t j = 0; j < d; ++j) {
        // kChains independent sums each: one chain of additions would wait on every product.
        constexpr int64_t kChains = 4;
        double accr[kChains][kLanes] = {}, accx[kChains][kLanes] = {};
        for (int64_t t = 0; t < rows; ++t) {
          const double vr = wr[(t0 + t) * d + j], vx = wx[(t0 + t) * d + j];
          const double* rt = r.data() + t * kLanes;
          const double* xt = x.data() + t * kLanes;
          double* cr = accr[t % kChains];
          double* cx = accx[t % kChains];
          for (int64_t l = 0; l < kLanes; ++l) {
            cr[l] += rt[l] * vr;
            cx[l] += xt[l] * vx;
          }
        }
        for (int64_t i = 0; i < kChains; ++i)
          for (int64_t l = 0; l < kLanes; ++l) {
            ar[j * kLanes + l] += accr[i][l];
            ax[j * kLanes + l] += accx[i][l];
          }
      }
    }
    for (int64_t l = 0; l < w; ++l) {
      for (int64_t k = 0; k < g; ++k) {
        osr[(u0 + l) * g + k] += gr[k * kLanes + l];
        osx[(u0 + l) * g + k] += gx[k * kLanes + l];
      }
      for (int64_t j = 0; j < d; ++j) {
        odr[(u0 + l) * d + j] += ar[j * kLanes + l];
        odx[(u0 + l) * d + j] += ax[j * kLanes + l];
      }
    }
  };
  in_pieces<Scratch>(h, kPiece, threads, [&](int64_t p0, int64_t p1, Scratch& s) {
    s.keys.resize(kPiece * c);
    uint16_t* keys = s.keys.data();
    for (int64_t t0 = 0; t0 < c; t0 += kCopy) {
      const int64_t t1 = std::min(c, t0 + kCopy);
      for (int64_t l = 0; l < p1 - p0; ++l)
        for (int64_t t = t0; t < t1; ++t) keys[l * c + t] = key_of(b[t * h + p0 + l]);
    }
    for (int64_t u0 = p0; u0 < p1; u0 += kLanes)
      lanes(u0, std::min(p1, u0 + kLanes), keys + (u0 - p0) * c, s);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("count_keys", &count_keys, "hist[u, key(bits[i, u])] += 1", py::call_guard<py::gil_scoped_release>());
  m.def("unit_table", &unit_table, "per unit: doubled midranks, moments, order statistics",
        py::call_guard<py::gil_scoped_release>());
  m.def("accumulate", &accumulate, "per unit: rank and value sums per group of characters and against weights, "
        "the extremes of every 32 characters, the first character holding given keys",
        py::call_guard<py::gil_scoped_release>());
}
