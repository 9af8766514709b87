// The two loops of rnnviz's exact analysis that touch every value (rnnviz/exact.py):
// counting each unit's float16 values (pass 1), and summing each unit's doubled midranks
// and values per group of characters and against the per-character feature weights
// (pass 2).
//
// float16 bit patterns are mapped to keys that sort like the values (negative values have
// every bit flipped, positive ones the sign bit set), the same map as rnnviz.exact.f16_keys.
//
// A third loop reads the rows of a block straight from the dump's uncompressed chunks (gather),
// and two more give the circular-shift null its rank columns (rank_rows, centre_rows).
//
// They run on several threads, each taking the next few units from a shared counter, so a
// thread that the OS deschedules on a busy machine delays only the units it holds. Every
// sum a thread makes belongs to its own units: the results do not depend on the threads.
#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>
#ifndef _WIN32
#include <unistd.h>  // pread
#endif
#include <vector>
#if defined(__F16C__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace {

// Without branches: a value's sign is a coin toss, and a branch on it mispredicts half the time.
inline uint16_t key_of(uint16_t bits) {
  return bits ^ static_cast<uint16_t>(0x8000 + (bits >> 15) * 0x7FFF);   // negative: 0xFFFF; else 0x8000
}

inline uint16_t bits_of(uint16_t key) {   // the inverse of key_of
  return key ^ static_cast<uint16_t>(0xFFFF ^ ((key >> 15) * 0x7FFF));    // key of a positive: 0x8000; else 0xFFFF
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

// Streams the part [lo, hi] of a unit's 65,536-entry table that its keys fall in into the
// cache, in order (the prefetcher follows it), before lookups in key order that would each
// wait on memory. (Counting does the same for the table it writes, on keys it computes as it
// goes.)
void warm(const int32_t* table, uint16_t lo, uint16_t hi) {
  for (int64_t key = lo; key <= hi; key += 16) __builtin_prefetch(table + key, 0);
}

// r[t * stride] = lut[key of src[t]] and bits[t * stride] = src[t] (float16 bits), for t < n.
// Scalar lookups: GCC's gathers are slower here.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void look_up(const int32_t* lut, const uint16_t* src, int64_t n, int64_t stride, int32_t* r, uint16_t* bits) {
  for (int64_t t = 0; t < n; ++t) {
    const uint16_t b = src[t];
    r[t * stride] = lut[key_of(b)];
    bits[t * stride] = b;
  }
}

// The same for 4 units at once (lanes 0-3 of r and bits, rows `stride` apart): the rows are
// written whole, instead of a line of each row for every unit, while the 4 tables stay in
// the cache.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void look_up4(const int32_t* const* lut, const uint16_t* const* src, int64_t n, int64_t stride, int32_t* r,
              uint16_t* bits) {
  for (int64_t t = 0; t < n; ++t)
    for (int l = 0; l < 4; ++l) {
      const uint16_t b = src[l][t];
      r[t * stride + l] = lut[l][key_of(b)];
      bits[t * stride + l] = b;
    }
}

// L lanes (units) side by side: GCC and Clang make these AVX-512, AVX2 or SSE registers.
template <int L>
struct Lanes {
  typedef double d __attribute__((vector_size(8 * L)));
  typedef int32_t i __attribute__((vector_size(4 * L)));
  typedef float f __attribute__((vector_size(4 * L)));
  typedef uint16_t u16 __attribute__((vector_size(2 * L)));
};

// The float16 bits of L (8 or 4) lanes as doubles, exactly; inf and NaN as 0, finite like
// half_value's stand-ins (the units that hold them are scored from their columns elsewhere,
// and their sums must not warn on the way).
template <int L>
inline typename Lanes<L>::d half_lanes(const uint16_t* bits) {
  typedef Lanes<L> V;
#ifdef __F16C__
  typename V::u16 b;
  std::memcpy(&b, bits, sizeof b);
  b &= ~(typename V::u16)((b & 0x7C00) == 0x7C00);   // exponent 31: inf or NaN
  typename V::f v;
  if constexpr (L == 8) {
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&b)));
    std::memcpy(&v, &f, sizeof v);
  } else {
    static_assert(L == 4, "8 or 4 lanes");
    const __m128 f = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(&b)));
    std::memcpy(&v, &f, sizeof v);
  }
  return __builtin_convertvector(v, typename V::d);
#else
  typename V::d x;
  for (int l = 0; l < L; ++l) x[l] = half_value(bits[l]);
  return x;
#endif
}

