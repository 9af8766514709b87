// One LSTM layer run step by step, writing every gate, c and h as it goes.
//
// PyTorch's fused LSTM keeps its gates to itself, so without this the recorder has to
// compute every gate a second time. Here each step computes the gate pre-activations
//     a_t = init_t + x_t W_ih^T + h_{t-1} W_hh^T
// where init_t is the bias (b_ih + b_hh), or a row of a lookup table for a character
// model's first layer (embedding W_ih^T + bias, one row per character), then the gate
// nonlinearities and the cell update, and stores them straight into the (6, B, T, H)
// output in rnnviz's kind order c, h, i, f, g, o.
//
// The products use our own AVX-512 loop where the CPU has it (rnnviz.kernel compiles
// with -march=native where the compiler takes it) and 4H is a multiple of 128;
// otherwise the input projection of the whole chunk is one ATen matrix product and the
// per-step product is oneDNN's packed-weight kernel (when given) or ATen's mm, on this
// thread only (OneThread). Compiled with -ffast-math (MSVC: /fp:fast) so that the exp
// calls vectorise; the divisions are done in double, which keeps the gates unbiased
// (integrating cells add up a biased forget gate over thousands of steps). Builds with
// GCC, Clang and MSVC.
#include <torch/extension.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if __has_include(<c10/util/ParallelGuard.h>)
#include <c10/util/ParallelGuard.h>
#define RNNVIZ_HAS_PARALLEL_GUARD 1
#endif

#if defined(_MSC_VER)
#define RNNVIZ_RESTRICT __restrict
#else
#define RNNVIZ_RESTRICT __restrict__
#endif

// MKL (inside PyTorch's x86 builds) threads its products across the cores set by
// torch.set_num_threads. A step's product is too small for that: with 2 threads it ran
// 5x slower than with 1. MKL's thread-local setting, where the library has it (a weak
// symbol: null without MKL; not on MSVC). MKL's C name for it (mkl_service.h's macro
// mkl_set_num_threads_local expands to it; the lower-case symbol is the Fortran one,
// which takes a pointer).
#if defined(__GNUC__) && !defined(_WIN32)
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));
// oneDNN (the packed product) and ATen size their OpenMP teams by this thread's
// setting, which omp_set_num_threads changes for the calling thread only. Weak too:
// null where PyTorch is built without OpenMP.
extern "C" void omp_set_num_threads(int) __attribute__((weak));
extern "C" int omp_get_max_threads(void) __attribute__((weak));
#define RNNVIZ_MKL_LOCAL 1
#endif

namespace {

// While alive, ATen's parallel_for and MKL run on the calling thread only (neither
// touches the other threads' settings, so several layers can step at once).
class OneThread {
 public:
  OneThread() {
#ifdef RNNVIZ_MKL_LOCAL
    if (MKL_Set_Num_Threads_Local) previous_ = MKL_Set_Num_Threads_Local(1);
    if (omp_set_num_threads && omp_get_max_threads) {
      omp_previous_ = omp_get_max_threads();
      omp_set_num_threads(1);
    }
#endif
  }
  ~OneThread() {
#ifdef RNNVIZ_MKL_LOCAL
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);  // 0: back to the global setting
    if (omp_previous_ > 0) omp_set_num_threads(omp_previous_);
#endif
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
#ifdef RNNVIZ_HAS_PARALLEL_GUARD
  c10::ParallelGuard guard_{true};
#endif
  int previous_ = 0;
  int omp_previous_ = 0;
};

// exp's argument is kept within +-30: -ffast-math assumes finite values, so exp may not
// overflow. sigmoid(+-30) and tanh(+-15) are already 0 or 1 (to 1e-13) in float32.
inline float clamp30(float x) { return std::fmin(std::fmax(x, -30.f), 30.f); }

inline void sigmoid_into(const float* RNNVIZ_RESTRICT a, float* RNNVIZ_RESTRICT out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(1.0 / (1.0 + expf(-clamp30(a[j]))));
}

// tanh(x) = 2 sigmoid(2x) - 1: one exp, so it vectorises like the sigmoid.
inline void tanh_into(const float* RNNVIZ_RESTRICT a, float* RNNVIZ_RESTRICT out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = static_cast<float>(2.0 / (1.0 + expf(clamp30(-2.f * a[j]))) - 1.0);
}

// c is carried in float64 between steps: integrating cells (f near 1) reach |c| in the
// hundreds, where float32 rounding of c itself would add up over thousands of steps.
inline void cell_update(const float* RNNVIZ_RESTRICT i, const float* RNNVIZ_RESTRICT f,
                        const float* RNNVIZ_RESTRICT g, const float* RNNVIZ_RESTRICT o,
                        double* RNNVIZ_RESTRICT c, float* RNNVIZ_RESTRICT h,
                        float* RNNVIZ_RESTRICT out_c, float* RNNVIZ_RESTRICT out_h, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const double cd = static_cast<double>(f[j]) * c[j] + static_cast<double>(i[j]) * g[j];
    const float cn = static_cast<float>(cd);
    const float hn = o[j] * static_cast<float>(2.0 / (1.0 + expf(clamp30(-2.f * cn))) - 1.0);
    c[j] = cd;
    h[j] = hn;
    out_c[j] = cn;
    out_h[j] = hn;
  }
}

