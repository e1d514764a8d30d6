// bert_linear_int8: a dense layer for inference with int8 products (dynamic quantization).
//   out[m, n] = sx[m] * sw[n] * sum_k xq[m, k] * wq[k, n] + b[n],  xq[m, k] = round(x[m, k] * f[k] / sx[m])
// Weights are quantized once, ahead of time (weights/quantize.py): wq[K, N] int8 from w[k, n] / f[k],
// symmetric per output column, sw[n] = max_k |w[k, n] / f[k]| / 127. f[K] moves the spread of input
// channels that run large into the weights (SmoothQuant), so that the other channels keep their
// precision. Each call quantizes every row of x * f on its own range, sx[m] = max_k |x[m, k] f[k]| / 127,
// and stores it shifted by 128 as uint8, because AVX512-VNNI multiplies uint8 by int8. oneDNN's
// matmul takes the products into int32 and does the rest in its epilogue, given
// wshift[n] = -128 * sw[n] * sum_k wq[k, n] (the shift's share, made at export):
//   out = (sw[n] * acc[m, n] + wshift[n]) * sx[m] + b[n]
// (weights scales, bias, then two binary post-ops), then with attribute gelu the exact (erf) GELU,
// which saves a pass over the feed-forward layer's activations. Per-row and per-column scales keep
// an outlier row or column from costing the others precision; ONNX Runtime's dynamic quantization
// uses one scale per tensor. The weights are repacked once into the layout the product reads.
//
// Threads: MathThreads(), oneDNN's own OpenMP threads for the quantization too (threads.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "onednn.h"
#include "paddle/extension.h"

