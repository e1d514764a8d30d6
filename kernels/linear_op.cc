// bert_linear: out[M, N] = x[M, K] . w[K, N] + b[N], forward and backward on oneDNN's matmul.
//
// Why: Paddle 3.3.1 runs the training program's matmuls on its bundled MKL, which on AMD CPUs
// takes an AVX2 path at best, and its bias gradient is a slow column reduction; Paddle's own
// oneDNN kernels (FLAGS_use_onednn) give wrong gradients in training. This op calls the oneDNN
// library that Paddle already ships (paddle/libs/libdnnl.so.3) for the three products of a dense
// layer, on AVX-512 (or AMX) brgemm kernels.
//
// Attribute bf16: the products read x, w and the output gradient rounded to bfloat16 and
// accumulate in float32 (mixed precision, as torch.autocast does for linear layers); every
// tensor in the program stays float32 except output W16, the bfloat16 weights the forward pass
// made, which the backward pass reuses ([0, 0] in fp32 mode). Needs avx512_bf16 or amx_bf16 for speed.
//
// Attribute gelu_input: out = gelu(x) . w + b, with the exact (erf) GELU, for the feed-forward
// output layer. gelu(x) lives only inside each call: the backward pass computes it again from x,
// so a training program keeps one [rows, 4096] activation per layer instead of two (16.8 MB a
// layer at 8 x 128 tokens), and GELU and its gradient run on oneDNN's vectorized, multi-threaded
// eltwise kernels instead of Paddle's single-threaded ones.
//
// Threads: MathThreads() (threads.h), raised for the op's own calls only (onednn.h).
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "onednn.h"
#include "paddle/extension.h"

namespace {

using namespace bert_onednn;  // NOLINT: this file's whole job is calling it.

// dst[M, N] = a[M, K] . b[K, N] (+ bias[N]).
void MatMul(const Matrix &a, const Matrix &b, const float *bias, float *dst, int64_t n) {
  int64_t m = a.transposed ? a.cols : a.rows;
  Desc a_desc(a), b_desc(b), dst_desc(Matrix{dst, m, n, false, kF32});
  Desc bias_desc(Matrix{const_cast<float *>(bias), 1, n, false, kF32});
  RunMatMul(a_desc, a.data, b_desc, b.data, bias ? &bias_desc : nullptr, bias, dst_desc, dst);
}

// The exact (erf) GELU's forward primitive over the values `desc` describes.
dnnl_primitive_desc_t GeluDescriptor(const Desc &desc) {
  dnnl_primitive_desc_t pd = nullptr;
  Check(dnnl_eltwise_forward_primitive_desc_create(&pd, GetRuntime().engine, kForwardTraining, kEltwiseGeluErf,
                                                   desc.md, desc.md, 0.0f, 0.0f, nullptr),
        "GELU descriptor");
  return pd;
}

// g[n] = gelu(x[n]), the exact (erf) GELU, for n float32 values.
void Gelu(const float *x, float *g, int64_t n) {
  Desc desc({n}, kF32);
  Primitive gelu(GeluDescriptor(desc));
  Memory src(desc, const_cast<float *>(x)), dst(desc, g);
  gelu.Run({{kArgSrc, src.mem}, {kArgDst, dst.mem}});
}

// grad[n] *= gelu'(x[n]), in place: the gradient through the GELU of x.
void GeluBackward(const float *x, float *grad, int64_t n) {
  Desc desc({n}, kF32);
  Primitive forward(GeluDescriptor(desc));  // The backward descriptor's hint.
  dnnl_primitive_desc_t pd = nullptr;
  Check(dnnl_eltwise_backward_primitive_desc_create(&pd, GetRuntime().engine, kEltwiseGeluErf, desc.md, desc.md,
                                                    desc.md, 0.0f, 0.0f, forward.pd, nullptr),
        "GELU gradient descriptor");
  Primitive backward(pd);
  Memory src(desc, const_cast<float *>(x)), diff(desc, grad);
  backward.Run({{kArgSrc, src.mem}, {kArgDiffDst, diff.mem}, {kArgDiffSrc, diff.mem}});
}

// The layer's input as its products read it: gelu(x) in `storage` when `gelu_input`, else x.
const float *LayerInput(const paddle::Tensor &x, bool gelu_input, std::unique_ptr<float[]> *storage) {
  if (!gelu_input) return x.data<float>();
  storage->reset(new float[x.numel()]);  // Left uninitialised: GELU writes every value.
  Gelu(x.data<float>(), storage->get(), x.numel());
  return storage->get();
}

// A bfloat16 copy of the float32 matrix `m` (same layout), in `storage`.
Matrix ToBf16(const Matrix &m, uint16_t *storage) {
  Matrix plain{m.data, m.rows, m.cols, false, kF32};
  Matrix half{storage, m.rows, m.cols, false, kBf16};
  Desc src(plain), dst(half);
  dnnl_primitive_desc_t pd = nullptr;
  Runtime &rt = GetRuntime();
  Check(dnnl_reorder_primitive_desc_create(&pd, src.md, rt.engine, dst.md, rt.engine, nullptr), "reorder descriptor");
  Primitive reorder(pd);
  Memory src_mem(src, plain.data), dst_mem(dst, half.data);
  reorder.Run({{kArgSrc, src_mem.mem}, {kArgDst, dst_mem.mem}});
  half.transposed = m.transposed;
  return half;
}

// In bf16 mode, `m` rounded to bfloat16 (kept in `storage`); else `m` itself.
Matrix Operand(const Matrix &m, bool bf16, std::unique_ptr<uint16_t[]> *storage) {
  if (!bf16) return m;
  storage->reset(new uint16_t[m.rows * m.cols]);  // Left uninitialised: the reorder writes every value.
  return ToBf16(m, storage->get());
}

void CheckInputs(const paddle::Tensor &x, const paddle::Tensor &w) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "bert_linear runs on the CPU only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "bert_linear takes float32 tensors");
  PD_CHECK(x.shape().size() == 2 && w.shape().size() == 2 && x.shape()[1] == w.shape()[0],
           "bert_linear takes x [M, K] and w [K, N]");
}

}  // namespace