// The clamp table of a chunk: lane b's entries are [off[b], off[b + 1]); each entry's
// meta is (kind, unit, start, stop) in text steps, val its value. Null off: none.
struct Clamps {
  const int64_t* off = nullptr;
  const int64_t* meta = nullptr;
  const float* val = nullptr;
};

enum ClampKind : int64_t { kC = 0, kH = 1, kGateI = 2 };

// Lane b at text step t: gates (sc + 2H .. sc + 6H, i f g o) before the cell update.
inline void clamp_gates(const Clamps& cl, int64_t b, int64_t t, float* sc, int64_t H) {
  for (int64_t e = cl.off[b]; e < cl.off[b + 1]; ++e) {
    const int64_t* m = cl.meta + 4 * e;
    if (m[0] >= kGateI && m[2] <= t && t < m[3]) sc[m[0] * H + m[1]] = cl.val[e];
  }
}

// After the cell update: c (the float64 state, the row sc, and h = o tanh(c) from it),
// then h (the state and the row sc + H).
inline void clamp_state(const Clamps& cl, int64_t b, int64_t t, float* sc, double* c, float* h, int64_t H) {
  for (int pass = kC; pass <= kH; ++pass) {
    for (int64_t e = cl.off[b]; e < cl.off[b + 1]; ++e) {
      const int64_t* m = cl.meta + 4 * e;
      if (m[0] != pass || t < m[2] || t >= m[3]) continue;
      const int64_t u = m[1];
      const float v = cl.val[e];
      if (pass == kC) {
        c[u] = v;
        sc[u] = v;
        h[u] = sc[5 * H + u] * static_cast<float>(2.0 / (1.0 + expf(clamp30(-2.f * v))) - 1.0);
        sc[H + u] = h[u];
      } else {
        h[u] = v;
        sc[H + u] = v;
      }
    }
  }
}

// n float32 values to float16, rounding to nearest even like PyTorch's .to(float16).
inline void store_half(const float* RNNVIZ_RESTRICT src, at::Half* RNNVIZ_RESTRICT dst, int64_t n) {
  int64_t j = 0;
#ifdef __F16C__
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
  }
#endif
  for (; j < n; ++j) dst[j] = at::Half(src[j]);
}

// What one step's product reads: per lane, where its init row starts (any row of a
// table); the x_t of lane b at x + b * x_stride (In values each) and h_{t-1} at
// h + b * H.
struct StepInputs {
  std::vector<const float*> init;
  const float* x;
  int64_t x_stride;
};

#ifdef __AVX512F__
// acc[r, 16 V columns from j0] += rows[r * stride, :K] @ wt[:K, j0 ...] for R rows: each
// weight vector is loaded once for all R rows.
template <int R, int V>
inline void accumulate(__m512* acc, const float* RNNVIZ_RESTRICT rows, int64_t stride, int64_t K,
                       const float* RNNVIZ_RESTRICT wt, int64_t G, int64_t j0) {
  for (int64_t k = 0; k < K; ++k) {
    const float* w = wt + k * G + j0;
    __m512 wv[V];
#pragma GCC unroll 16
    for (int q = 0; q < V; ++q) wv[q] = _mm512_loadu_ps(w + 16 * q);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 xr = _mm512_set1_ps(rows[r * stride + k]);
#pragma GCC unroll 16
      for (int q = 0; q < V; ++q) acc[r * V + q] = _mm512_fmadd_ps(xr, wv[q], acc[r * V + q]);
    }
  }
}