// One sweep over c characters for lanes h * L .. h * L + L - 1 of 8: r (c, 8) int32 doubled
// midranks and bits (c, 8) float16 values are added to their character's group (gr, gx:
// (G, 8)) and multiplied by the D dense weights of the character (tr[code], tx[code] for code
// in codes (c, D): indices into the weight tables) into ar, ax ((D, 8)). D as a template
// argument keeps the sums in registers; D < 0: the runtime d. Each lane's sums are added in
// the same order whichever L: the results are the same on every CPU.
template <int L, int D, class Code>
void sweep_lanes(int64_t c, int64_t d, const int32_t* r, const uint16_t* bits, const int32_t* gid, const Code* codes,
                 const double* tr, const double* tx, double* gr, double* gx, double* ar, double* ax, int h) {
  typedef typename Lanes<L>::d vd;
  if (D >= 0) d = D;
  vd fixed_r[D > 0 ? D : 1], fixed_x[D > 0 ? D : 1];
  std::vector<vd> any_r(D < 0 ? d : 0), any_x(D < 0 ? d : 0);
  vd* sr = D < 0 ? any_r.data() : fixed_r;
  vd* sx = D < 0 ? any_x.data() : fixed_x;
  for (int64_t j = 0; j < d; ++j) sr[j] = sx[j] = vd{};
  const int64_t o = h * L;
  for (int64_t t = 0; t < c; ++t) {
    typename Lanes<L>::i ri;
    std::memcpy(&ri, r + t * 8 + o, sizeof ri);
    const vd rv = __builtin_convertvector(ri, vd), xv = half_lanes<L>(bits + t * 8 + o);
    double* g_r = gr + static_cast<int64_t>(gid[t]) * 8 + o;
    double* g_x = gx + static_cast<int64_t>(gid[t]) * 8 + o;
    vd a, b;
    std::memcpy(&a, g_r, sizeof a);
    std::memcpy(&b, g_x, sizeof b);
    a += rv;
    b += xv;
    std::memcpy(g_r, &a, sizeof a);
    std::memcpy(g_x, &b, sizeof b);
    for (int64_t j = 0; j < d; ++j) {
      const int64_t code = codes[t * d + j];
      sr[j] += rv * tr[code];
      sx[j] += xv * tx[code];
    }
  }
  for (int64_t j = 0; j < d; ++j) {
    std::memcpy(ar + j * 8 + o, &sr[j], sizeof sr[j]);
    std::memcpy(ax + j * 8 + o, &sx[j], sizeof sx[j]);
  }
}

// All 8 lanes at once with 32 vector registers (AVX-512); with 16 (AVX2, SSE) the 2 D sums of
// 8 lanes and their operands do not fit, and spilling them to the stack on every character
// costs more than a second sweep of 4.
template <int D, class Code>
void sweep(int64_t c, int64_t d, const int32_t* r, const uint16_t* bits, const int32_t* gid, const Code* codes,
           const double* tr, const double* tx, double* gr, double* gx, double* ar, double* ax) {
#ifdef __AVX512F__
  sweep_lanes<8, D>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax, 0);
#else
  for (int h = 0; h < 2; ++h) sweep_lanes<4, D>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax, h);
#endif
}

template <class Code>
void sweep_any(int64_t c, int64_t d, const int32_t* r, const uint16_t* bits, const int32_t* gid, const Code* codes,
               const double* tr, const double* tx, double* gr, double* gx, double* ar, double* ax) {
  switch (d) {
    case 0: return sweep<0>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 1: return sweep<1>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 2: return sweep<2>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 3: return sweep<3>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 4: return sweep<4>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 5: return sweep<5>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    case 6: return sweep<6>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
    default: return sweep<-1>(c, d, r, bits, gid, codes, tr, tx, gr, gx, ar, ax);
  }
}

// Scratch buffers kept from one call to the next: fresh ones of a few MB come from the
// system zeroed, a page fault at a time, which cost more than some of the loops using them.
template <class Scratch>
class Pool {
 public:
  static std::unique_ptr<Scratch> take() {
    std::lock_guard<std::mutex> hold(lock());
    auto& free = spare();
    if (free.empty()) return std::make_unique<Scratch>();
    auto s = std::move(free.back());
    free.pop_back();
    return s;
  }
  static void give(std::unique_ptr<Scratch> s) {
    std::lock_guard<std::mutex> hold(lock());
    spare().push_back(std::move(s));
  }

 private:
  static std::mutex& lock() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::unique_ptr<Scratch>>& spare() {
    static std::vector<std::unique_ptr<Scratch>> v;
    return v;
  }
};

// Calls work(first, last, scratch) for consecutive pieces of [0, n) of `step` items on
// `threads` threads; each thread takes the next piece when it is done with one, and keeps
// its own scratch buffer (from the Pool).
template <class Scratch, class Work>
void in_pieces(int64_t n, int64_t step, int64_t threads, Work work) {
  std::atomic<int64_t> next{0};
  auto run = [&]() {
    auto scratch = Pool<Scratch>::take();
    for (int64_t lo; (lo = next.fetch_add(step)) < n;) work(lo, std::min(n, lo + step), *scratch);
    Pool<Scratch>::give(std::move(scratch));
  };
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, (n + step - 1) / step));
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < threads; ++i) pool.emplace_back(run);
  run();
  for (auto& t : pool) t.join();
}