std::vector<paddle::Tensor> BertLinearForward(const paddle::Tensor &x, const paddle::Tensor &w,
                                              const paddle::Tensor &b, bool bf16, bool gelu_input) {
  CheckInputs(x, w);
  MathThreadsScope threads;
  int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
  auto out = paddle::empty({m, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  // bf16: w rounded to bfloat16, kept for the backward pass (one conversion of the weights a step
  // instead of two); fp32: empty.
  auto w16 = paddle::empty({bf16 ? k : 0, bf16 ? n : 0}, paddle::DataType::BFLOAT16, paddle::CPUPlace());
  Matrix wm{const_cast<float *>(w.data<float>()), k, n, false, kF32};
  if (bf16) wm = ToBf16(wm, reinterpret_cast<uint16_t *>(w16.data<paddle::bfloat16>()));
  if (m == 0) return {out, w16};
  std::unique_ptr<float[]> activated;
  const float *input = LayerInput(x, gelu_input, &activated);
  std::unique_ptr<uint16_t[]> x16;
  Matrix xm = Operand({const_cast<float *>(input), m, k, false, kF32}, bf16, &x16);
  MatMul(xm, wm, b.data<float>(), out.data<float>(), n);
  return {out, w16};
}

std::vector<paddle::Tensor> BertLinearBackward(const paddle::Tensor &x, const paddle::Tensor &w,
                                               const paddle::Tensor &w16, const paddle::Tensor &out_grad, bool bf16,
                                               bool gelu_input) {
  CheckInputs(x, w);
  MathThreadsScope threads;
  int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
  auto x_grad = paddle::empty({m, k}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto w_grad = paddle::empty({k, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto b_grad = paddle::empty({n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (m == 0) {
    std::memset(w_grad.data<float>(), 0, sizeof(float) * k * n);
    std::memset(b_grad.data<float>(), 0, sizeof(float) * n);
    return {x_grad, w_grad, b_grad};
  }
  std::unique_ptr<uint16_t[]> g16;
  Matrix g = Operand({const_cast<float *>(out_grad.data<float>()), m, n, false, kF32}, bf16, &g16);
  {  // dw = input^T . dy; gelu(x) is made again for it in x_grad's memory, which dx overwrites below.
    const float *input = x.data<float>();
    if (gelu_input) {
      Gelu(input, x_grad.data<float>(), m * k);
      input = x_grad.data<float>();
    }
    std::unique_ptr<uint16_t[]> x16;
    Matrix xt = Operand({const_cast<float *>(input), m, k, true, kF32}, bf16, &x16);
    MatMul(xt, g, nullptr, w_grad.data<float>(), n);
  }
  // dx = dy . w^T (times gelu'(x))
  Matrix wt = bf16 ? Matrix{const_cast<paddle::bfloat16 *>(w16.data<paddle::bfloat16>()), k, n, true, kBf16}
                   : Matrix{const_cast<float *>(w.data<float>()), k, n, true, kF32};
  MatMul(g, wt, nullptr, x_grad.data<float>(), k);
  if (gelu_input) GeluBackward(x.data<float>(), x_grad.data<float>(), m * k);
  // db = 1^T . dy, the column sums, in float32 whatever the mode.
  std::vector<float> ones(static_cast<size_t>(m), 1.0f);
  Matrix g32{const_cast<float *>(out_grad.data<float>()), m, n, false, kF32};
  MatMul({ones.data(), 1, m, false, kF32}, g32, nullptr, b_grad.data<float>(), n);
  return {x_grad, w_grad, b_grad};
}

std::vector<std::vector<int64_t>> BertLinearInferShape(const std::vector<int64_t> &x, const std::vector<int64_t> &w,
                                                       const std::vector<int64_t> &b) {
  return {{x[0], w[1]}, {-1, -1}};  // W16 is [K, N] in bf16 mode, [0, 0] in fp32.
}

std::vector<std::vector<int64_t>> BertLinearGradInferShape(const std::vector<int64_t> &x,
                                                           const std::vector<int64_t> &w,
                                                           const std::vector<int64_t> &w16,
                                                           const std::vector<int64_t> &out_grad) {
  return {x, w, {w[1]}};
}

std::vector<paddle::DataType> BertLinearInferDtype(const paddle::DataType &x, const paddle::DataType &w,
                                                   const paddle::DataType &b) {
  return {x, paddle::DataType::BFLOAT16};
}

PD_BUILD_OP(bert_linear)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out", "W16"})
    .Attrs({"bf16: bool", "gelu_input: bool"})
    .SetKernelFn(PD_KERNEL(BertLinearForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLinearInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertLinearInferDtype));

PD_BUILD_GRAD_OP(bert_linear)
    .Inputs({"X", "W", "W16", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"bf16: bool", "gelu_input: bool"})
    .SetKernelFn(PD_KERNEL(BertLinearBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLinearGradInferShape));