namespace {

using namespace bert_onednn;  // NOLINT: this file's whole job is calling it.

// xq[m, :] = round(x[m, :] * f / scale[m]) + 128 for rows [begin, end) of x [M, K].
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void QuantizeRows(const float *x, const float *f, int64_t begin, int64_t end, int64_t k, uint8_t *xq, float *scale) {
  for (int64_t r = begin; r < end; ++r) {
    const float *row = x + r * k;
    float largest = 0.0f;
#pragma omp simd reduction(max : largest)  // Vectorized with -fopenmp-simd; no OpenMP runtime.
    for (int64_t c = 0; c < k; ++c) largest = std::max(largest, std::fabs(row[c] * f[c]));
    const float step = largest > 0.0f ? largest / 127.0f : 1.0f;
    const float inverse = 1.0f / step;
    uint8_t *out = xq + r * k;
    // Clamped to [1, 255.5], then truncated: round half up of the value / step, plus 128.
    for (int64_t c = 0; c < k; ++c) {
      float shifted = std::min(std::max(row[c] * f[c] * inverse + 128.5f, 1.0f), 255.5f);
      out[c] = static_cast<uint8_t>(static_cast<int32_t>(shifted));
    }
    scale[r] = step;
  }
}

struct Attr {
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t post_ops = nullptr;
  Attr(const Desc &row_scale, const Desc &bias, bool gelu) {
    Check(dnnl_primitive_attr_create(&attr), "attribute creation");
    Check(dnnl_primitive_attr_set_scales_mask(attr, kArgWeights, 1 << 2), "weights scales");  // Per N.
    Check(dnnl_post_ops_create(&post_ops), "post-ops creation");
    Check(dnnl_post_ops_append_binary(post_ops, kBinaryMul, row_scale.md), "row scale post-op");
    Check(dnnl_post_ops_append_binary(post_ops, kBinaryAdd, bias.md), "bias post-op");
    if (gelu) Check(dnnl_post_ops_append_eltwise(post_ops, kEltwiseGeluErf, 0.0f, 0.0f), "GELU post-op");
    Check(dnnl_primitive_attr_set_post_ops(attr, post_ops), "post-ops");
  }
  Attr(const Attr &) = delete;
  ~Attr() {
    dnnl_post_ops_destroy(post_ops);
    dnnl_primitive_attr_destroy(attr);
  }
};

dnnl_memory_desc_t AnyLayout(int64_t k, int64_t n) {
  dnnl_memory_desc_t md = nullptr;
  dnnl_dims_t dims = {1, k, n};
  Check(dnnl_memory_desc_create_with_tag(&md, 3, dims, kS8, kFormatAny), "weights descriptor");
  return md;
}

dnnl_memory_desc_t Clone(const_dnnl_memory_desc_t md) {
  dnnl_memory_desc_t copy = nullptr;
  Check(dnnl_memory_desc_clone(&copy, md), "descriptor copy");
  return copy;
}

// The int8 matmul for one (M, K, N, gelu), made once: creating it took about 0.4 ms, near the time of
// a 202 x 1024 x 1024 product. Each batch shape adds a few; past kMaxCached the cache starts over.
struct Int8MatMul {
  Desc x, w, out, per_row, per_column, w_scale;
  Attr attr;
  std::unique_ptr<Primitive> matmul;
  std::unique_ptr<Desc> packed_w;  // The weights' layout that the product reads (oneDNN's choice).
  Int8MatMul(int64_t m, int64_t k, int64_t n, bool gelu)
      : x({1, m, k}, kU8), w(AnyLayout(k, n)), out({1, m, n}, kF32), per_row({1, m, 1}, kF32),
        per_column({1, 1, n}, kF32), w_scale({n}, kF32), attr(per_row, per_column, gelu) {
    dnnl_primitive_desc_t pd = nullptr;
    Check(dnnl_matmul_primitive_desc_create(&pd, GetRuntime().engine, x.md, w.md, per_column.md, out.md, attr.attr),
          "int8 matmul descriptor");
    matmul.reset(new Primitive(pd));
    packed_w.reset(new Desc(Clone(dnnl_primitive_desc_query_md(pd, kQueryWeightsMd, 0))));
  }
};

// The weights wq [K, N] repacked once into the layout a product reads, instead of at every call
// (which cost up to a third of a 202 x 1024 x 4096 product). Entries are found by the weights'
// address and checked against their per-column scale and shift, which differ between any two
// weight matrices in practice, so that memory reused for other weights never reads a stale pack.
struct PackedWeights {
  std::vector<float> scale, shift;  // The fingerprint: the weights' per-column scale and shift.
  Desc layout;
  std::unique_ptr<int8_t[]> data;
  PackedWeights(const float *w_scale, const float *w_shift, int64_t n, const_dnnl_memory_desc_t md)
      : scale(w_scale, w_scale + n), shift(w_shift, w_shift + n), layout(Clone(md)),
        data(new int8_t[dnnl_memory_desc_get_size(md)]) {}
  bool Fits(const float *w_scale, const float *w_shift) const {
    return std::equal(scale.begin(), scale.end(), w_scale) && std::equal(shift.begin(), shift.end(), w_shift);
  }
};

constexpr size_t kMaxPacked = 1024;  // About ten BERT-Large models' layers at a layout each.

const int8_t *Packed(const int8_t *wq, const float *w_scale, const float *w_shift, int64_t k, int64_t n,
                     const Desc &layout) {
  static std::mutex mutex;
  static std::map<const void *, std::vector<std::unique_ptr<PackedWeights>>> cache;
  static size_t entries = 0;
  std::lock_guard<std::mutex> lock(mutex);
  std::vector<std::unique_ptr<PackedWeights>> &packs = cache[wq];
  if (!packs.empty() && !packs.front()->Fits(w_scale, w_shift)) {  // Other weights at this address now.
    entries -= packs.size();
    packs.clear();
  }
  for (const std::unique_ptr<PackedWeights> &pack : packs) {
    if (dnnl_memory_desc_equal(pack->layout.md, layout.md)) return pack->data.get();
  }
  if (entries >= kMaxPacked) {
    for (auto &item : cache) item.second.clear();
    entries = 0;
  }
  std::unique_ptr<PackedWeights> pack(new PackedWeights(w_scale, w_shift, n, layout.md));
  Desc plain({1, k, n}, kS8);
  dnnl_primitive_desc_t pd = nullptr;
  Runtime &rt = GetRuntime();
  Check(dnnl_reorder_primitive_desc_create(&pd, plain.md, rt.engine, pack->layout.md, rt.engine, nullptr),
        "weights reorder descriptor");
  Primitive reorder(pd);
  Memory src(plain, const_cast<int8_t *>(wq)), dst(pack->layout, pack->data.get());
  reorder.Run({{kArgSrc, src.mem}, {kArgDst, dst.mem}});
  packs.push_back(std::move(pack));
  ++entries;
  return packs.back()->data.get();
}

constexpr size_t kMaxCached = 256;

Int8MatMul &CachedMatMul(int64_t m, int64_t k, int64_t n, bool gelu) {
  static std::mutex mutex;
  static std::map<std::array<int64_t, 4>, std::unique_ptr<Int8MatMul>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  const std::array<int64_t, 4> key = {m, k, n, gelu};
  auto found = cache.find(key);
  if (found != cache.end()) return *found->second;
  if (cache.size() >= kMaxCached) cache.clear();
  return *(cache[key] = std::unique_ptr<Int8MatMul>(new Int8MatMul(m, k, n, gelu)));
}

// out[M, N] = (w_scale * (xq . wq) + w_shift) * x_scale + b, on oneDNN's matmul. Every tensor is
// viewed with a leading axis of 1: oneDNN's brgemm kernels take a [1, M, 1] operand as a per-row
// post-op there, and fall back to its reference code for a [M, 1] one in two dimensions.
void MatMulInt8(const uint8_t *xq, const float *x_scale, const int8_t *wq, const float *w_scale,
                const float *w_shift, const float *b, float *out, int64_t m, int64_t k, int64_t n, bool gelu) {
  Int8MatMul &op = CachedMatMul(m, k, n, gelu);
  auto p = [](const void *data) { return const_cast<void *>(data); };
  const int8_t *packed = Packed(wq, w_scale, w_shift, k, n, *op.packed_w);
  Memory x_mem(op.x, p(xq)), w_mem(*op.packed_w, p(packed)), out_mem(op.out, out);
  Memory shift_mem(op.per_column, p(w_shift));
  Memory row_scale_mem(op.per_row, p(x_scale)), bias_mem(op.per_column, p(b)), w_scale_mem(op.w_scale, p(w_scale));
  op.matmul->Run({{kArgSrc, x_mem.mem}, {kArgWeights, w_mem.mem}, {kArgBias, shift_mem.mem}, {kArgDst, out_mem.mem},
                  {kArgAttrScales | kArgWeights, w_scale_mem.mem},
                  {kArgPostOpBase * 1 | kArgSrc1, row_scale_mem.mem},
                  {kArgPostOpBase * 2 | kArgSrc1, bias_mem.mem}});
}

}  // namespace