// bits (c, H) int16 either row by row (contiguous) or unit by unit: each unit's c values
// consecutive, units `ld` items apart (ld >= c: the rows lo..hi of a whole column that
// gather wrote); returns ld for the second, 0 for the first.
int64_t check_bits(const torch::Tensor& bits) {
  TORCH_CHECK(bits.dim() == 2 && bits.scalar_type() == torch::kInt16, "bits: (c, H) int16");
  if (bits.is_contiguous()) return 0;
  TORCH_CHECK(bits.stride(0) == 1 && (bits.size(1) == 1 || bits.stride(1) >= bits.size(0)),
              "bits: (c, H) int16, contiguous row by row or unit by unit");
  return std::max<int64_t>(bits.size(1) == 1 ? bits.size(0) : bits.stride(1), 1);
}

// keys[l * c + t] = the key of bits[t, u0 + l] for l < w, t < c (kRaw: the bits themselves):
// a transpose of row-major bits (kRows rows at a time: whole cache lines of each row), or a
// copy of unit-by-unit ones (units ld apart; ld = 0: row by row).
template <bool kRaw = false>
void copy_keys(const uint16_t* b, int64_t ld, int64_t c, int64_t h, int64_t u0, int64_t w, uint16_t* keys) {
  auto key = [](uint16_t x) { return kRaw ? x : key_of(x); };
  if (ld) {
    for (int64_t l = 0; l < w; ++l) {
      const uint16_t* src = b + (u0 + l) * ld;
      uint16_t* dst = keys + l * c;
      for (int64_t t = 0; t < c; ++t) dst[t] = key(src[t]);
    }
    return;
  }
  constexpr int64_t kRows = 16;
  for (int64_t t0 = 0; t0 < c; t0 += kRows) {
    const int64_t t1 = std::min(c, t0 + kRows);
    for (int64_t l = 0; l < w; ++l)
      for (int64_t t = t0; t < t1; ++t) keys[l * c + t] = key(b[t * h + u0 + l]);
  }
}

// Whether every one of the n indices is in [0, end): a reduction without branches (the
// pass of sums checks a block's indices on every call).
template <class T>
bool within(const T* index, int64_t n, int64_t end) {
  T low = 0, high = 0;
  for (int64_t t = 0; t < n; ++t) {
    low = std::min(low, index[t]);
    high = std::max(high, index[t]);
  }
  return n == 0 || (low >= 0 && static_cast<int64_t>(high) < end);
}

void check(const torch::Tensor& t, torch::ScalarType type, int64_t rows, int64_t cols, const char* what) {
  TORCH_CHECK(t.scalar_type() == type && t.is_contiguous() && t.dim() == 2 && t.size(0) == rows &&
              t.size(1) == cols, what);
}

// hist (H, 65536) int32 += counts of the keys of bits (c, H) int16.
void count_keys(torch::Tensor bits, torch::Tensor hist, int64_t threads) {
  const int64_t ld = check_bits(bits);
  const int64_t c = bits.size(0), h = bits.size(1);
  check(hist, torch::kInt32, h, 65536, "hist: (H, 65536) int32");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  int32_t* out = hist.data_ptr<int32_t>();
  // A few units at a time over all c rows, each unit's 256 KiB table taking all c of its
  // values while it is in cache. Row-major bits are first copied out (keys, unit by unit)
  // 16 rows at a time; unit-by-unit bits are keyed as they are read. Runs of one key
  // (saturated gates) add once.
  constexpr int64_t kUnits = 32;   // 32 units: a whole 64-byte line of each row
  auto count = [c](int32_t* hu, auto key) {
    uint16_t lo = 0xFFFF, hi = 0;
    for (int64_t t = 0; t < c; ++t) {
      lo = std::min(lo, key(t));
      hi = std::max(hi, key(t));
    }
    for (int64_t k = lo; k <= hi; k += 16) __builtin_prefetch(hu + k, 1);
    uint16_t prev = key(0);
    int32_t run = 0;
    for (int64_t t = 0; t < c; ++t) {
      const uint16_t k = key(t);
      if (k != prev) {
        hu[prev] += run;
        prev = k;
        run = 0;
      }
      ++run;
    }
    hu[prev] += run;
  };
  if (c == 0) return;
  in_pieces<std::vector<uint16_t>>(h, kUnits, threads, [&](int64_t u0, int64_t u1, std::vector<uint16_t>& col) {
    const int64_t w = u1 - u0;
    if (!ld) {
      col.resize(kUnits * c);
      copy_keys(b, 0, c, h, u0, w, col.data());
    }
    for (int64_t u = 0; u < w; ++u) {
      int32_t* hu = out + ((u0 + u) << 16);
      if (ld) {
        const uint16_t* src = b + (u0 + u) * ld;
        count(hu, [src](int64_t t) { return key_of(src[t]); });
      } else {
        const uint16_t* k = col.data() + u * c;
        count(hu, [k](int64_t t) { return k[t]; });
      }
    }
  });
}