// out[r] (G) = init[r] + x[r] W_ih^T + h[r] W_hh^T for R lanes and the 16 V columns from
// j0, in R V accumulators held in registers.
template <int R, int V>
inline void product_block(const float* const* init, const float* x, int64_t x_stride, int64_t In,
                          const float* w_ih_t, const float* h, int64_t H, const float* w_hh_t,
                          int64_t G, float* RNNVIZ_RESTRICT out, int64_t j0) {
  __m512 acc[R * V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int q = 0; q < V; ++q) acc[r * V + q] = _mm512_loadu_ps(init[r] + j0 + 16 * q);
  accumulate<R, V>(acc, x, x_stride, In, w_ih_t, G, j0);
  accumulate<R, V>(acc, h, H, H, w_hh_t, G, j0);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int q = 0; q < V; ++q) _mm512_storeu_ps(out + r * G + j0 + 16 * q, acc[r * V + q]);
}

template <int R, int V>
void product_lanes(const StepInputs& in, int64_t b, int64_t In, const float* w_ih_t, const float* h,
                   int64_t H, const float* w_hh_t, int64_t G, float* pre) {
  for (int64_t j0 = 0; j0 < G; j0 += 16 * V)
    product_block<R, V>(&in.init[b], in.x + b * in.x_stride, in.x_stride, In, w_ih_t, h + b * H, H,
                        w_hh_t, G, pre + b * G, j0);
}

// pre (B, G) for one step, G a multiple of 128. Lanes eight at a time (16 accumulators:
// enough independent FMAs to keep both FMA pipes busy), the rest in pairs and singles
// with wider column blocks. Measured on AVX-512 (EPYC), one thread, 256 x 1024: batch 1
// 10 us against MKL sgemm's 18; batch 16 76 us against 124.
void step_product(const StepInputs& in, int64_t B, int64_t In, const float* w_ih_t, const float* h,
                  int64_t H, const float* w_hh_t, int64_t G, float* pre) {
  int64_t b = 0;
  for (; b + 8 <= B; b += 8) product_lanes<8, 2>(in, b, In, w_ih_t, h, H, w_hh_t, G, pre);
  for (; b + 2 <= B; b += 2) product_lanes<2, 8>(in, b, In, w_ih_t, h, H, w_hh_t, G, pre);
  for (; b < B; ++b) product_lanes<1, 8>(in, b, In, w_ih_t, h, H, w_hh_t, G, pre);
}
constexpr bool kOwnProduct = true;
#else
void step_product(const StepInputs&, int64_t, int64_t, const float*, const float*, int64_t,
                  const float*, int64_t, float*) {}
constexpr bool kOwnProduct = false;
#endif

// mkldnn::_linear_pointwise(X, W_packed, bias?, attr, scalars, algorithm): x W^T.
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack{x, packed, c10::IValue(), std::string("none"),
                          c10::List<std::optional<at::Scalar>>(), c10::IValue()};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

void check(bool ok, const char* what) { TORCH_CHECK(ok, "rnnviz kernel: ", what); }

}  // namespace

// x (M, K) @ w_t (K, G) + bias (1, G) -> (M, G), for the input term of a whole chunk at
// once (run_layer then takes it as init): rows eight at a time, as in a step.
at::Tensor project(const at::Tensor& x, const at::Tensor& w_t, const at::Tensor& bias) {
  check(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kFloat && w_t.dim() == 2 &&
            w_t.is_contiguous() && w_t.size(0) == x.size(1) && bias.is_contiguous() &&
            bias.numel() == w_t.size(1),
        "project: expected x (M, K), w_t (K, G) and bias (1, G), contiguous float32");
  const int64_t M = x.size(0), K = x.size(1), G = w_t.size(1);
  if (!kOwnProduct || G % 128 != 0) return at::addmm(bias.view({G}), x, w_t);
  at::Tensor out = at::empty({M, G}, x.options());
  const float* xp = x.data_ptr<float>();
  const StepInputs rows{std::vector<const float*>(M, bias.data_ptr<float>()), xp, K};
  step_product(rows, M, K, w_t.data_ptr<float>(), nullptr, 0, nullptr, G, out.data_ptr<float>());
  return out;
}