std::vector<paddle::Tensor> BertLinearInt8Forward(const paddle::Tensor &x, const paddle::Tensor &x_factor,
                                                  const paddle::Tensor &w, const paddle::Tensor &w_scale,
                                                  const paddle::Tensor &w_shift, const paddle::Tensor &b,
                                                  bool gelu) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, "bert_linear_int8 takes float32 x on the CPU");
  PD_CHECK(w.dtype() == paddle::DataType::INT8, "bert_linear_int8 takes int8 weights");
  PD_CHECK(x.shape().size() == 2 && w.shape().size() == 2 && x.shape()[1] == w.shape()[0],
           "bert_linear_int8 takes x [M, K] and w [K, N]");
  const int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
  PD_CHECK(x_factor.numel() == k && w_scale.numel() == n && w_shift.numel() == n && b.numel() == n,
           "bert_linear_int8 takes x_factor of [K], and w_scale, w_shift and b of [N]");
  auto out = paddle::empty({m, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (m == 0) return {out};
  std::unique_ptr<uint8_t[]> xq(new uint8_t[m * k]);  // Not zeroed: every byte is written.
  std::vector<float> x_scale(static_cast<size_t>(m));
  MathThreadsScope threads;
  ParallelBlocks(m, m * k >= (1 << 14), [&](int64_t begin, int64_t end, int) {
    QuantizeRows(x.data<float>(), x_factor.data<float>(), begin, end, k, xq.get(), x_scale.data());
  });
  MatMulInt8(xq.get(), x_scale.data(), w.data<int8_t>(), w_scale.data<float>(), w_shift.data<float>(),
             b.data<float>(), out.data<float>(), m, k, n, gelu);
  return {out};
}

std::vector<std::vector<int64_t>> BertLinearInt8InferShape(const std::vector<int64_t> &x,
                                                           const std::vector<int64_t> &x_factor,
                                                           const std::vector<int64_t> &w,
                                                           const std::vector<int64_t> &w_scale,
                                                           const std::vector<int64_t> &w_shift,
                                                           const std::vector<int64_t> &b) {
  return {{x[0], w[1]}};
}

std::vector<paddle::DataType> BertLinearInt8InferDtype(const paddle::DataType &x, const paddle::DataType &x_factor,
                                                       const paddle::DataType &w,
                                                       const paddle::DataType &w_scale,
                                                       const paddle::DataType &w_shift,
                                                       const paddle::DataType &b) {
  return {x};
}

PD_BUILD_OP(bert_linear_int8)
    .Inputs({"X", "XFactor", "W", "WScale", "WShift", "B"})
    .Outputs({"Out"})
    .Attrs({"gelu: bool"})
    .SetKernelFn(PD_KERNEL(BertLinearInt8Forward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLinearInt8InferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertLinearInt8InferDtype));