constexpr int kFirstFinite = 0x0400, kLastFinite = 0xFBFF;   // keys of -65504 .. +65504
constexpr int kNegZero = 0x7FFF, kPosZero = 0x8000;

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

// A block's candidate for a running top k ((score, character) pairs in list, best first, ties
// to the earlier character; -1: an empty slot): score >= 0 goes in after every pair scoring
// at least as much, at the first of the block's m float16 bit patterns whose key is `key`
// (character first + t).
void offer(int64_t* list, int64_t k, int64_t score, const uint16_t* bits, int64_t m, int64_t key, int64_t first) {
  if (score < 0 || k == 0 || list[2 * (k - 1)] >= score) return;
  int64_t i = k - 1;
  for (; i > 0 && list[2 * (i - 1)] < score; --i) {
    list[2 * i] = list[2 * (i - 1)];
    list[2 * i + 1] = list[2 * (i - 1) + 1];
  }
  int64_t t = 0;
  while (t + 1 < m && key_of(bits[t]) != key) ++t;
  list[2 * i] = score;
  list[2 * i + 1] = first + t;
}

// Pass 2 over a (c, H) block of the characters offset..offset+c. Per unit u, with r =
// lut2[u][key] (doubled midranks) and x the value of each character:
//   sr[u, g] += sum of r over the characters in group g (groups: (c,) int32 in [0, G)),
//   sx[u, g] += the same for x,
//   dr[u, j] += sum_t r[t] tab_r[codes[t, j]], dx[u, j] += sum_t x[t] tab_x[codes[t, j]]  (codes: (c, D)
//   uint16 or int32, indices into the weight tables (T,));
//   best[u, 0] / best[u, 1]: the running top k of (score, character) over blocks of 32
//   characters, at most one per block: the block's largest finite key (side 0) or 65535
//   minus its smallest (side 1), at the first character holding it; sorted by score, ties
//   to the earlier character; empty slots hold -1 (skipped when best is empty);
//   found[u, q] = offset + the first character whose key is targets[u, q] (-0 matching +0),
//   where found is still -1 (skipped when empty).
// r are integers below 2^31, so sr holds exact integers (below 2^53).
void accumulate(torch::Tensor bits, torch::Tensor lut2, torch::Tensor groups, torch::Tensor codes,
                torch::Tensor tab_r, torch::Tensor tab_x, torch::Tensor sr, torch::Tensor sx, torch::Tensor dr,
                torch::Tensor dx, torch::Tensor best, torch::Tensor targets, torch::Tensor found, int64_t offset,
                int64_t threads) {
  const int64_t ld = check_bits(bits);
  const int64_t c = bits.size(0), h = bits.size(1), g = sr.size(1), d = dr.size(1);
  const int64_t nb = (c + 31) / 32, q = targets.numel() ? targets.size(1) : 0;
  check(lut2, torch::kInt32, h, 65536, "lut2: (H, 65536) int32");
  TORCH_CHECK(groups.scalar_type() == torch::kInt32 && groups.is_contiguous() && groups.numel() == c,
              "groups: (c,) int32");
  const bool wide = codes.scalar_type() == torch::kInt32;
  check(codes, wide ? torch::kInt32 : torch::kInt16, c, d, "codes: (c, D) int16 (read as uint16) or int32");
  const int64_t nt = tab_r.numel();
  TORCH_CHECK(tab_r.scalar_type() == torch::kFloat64 && tab_r.is_contiguous() && tab_r.dim() == 1 &&
              tab_x.scalar_type() == torch::kFloat64 && tab_x.is_contiguous() && tab_x.numel() == nt,
              "tab_r, tab_x: (T,) float64");
  const uint16_t* code16 = wide ? nullptr : reinterpret_cast<const uint16_t*>(codes.data_ptr<int16_t>());
  const int32_t* code32 = wide ? codes.data_ptr<int32_t>() : nullptr;
  TORCH_CHECK(wide ? within(code32, c * d, nt) : within(code16, c * d, nt),
              "codes: an index outside the weight tables");
  check(sr, torch::kFloat64, h, g, "sr: (H, G) float64");
  check(sx, torch::kFloat64, h, g, "sx: (H, G) float64");
  check(dr, torch::kFloat64, h, d, "dr: (H, D) float64");
  check(dx, torch::kFloat64, h, d, "dx: (H, D) float64");
  const bool spread = best.numel() > 0;
  const int64_t kb = spread ? best.size(2) : 0;
  if (spread)
    TORCH_CHECK(best.scalar_type() == torch::kInt64 && best.is_contiguous() && best.dim() == 4 &&
                best.size(0) == h && best.size(1) == 2 && best.size(3) == 2, "best: (H, 2, k, 2) int64");
  if (q) {
    check(targets, torch::kInt32, h, q, "targets: (H, Q) int32");
    check(found, torch::kInt64, h, q, "found: (H, Q) int64");
  }
  const int32_t* gid = groups.data_ptr<int32_t>();
  TORCH_CHECK(within(gid, c, g), "groups: a group outside [0, G)");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  const int32_t* lut = lut2.data_ptr<int32_t>();
  const double* tr = tab_r.data_ptr<double>();
  const double* tx = tab_x.data_ptr<double>();
  double* osr = sr.data_ptr<double>();
  double* osx = sx.data_ptr<double>();
  double* odr = dr.data_ptr<double>();
  double* odx = dx.data_ptr<double>();
  int64_t* obest = spread ? best.data_ptr<int64_t>() : nullptr;
  const int32_t* tg = q ? targets.data_ptr<int32_t>() : nullptr;
  int64_t* fd = q ? found.data_ptr<int64_t>() : nullptr;

  // kLanes units side by side. Each unit's float16 bits are read where they lie (unit by
  // unit) or copied out of the rows first (kPiece units at a time: whole cache lines of each
  // row), then looked up for all c characters at once, so that its 256 KiB table is fetched
  // once per block; the ranks (int32) and bits are stored lane by lane, and one sweep over
  // the characters adds kLanes units' ranks and values to their groups and multiplies them
  // by the dense weights, which are read once per kLanes units.
  constexpr int64_t kLanes = 8, kPiece = 32;   // kLanes: as in sweep
  struct Scratch {
    std::vector<uint16_t> rows, bits;
    std::vector<int32_t> r;
    std::vector<double> gr, gx, ar, ax;
  };
  // Units u0..u0+w, their bits at src + l * stride.
  auto lanes = [&](int64_t u0, int64_t w, const uint16_t* src, int64_t stride, Scratch& s) {
    s.r.resize(c * kLanes);
    s.bits.resize(c * kLanes);
    if (w < kLanes) {               // lanes past the last unit: 0
      std::fill(s.r.begin(), s.r.end(), 0);
      std::fill(s.bits.begin(), s.bits.end(), 0);
    }
    s.gr.assign(g * kLanes, 0.0);
    s.gx.assign(g * kLanes, 0.0);
    int32_t* r = s.r.data();
    uint16_t* bt = s.bits.data();
    uint16_t lowest[kLanes], highest[kLanes];   // each unit's range of keys here
    for (int64_t l = 0; l < w; ++l) {
      const uint16_t* k = src + l * stride;
      const int64_t u = u0 + l;
      uint16_t& lo = lowest[l] = 0xFFFF;
      uint16_t& hi = highest[l] = 0;
      if (spread) {
        int64_t* bu = obest + u * 4 * kb;
        for (int64_t blk = 0; blk < nb; ++blk) {
          const uint16_t* kk = k + blk * 32;
          const int64_t m = std::min<int64_t>(32, c - blk * 32);
          uint16_t most = 0, least = 0xFFFF;
          if (m == 32) {   // a fixed count: vectorised
            for (int64_t t = 0; t < 32; ++t) {
              most = std::max(most, key_of(kk[t]));
              least = std::min(least, key_of(kk[t]));
            }
          } else {
            for (int64_t t = 0; t < m; ++t) {
              most = std::max(most, key_of(kk[t]));
              least = std::min(least, key_of(kk[t]));
            }
          }
          lo = std::min(lo, least);
          hi = std::max(hi, most);
          int64_t top = most, bottom = 65535 - least;   // the scores; -1: no finite key
          if (most > kLastFinite || least < kFirstFinite) {   // inf or NaN here: the finite keys alone
            top = bottom = -1;
            for (int64_t t = 0; t < m; ++t) {
              const uint16_t key = key_of(kk[t]);
              if (key >= kFirstFinite && key <= kLastFinite) {
                top = std::max<int64_t>(top, key);
                bottom = std::max<int64_t>(bottom, 65535 - key);
              }
            }
          }
          offer(bu, kb, top, kk, m, top, offset + blk * 32);
          offer(bu + 2 * kb, kb, bottom, kk, m, 65535 - bottom, offset + blk * 32);
        }
      } else {
        for (int64_t t = 0; t < c; ++t) {
          lo = std::min(lo, key_of(k[t]));
          hi = std::max(hi, key_of(k[t]));
        }
      }
      for (int64_t j = 0; j < q; ++j) {
        if (fd[u * q + j] >= 0) continue;
        const uint16_t want = bits_of(static_cast<uint16_t>(tg[u * q + j]));   // as bits: -0 and +0 alike
        const uint16_t also = want == 0 ? 0x8000 : want;
        for (int64_t t0 = 0; t0 < c && fd[u * q + j] < 0; t0 += 256) {   // no early exit inside: vectorised
          const int64_t t1 = std::min(c, t0 + 256);
          bool hit = false;
          for (int64_t t = t0; t < t1; ++t) hit |= (k[t] == want) | (k[t] == also);
          if (!hit) continue;
          for (int64_t t = t0; t < t1; ++t)
            if (k[t] == want || k[t] == also) {
              fd[u * q + j] = offset + t;
              break;
            }
        }
      }
    }
    for (int64_t l0 = 0; l0 < w; l0 += 4) {   // 4 units at a time: their tables fit in the cache
      const int32_t* tables[4];
      const uint16_t* lane_bits[4];
      for (int64_t l = l0; l < std::min(w, l0 + 4); ++l) {
        tables[l - l0] = lut + ((u0 + l) << 16);
        lane_bits[l - l0] = src + l * stride;
        warm(tables[l - l0], lowest[l], highest[l]);
      }
      if (l0 + 4 <= w) {
        look_up4(tables, lane_bits, c, kLanes, r + l0, bt + l0);
      } else {
        for (int64_t l = l0; l < w; ++l) look_up(tables[l - l0], lane_bits[l - l0], c, kLanes, r + l, bt + l);
      }
    }
    double* gr = s.gr.data();
    double* gx = s.gx.data();
    s.ar.resize(d * kLanes);
    s.ax.resize(d * kLanes);
    double* ar = s.ar.data();
    double* ax = s.ax.data();
    if (wide) {
      sweep_any(c, d, r, bt, gid, code32, tr, tx, gr, gx, ar, ax);
    } else {
      sweep_any(c, d, r, bt, gid, code16, tr, tx, gr, gx, ar, ax);
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
    const uint16_t* src = b + p0 * ld;   // unit by unit: as they are
    int64_t stride = ld;
    if (!ld) {
      s.rows.resize(kPiece * c);
      copy_keys<true>(b, 0, c, h, p0, p1 - p0, s.rows.data());
      src = s.rows.data();
      stride = c;
    }
    for (int64_t u0 = p0; u0 < p1; u0 += kLanes)
      lanes(u0, std::min(p1, u0 + kLanes) - u0, src + (u0 - p0) * stride, stride, s);
  });
}