// x (B, T, In) float32, or an empty tensor for no x term; w_ih_t (In, G).
// init: (B, T, G), the start of every lane's every step (an input term computed for the
// whole chunk beforehand); or (V, G) with ids (B, T) int64, row ids[b, t] starting lane
// b's step t; or (1, G), the bias, starting every step.
// w_hh_t (H, G); packed: oneDNN's packed W_hh or an empty tensor (used only without the
// AVX-512 loop). h, c (B, H): the state before the chunk, overwritten with the state
// after it. out (6, B, T, H) float32 or float16, written in full; with float16, h32
// (B, T, H) float32 receives h as computed (the next layer's input), else it is empty.
// Clamps: offsets (B + 1) int64, meta (N, 4) int64 (kind, unit, start, stop), values
// (N,) float32, or three empty tensors; t0 is the text step of the chunk's first step.
void run_layer(const at::Tensor& x, const at::Tensor& w_ih_t, const at::Tensor& init,
               const at::Tensor& ids, const at::Tensor& w_hh_t, const at::Tensor& packed,
               at::Tensor& h, at::Tensor& c, at::Tensor& out, at::Tensor& h32,
               const at::Tensor& clamp_offsets, const at::Tensor& clamp_meta,
               const at::Tensor& clamp_values, int64_t t0) {
  const at::ScalarType f32 = at::kFloat;
  const bool half = out.scalar_type() == at::kHalf;
  check(out.dim() == 4 && out.size(0) == 6 && out.is_contiguous() && (half || out.scalar_type() == f32),
        "out: expected a contiguous float32 or float16 (6, B, T, H) tensor");
  const int64_t B = out.size(1), T = out.size(2), H = out.size(3), G = 4 * H;
  check(!half || (h32.sizes() == at::IntArrayRef({B, T, H}) && h32.is_contiguous() && h32.scalar_type() == f32),
        "h32: expected a contiguous float32 (B, T, H) tensor with a float16 out");
  const bool has_x = x.numel() > 0;
  const int64_t In = has_x ? x.size(2) : 0;
  check(!has_x || (x.dim() == 3 && x.size(0) == B && x.size(1) == T && x.is_contiguous() &&
                   x.scalar_type() == f32 && w_ih_t.is_contiguous() &&
                   w_ih_t.sizes() == at::IntArrayRef({In, G})),
        "x: expected a contiguous float32 (B, T, In) tensor and w_ih_t (In, 4H)");
  const bool has_ids = ids.numel() > 0;
  const bool per_step = init.dim() == 3;
  check(init.is_contiguous() && init.scalar_type() == f32 && init.size(-1) == G &&
            (per_step ? init.size(0) == B && init.size(1) == T && !has_ids
                      : init.dim() == 2 && (has_ids || init.size(0) == 1)),
        "init: expected a contiguous float32 (B, T, 4H) tensor, a (V, 4H) table with ids, "
        "or a (1, 4H) bias");
  check(!has_ids || (ids.sizes() == at::IntArrayRef({B, T}) && ids.is_contiguous() &&
                     ids.scalar_type() == at::kLong),
        "ids: expected a contiguous int64 (B, T) tensor");
  check(w_hh_t.sizes() == at::IntArrayRef({H, G}) && w_hh_t.is_contiguous() && w_hh_t.scalar_type() == f32,
        "w_hh_t: expected a contiguous float32 (H, 4H) tensor");
  check(h.sizes() == at::IntArrayRef({B, H}) && c.sizes() == h.sizes() && h.is_contiguous() &&
            c.is_contiguous() && h.scalar_type() == f32 && c.scalar_type() == f32,
        "h, c: expected contiguous float32 (B, H) tensors");
  Clamps cl;
  if (clamp_offsets.numel() > 0) {
    check(clamp_offsets.dim() == 1 && clamp_offsets.size(0) == B + 1 && clamp_offsets.is_contiguous() &&
              clamp_offsets.scalar_type() == at::kLong,
          "clamp offsets: expected a contiguous int64 (B + 1,) tensor");
    const int64_t n = clamp_values.numel();
    check(clamp_meta.sizes() == at::IntArrayRef({n, 4}) && clamp_meta.is_contiguous() &&
              clamp_meta.scalar_type() == at::kLong && clamp_values.is_contiguous() &&
              clamp_values.scalar_type() == f32,
          "clamps: expected int64 meta (N, 4) and float32 values (N,), contiguous");
    cl.off = clamp_offsets.data_ptr<int64_t>();
    cl.meta = clamp_meta.data_ptr<int64_t>();
    cl.val = clamp_values.data_ptr<float>();
    check(cl.off[0] == 0 && cl.off[B] == n, "clamp offsets: expected 0 .. N");
    for (int64_t b = 0; b < B; ++b) check(cl.off[b] <= cl.off[b + 1], "clamp offsets: expected a rising run");
    for (int64_t e = 0; e < n; ++e) {
      check(cl.meta[4 * e] >= 0 && cl.meta[4 * e] < 6 && cl.meta[4 * e + 1] >= 0 && cl.meta[4 * e + 1] < H,
            "clamps: a kind or unit out of range");
    }
  }
  const int64_t V = per_step ? 0 : init.size(0);
  const int64_t* idp = has_ids ? ids.data_ptr<int64_t>() : nullptr;
  if (has_ids) {
    for (int64_t n = 0; n < B * T; ++n) check(idp[n] >= 0 && idp[n] < V, "ids: out of the table's range");
  }

  const bool own = kOwnProduct && G % 128 == 0;
  // Without our own loop: the whole chunk's init + x W_ih^T first, then mm per step.
  at::Tensor xw;
  if (!own) {
    xw = per_step  ? init
         : has_ids ? init.index_select(0, ids.reshape({-1})).view({B, T, G})
                   : init.view({1, 1, G}).expand({B, T, G});
    if (has_x) xw = at::add(xw, at::mm(x.reshape({B * T, In}), w_ih_t).view({B, T, G}));
    xw = xw.contiguous();
  }
  const bool use_packed = !own && packed.defined() && packed.numel() > 0;

  at::Tensor pre = at::empty({B, G}, out.options().dtype(f32));
  at::Tensor c64 = c.to(at::kDouble);
  float* hp = h.data_ptr<float>();
  double* cp = c64.data_ptr<double>();
  // Each step's values go to a float32 scratch row, then to out (converted if float16).
  at::Tensor scratch = at::empty({6, H}, out.options().dtype(f32));
  float* sc = scratch.data_ptr<float>();
  float* out32 = half ? nullptr : out.data_ptr<float>();
  at::Half* out16 = half ? out.data_ptr<at::Half>() : nullptr;
  float* hout = half ? h32.data_ptr<float>() : nullptr;
  const float* xp = has_x ? x.data_ptr<float>() : nullptr;
  const float* initp = init.data_ptr<float>();
  const float* w_ih = has_x ? w_ih_t.data_ptr<float>() : nullptr;
  const float* w_hh = w_hh_t.data_ptr<float>();
  const int64_t plane = B * T * H;
  const OneThread one_thread;
  StepInputs in{std::vector<const float*>(B), initp, has_x ? T * In : 0};
  for (int64_t t = 0; t < T; ++t) {
    float* pp;
    if (own) {
      for (int64_t b = 0; b < B; ++b) {
        in.init[b] = initp + (per_step ? b * T + t : has_ids ? idp[b * T + t] : 0) * G;
      }
      if (has_x) in.x = xp + t * In;
      pp = pre.data_ptr<float>();
      step_product(in, B, In, w_ih, hp, H, w_hh, G, pp);
    } else {
      if (use_packed) {
        pre = packed_linear(h, packed);
      } else {
        at::mm_out(pre, h, w_hh_t);
      }
      pp = pre.data_ptr<float>();
      const float* xwp = xw.data_ptr<float>();
      for (int64_t b = 0; b < B; ++b) {
        const float* row = xwp + (b * T + t) * G;
        for (int64_t j = 0; j < G; ++j) pp[b * G + j] += row[j];
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      const float* p = pp + b * G;
      const int64_t row = (b * T + t) * H;
      sigmoid_into(p, sc + 2 * H, H);
      sigmoid_into(p + H, sc + 3 * H, H);
      tanh_into(p + 2 * H, sc + 4 * H, H);
      sigmoid_into(p + 3 * H, sc + 5 * H, H);
      const bool clamped = cl.off != nullptr && cl.off[b] != cl.off[b + 1];
      if (clamped) clamp_gates(cl, b, t0 + t, sc, H);
      cell_update(sc + 2 * H, sc + 3 * H, sc + 4 * H, sc + 5 * H, cp + b * H, hp + b * H, sc, sc + H, H);
      if (clamped) clamp_state(cl, b, t0 + t, sc, cp + b * H, hp + b * H, H);
      for (int k = 0; k < 6; ++k) {
        if (half) {
          store_half(sc + k * H, out16 + k * plane + row, H);
        } else {
          std::memcpy(out32 + k * plane + row, sc + k * H, H * sizeof(float));
        }
      }
      if (half) std::memcpy(hout + row, sc + H, H * sizeof(float));
    }
  }
  c.copy_(c64);
}

// Which product run_layer takes for a layer of hidden size H with B lanes: "avx512"
// (our own loop), "packed" (oneDNN's, given a packed W_hh) or "mm" (ATen's).
std::string product_path(int64_t H, int64_t B, bool packed) {
  if (kOwnProduct && (4 * H) % 128 == 0) return "avx512";
  return packed && B > 1 ? "packed" : "mm";
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("product_path", &product_path, "The per-step product run_layer takes: avx512, packed or mm");
  m.def("project", &project, "x @ w_t + bias: a chunk's input term at once",
        py::call_guard<py::gil_scoped_release>());
  m.def("run_layer", &run_layer, "One LSTM layer over a chunk, recording c, h and the gates",
        py::call_guard<py::gil_scoped_release>());
}