// The circular-shift null's rank columns, a block of characters at a time: out (W, n)
// float32, columns offset..offset+c of row u = lut2[u][key of bits[t, u]] (doubled midranks;
// 0 for inf/NaN), and finite[u] += how many of them are finite. bits (c, W) int16.
void rank_rows(torch::Tensor bits, torch::Tensor lut2, torch::Tensor out, int64_t offset, torch::Tensor finite,
               int64_t threads) {
  const int64_t ld = check_bits(bits);
  const int64_t c = bits.size(0), w = bits.size(1), n = out.size(1);
  check(lut2, torch::kInt32, w, 65536, "lut2: (W, 65536) int32");
  check(out, torch::kFloat32, w, n, "out: (W, n) float32");
  TORCH_CHECK(finite.scalar_type() == torch::kInt64 && finite.is_contiguous() && finite.numel() == w,
              "finite: (W,) int64");
  TORCH_CHECK(offset >= 0 && offset + c <= n, "rank_rows: the block ends past out");
  const uint16_t* b = reinterpret_cast<const uint16_t*>(bits.data_ptr<int16_t>());
  const int32_t* lut = lut2.data_ptr<int32_t>();
  float* o = out.data_ptr<float>();
  int64_t* fin = finite.data_ptr<int64_t>();
  in_pieces<std::vector<uint16_t>>(w, 1, threads, [&](int64_t u, int64_t, std::vector<uint16_t>& keys) {
    keys.resize(c);
    copy_keys(b, ld, c, w, u, 1, keys.data());
    const int32_t* lu = lut + (u << 16);
    float* ou = o + u * n + offset;
    int64_t m = 0;
    for (int64_t t = 0; t < c; ++t) {
      const int32_t r = lu[keys[t]];
      ou[t] = static_cast<float>(r);
      m += r > 0;
    }
    fin[u] += m;
  });
}

// Centres the rows of rank_rows's out: x > 0 becomes x - (finite[u] + 1) (the doubled
// midrank's deviation from the mean), the rest 0; ss[u] = the sum of their squares / 4.
void centre_rows(torch::Tensor out, torch::Tensor finite, torch::Tensor ss, int64_t threads) {
  const int64_t w = out.size(0), n = out.size(1);
  check(out, torch::kFloat32, w, n, "out: (W, n) float32");
  TORCH_CHECK(finite.scalar_type() == torch::kInt64 && finite.is_contiguous() && finite.numel() == w,
              "finite: (W,) int64");
  TORCH_CHECK(ss.scalar_type() == torch::kFloat64 && ss.is_contiguous() && ss.numel() == w, "ss: (W,) float64");
  float* o = out.data_ptr<float>();
  const int64_t* fin = finite.data_ptr<int64_t>();
  double* q = ss.data_ptr<double>();
  in_pieces<int>(w, 1, threads, [&](int64_t u, int64_t, int&) {
    float* ou = o + u * n;
    const float mean = static_cast<float>(fin[u] + 1);   // an integer below 2^24: exact
    double sum = 0;
    for (int64_t t = 0; t < n; ++t) {
      const float x = ou[t] > 0 ? ou[t] - mean : 0.0f;
      ou[t] = x;
      sum += static_cast<double>(x) * x;
    }
    q[u] = sum / 4;
  });
}

// The 8 x 8 tile of 16-bit items at src (rows `from` apart) written transposed to dst
// (rows `to` apart). Where dst's rows are 16-byte aligned they are stored past the cache
// (streaming stores): the block they go to is larger than the cache, and a plain store
// would first read each line it writes from memory.
inline void transpose8(const uint16_t* src, int64_t from, uint16_t* dst, int64_t to) {
#ifdef __SSE2__
  __m128i a[8], b[8], c[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * from));
  for (int i = 0; i < 4; ++i) {
    b[2 * i] = _mm_unpacklo_epi16(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm_unpackhi_epi16(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i)
    for (int half = 0; half < 2; ++half) {   // b[4i + half] with b[4i + half + 2]
      c[4 * i + 2 * half] = _mm_unpacklo_epi32(b[4 * i + half], b[4 * i + half + 2]);
      c[4 * i + 2 * half + 1] = _mm_unpackhi_epi32(b[4 * i + half], b[4 * i + half + 2]);
    }
  const bool aligned = ((reinterpret_cast<uintptr_t>(dst) | static_cast<uintptr_t>(to * 2)) & 15) == 0;
  for (int i = 0; i < 4; ++i) {   // column 2i and 2i + 1 from c[i] (rows 0-3) and c[i + 4] (rows 4-7)
    __m128i* lo = reinterpret_cast<__m128i*>(dst + (2 * i) * to);
    __m128i* hi = reinterpret_cast<__m128i*>(dst + (2 * i + 1) * to);
    if (aligned) {
      _mm_stream_si128(lo, _mm_unpacklo_epi64(c[i], c[i + 4]));
      _mm_stream_si128(hi, _mm_unpackhi_epi64(c[i], c[i + 4]));
    } else {
      _mm_storeu_si128(lo, _mm_unpacklo_epi64(c[i], c[i + 4]));
      _mm_storeu_si128(hi, _mm_unpackhi_epi64(c[i], c[i + 4]));
    }
  }
#else
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 8; ++j) dst[j * to + i] = src[i * from + j];
#endif
}

#ifndef _WIN32
// out (c, W) = rows first..first+c of a chunked (N, H) array stored uncompressed in the open
// file `fd`, its items `size` bytes (by_unit: each unit's c items consecutive, units
// out.stride(1) >= c items apart; a multiple of 8 lets the 16-bit tiles stream past the
// cache): chunk (i, j) (rows i*cr.., units j*cu..) lies at byte offsets[i, j]. cols (W,)
// int64: the units wanted, increasing; empty for all H. Each chunk is read whole (pread)
// into a buffer of the thread, then its rows are copied out: HDF5's hyperslab copies cost
// more than the analysis of what they read. Returns false when a read comes back short (a
// file cut since its chunks were listed).
bool gather(int64_t fd, torch::Tensor offsets, int64_t h, int64_t cr, int64_t cu, int64_t size, int64_t first,
            torch::Tensor cols, torch::Tensor out, bool by_unit, int64_t threads) {
  TORCH_CHECK(offsets.scalar_type() == torch::kInt64 && offsets.dim() == 2 && offsets.is_contiguous(),
              "offsets: (row chunks, unit chunks) int64");
  TORCH_CHECK(cols.scalar_type() == torch::kInt64 && cols.dim() == 1 && cols.is_contiguous(), "cols: (W,) int64");
  TORCH_CHECK(out.dim() == 2 && out.element_size() == size &&
              (by_unit ? out.stride(0) == 1 && (out.size(1) <= 1 || out.stride(1) >= out.size(0))
                       : out.is_contiguous()),
              "out: (c, W) of the item size, contiguous (by_unit: unit by unit)");
  const int64_t c = out.size(0), w = cols.numel() ? cols.numel() : h, nj = offsets.size(1);
  const int64_t ld = by_unit && out.size(1) > 1 ? out.stride(1) : c;   // items from one unit to the next
  TORCH_CHECK(out.size(1) == w && cr > 0 && cu > 0 && nj * cu >= h && first >= 0 &&
              (c == 0 || (first + c - 1) / cr < offsets.size(0)), "gather: shapes do not match");
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* col = cols.numel() ? cols.data_ptr<int64_t>() : nullptr;
  uint8_t* dst = static_cast<uint8_t*>(out.data_ptr());
  const int64_t chunk_row = cu * size, chunk_bytes = cr * chunk_row;
  // The unit chunks that hold wanted units, and per chunk the range of cols it holds.
  std::vector<std::tuple<int64_t, int64_t, int64_t>> parts;   // (j, first col, end col)
  if (!col) {
    for (int64_t j = 0; j < nj; ++j) parts.emplace_back(j, 0, 0);
  } else {
    for (int64_t k = 0; k < w;) {
      const int64_t j = col[k] / cu;
      int64_t e = k;
      while (e < w && col[e] / cu == j) ++e;
      parts.emplace_back(j, k, e);
      k = e;
    }
  }
  const int64_t i0 = first / cr, i1 = c ? (first + c - 1) / cr + 1 : i0;
  std::atomic<bool> ok{true};
  in_pieces<std::vector<uint8_t>>(i1 - i0, 1, threads, [&](int64_t p, int64_t, std::vector<uint8_t>& buf) {
    const int64_t i = i0 + p;
    const int64_t r0 = std::max(first, i * cr) - i * cr, r1 = std::min(first + c, (i + 1) * cr) - i * cr;
    buf.resize(parts.size() * chunk_bytes);
    // The wanted chunks of this row, read together where they lie one after another in the
    // file (as rnnviz dump writes them): fewer, larger reads.
    for (size_t p0 = 0; p0 < parts.size();) {
      size_t p1 = p0 + 1;
      while (p1 < parts.size() &&
             off[i * nj + std::get<0>(parts[p1])] == off[i * nj + std::get<0>(parts[p1 - 1])] + chunk_bytes)
        ++p1;
      const int64_t want = static_cast<int64_t>(p1 - p0) * chunk_bytes;
      int64_t got = 0;
      while (got < want) {
        const ssize_t n = pread(static_cast<int>(fd), buf.data() + p0 * chunk_bytes + got, want - got,
                                off[i * nj + std::get<0>(parts[p0])] + got);
        if (n <= 0) break;
        got += n;
      }
      if (got < want) {
        ok = false;
        return;
      }
      p0 = p1;
    }
    for (size_t p = 0; p < parts.size(); ++p) {
      const auto& [j, k0, k1] = parts[p];
      const uint8_t* chunk = buf.data() + p * chunk_bytes;
      if (by_unit && size == 2) {   // transposed here, from a chunk in the cache
        const int64_t a = col ? k0 : j * cu, e = col ? k1 : std::min(h, (j + 1) * cu);
        // Units a..e of out are consecutive in the chunk too (all of it, or a range of cols):
        // out's unit k is the chunk's column w0 + k - a.
        const bool consecutive = !col || col[e - 1] - col[a] == e - 1 - a;
        const int64_t w0 = col ? col[a] % cu : 0;
        const uint16_t* src = reinterpret_cast<const uint16_t*>(chunk);
        uint16_t* to = reinterpret_cast<uint16_t*>(dst) + i * cr - first;   // + k * c + r: unit k, row r
        int64_t k = a, r_end = r0;
        if (consecutive) {              // whole 8 x 8 tiles
          r_end = r0 + (r1 - r0) / 8 * 8;
          for (; k + 8 <= e; k += 8)
            for (int64_t r = r0; r < r_end; r += 8) transpose8(src + r * cu + w0 + (k - a), cu, to + k * ld + r, ld);
        }
        for (int64_t kk = a; kk < e; ++kk) {   // what the tiles left: the last units, the last rows
          const int64_t within = col ? col[kk] % cu : kk - j * cu;
          for (int64_t r = (kk < k ? r_end : r0); r < r1; ++r) to[kk * ld + r] = src[r * cu + within];
        }
        continue;
      }
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t t = i * cr + r - first;
        const uint8_t* src = chunk + r * chunk_row;
        if (by_unit) {
          for (int64_t k = (col ? k0 : j * cu); k < (col ? k1 : std::min(h, (j + 1) * cu)); ++k)
            std::memcpy(dst + (k * ld + t) * size, src + (col ? col[k] % cu : k - j * cu) * size, size);
          continue;
        }
        uint8_t* row = dst + t * w * size;
        if (!col) {
          std::memcpy(row + j * chunk_row, src, std::min(cu, h - j * cu) * size);
        } else {
          for (int64_t k = k0; k < k1; ++k) std::memcpy(row + k * size, src + (col[k] % cu) * size, size);
        }
      }
    }
#ifdef __SSE2__
    _mm_sfence();   // the streaming stores reach memory before the thread reports its piece done
#endif
  });
  return ok;
}
#endif

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("count_keys", &count_keys, "hist[u, key(bits[i, u])] += 1", py::call_guard<py::gil_scoped_release>());
  m.def("unit_table", &unit_table, "per unit: doubled midranks, moments, order statistics",
        py::call_guard<py::gil_scoped_release>());
  m.def("accumulate", &accumulate, "per unit: rank and value sums per group of characters and against weights, "
        "the running top k of the extremes of every 32 characters, the first character holding given keys",
        py::call_guard<py::gil_scoped_release>());
  m.def("rank_rows", &rank_rows, "the null's rank columns: doubled midranks of a block of characters",
        py::call_guard<py::gil_scoped_release>());
  m.def("centre_rows", &centre_rows, "the null's rank columns centred, and their sums of squares",
        py::call_guard<py::gil_scoped_release>());
#ifndef _WIN32
  m.def("gather", &gather, "rows of a chunked array stored uncompressed, read from the file",
        py::call_guard<py::gil_scoped_release>());
#endif
}
