// bert_attention: the core of BERT's multi-head self-attention, forward and backward, with the
// attention probabilities made again in the backward pass instead of kept.
//
//   q, k, v: [B*S, H*D] rows, the projections' outputs with the heads side by side;
//   bias: [B, 1, 1, S], added to every score of batch row b (0 at real keys, -10000 at padding);
//   P = softmax(q_h . k_h^T / sqrt(D) + bias) for each batch row and head h, Pd = dropout(P, p),
//   out: [B*S, H*D] = Pd . v_h, the heads side by side again.
//
// Why: Paddle's composition keeps P and Pd (float32) and a dropout mask for every layer, [B, H, S, S]
// each (19 MB a layer at 8 x 128 tokens), besides transposed copies of q, k and v. This op keeps q,
// k and v as they are and the dropout seed, and computes P again in the backward pass: one more
// [S, D] x [D, S] product per head, under 2 % of a 128-token step's products. The products are
// oneDNN batched matmuls that read and write the heads in place through strides; softmax and
// dropout are one pass over the scores on MathThreads() threads (threads.h).
//
// Dropout: dropout_mask.h's mask over the [B, H, S, S] probabilities, from a seed drawn from
// Paddle's CPU generator at every call: after the same paddle.seed(), bert_dropout on a tensor of
// that shape draws the same mask. p == 0 or is_test (set by network.inference_clone): no dropout.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "dropout_mask.h"
#include "onednn.h"
#include "paddle/extension.h"
#include "paddle/phi/core/generator.h"

namespace {

using namespace bert_onednn;  // NOLINT: this file's whole job is calling it.

// A [B, H, rows, cols] float32 view of memory at `data`, with element strides.
struct View {
  float *data;
  int64_t dims[4];
  int64_t strides[4];
};

struct Shape {
  int64_t batch, heads, seq, head_size;
  int64_t width() const { return heads * head_size; }
  int64_t squares() const { return batch * heads * seq * seq; }

  // The heads of a [B*S, H*D] rows tensor, [B, H, S, D]; `transposed`: [B, H, D, S].
  View Heads(const float *rows, bool transposed = false) const {
    const int64_t w = width();
    if (transposed) return {const_cast<float *>(rows), {batch, heads, head_size, seq}, {seq * w, head_size, 1, w}};
    return {const_cast<float *>(rows), {batch, heads, seq, head_size}, {seq * w, head_size, w, 1}};
  }
  // A dense [B, H, S, S] tensor of scores or probabilities; `transposed` reads each [S, S] transposed.
  View Scores(const float *data, bool transposed = false) const {
    const int64_t ss = seq * seq;
    if (transposed) return {const_cast<float *>(data), {batch, heads, seq, seq}, {heads * ss, ss, 1, seq}};
    return {const_cast<float *>(data), {batch, heads, seq, seq}, {heads * ss, ss, seq, 1}};
  }
};

Desc ViewDesc(const View &v) {
  dnnl_memory_desc_t md = nullptr;
  Check(dnnl_memory_desc_create_with_strides(&md, 4, v.dims, kF32, v.strides), "memory descriptor");
  return Desc(md);
}

// dst = a . b for each of the B*H pairs of matrices.
void BatchedMatMul(const View &a, const View &b, const View &dst) {
  Desc a_desc = ViewDesc(a), b_desc = ViewDesc(b), dst_desc = ViewDesc(dst);
  RunMatMul(a_desc, a.data, b_desc, b.data, nullptr, nullptr, dst_desc, dst.data);
}

// Each row of the [B, H, S, S] `scores`, in place: softmax(row / sqrt(D) + bias[b]).
void Softmax(const Shape &s, const float *bias, float *scores) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_size));
  const int64_t rows = s.batch * s.heads * s.seq, n = s.seq;
  ParallelBlocks(rows, s.squares() >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      float *row = scores + r * n;
      const float *row_bias = bias + (r / (s.heads * s.seq)) * n;
      float top = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = row[j] * scale + row_bias[j];
        top = std::max(top, row[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        row[j] = std::exp(row[j] - top);
        sum += row[j];
      }
      const float inverse = 1.0f / sum;
      for (int64_t j = 0; j < n; ++j) row[j] *= inverse;
    }
  });
}

// The draw's keep mask over all B*H*S*S probabilities.
std::unique_ptr<uint8_t[]> KeepMask(const Shape &s, uint64_t seed, float p) {
  const int64_t n = s.squares();
  std::unique_ptr<uint8_t[]> keep(new uint8_t[n]);
  const uint32_t threshold = DropoutThreshold(p);
  ParallelBlocks(n, n >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    FillKeepMask(seed, threshold, begin, end, keep.get() + begin);
  });
  return keep;
}

Shape CheckInputs(const paddle::Tensor &q, const paddle::Tensor &k, const paddle::Tensor &v,
                  const paddle::Tensor &bias, int num_heads) {
  for (const paddle::Tensor *t : {&q, &k, &v, &bias}) {
    PD_CHECK(t->is_cpu() && t->dtype() == paddle::DataType::FLOAT32, "bert_attention takes float32 CPU tensors");
  }
  PD_CHECK(q.shape().size() == 2 && q.shape() == k.shape() && q.shape() == v.shape(),
           "bert_attention takes q, k and v of one shape [batch*seq, heads*head_size]");
  PD_CHECK(bias.shape().size() == 4 && bias.shape()[1] == 1 && bias.shape()[2] == 1,
           "bert_attention takes a bias [batch, 1, 1, seq]");
  PD_CHECK(num_heads > 0 && q.shape()[1] % num_heads == 0, "bert_attention: ", q.shape()[1],
           " columns do not split into ", num_heads, " heads");
  Shape s{bias.shape()[0], num_heads, bias.shape()[3], q.shape()[1] / num_heads};
  PD_CHECK(s.batch * s.seq == q.shape()[0], "bert_attention: q has ", q.shape()[0], " rows, the bias says ",
           s.batch, " x ", s.seq);
  return s;
}

bool Drops(float p, bool is_test) { return !is_test && p > 0.0f; }

}  // namespace

std::vector<paddle::Tensor> BertAttentionForward(const paddle::Tensor &q, const paddle::Tensor &k,
                                                 const paddle::Tensor &v, const paddle::Tensor &bias, int num_heads,
                                                 float p, bool is_test) {
  const Shape s = CheckInputs(q, k, v, bias, num_heads);
  PD_CHECK(p >= 0.0f && p < 1.0f, "bert_attention: p must be in [0, 1), got ", p);
  MathThreadsScope threads;
  auto out = paddle::empty(q.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto seed = paddle::empty({1}, paddle::DataType::INT64, paddle::CPUPlace());
  *seed.data<int64_t>() = 0;
  if (s.squares() == 0) return {out, seed};
  std::unique_ptr<float[]> probs(new float[s.squares()]);
  BatchedMatMul(s.Heads(q.data<float>()), s.Heads(k.data<float>(), true), s.Scores(probs.get()));
  Softmax(s, bias.data<float>(), probs.get());
  if (Drops(p, is_test)) {
    const uint64_t drawn = phi::DefaultCPUGenerator()->Random64();
    *seed.data<int64_t>() = static_cast<int64_t>(drawn);
    std::unique_ptr<uint8_t[]> keep = KeepMask(s, drawn, p);
    const float upscale = 1.0f / (1.0f - p);
    float *ps = probs.get();
    ParallelBlocks(s.squares(), true, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) ps[i] = keep[i] ? ps[i] * upscale : 0.0f;
    });
  }
  BatchedMatMul(s.Scores(probs.get()), s.Heads(v.data<float>()), s.Heads(out.data<float>()));
  return {out, seed};
}

std::vector<paddle::Tensor> BertAttentionBackward(const paddle::Tensor &q, const paddle::Tensor &k,
                                                  const paddle::Tensor &v, const paddle::Tensor &bias,
                                                  const paddle::Tensor &seed, const paddle::Tensor &out_grad,
                                                  int num_heads, float p, bool is_test) {
  const Shape s = CheckInputs(q, k, v, bias, num_heads);
  MathThreadsScope threads;
  auto q_grad = paddle::empty(q.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto k_grad = paddle::empty(k.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto v_grad = paddle::empty(v.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (s.squares() == 0) return {q_grad, k_grad, v_grad};
  const int64_t n = s.squares();
  const float upscale = 1.0f / (1.0f - p), scale = 1.0f / std::sqrt(static_cast<float>(s.head_size));
  const bool drops = Drops(p, is_test);
  std::unique_ptr<uint8_t[]> keep;
  if (drops) keep = KeepMask(s, static_cast<uint64_t>(*seed.data<int64_t>()), p);
  // P again, then Pd (in `work`) for dv = Pd^T . dout.
  std::unique_ptr<float[]> probs(new float[n]), work(new float[n]);
  BatchedMatMul(s.Heads(q.data<float>()), s.Heads(k.data<float>(), true), s.Scores(probs.get()));
  Softmax(s, bias.data<float>(), probs.get());
  const float *ps = probs.get();
  float *ws = work.get();
  const View pd = drops ? s.Scores(ws, true) : s.Scores(ps, true);
  if (drops) {
    ParallelBlocks(n, true, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) ws[i] = keep[i] ? ps[i] * upscale : 0.0f;
    });
  }
  BatchedMatMul(pd, s.Heads(out_grad.data<float>()), s.Heads(v_grad.data<float>()));
  // dPd = dout . v^T; dP = dPd * mask / (1 - p); dscores = P * (dP - sum(dP * P)) / sqrt(D), in `work`.
  BatchedMatMul(s.Heads(out_grad.data<float>()), s.Heads(v.data<float>(), true), s.Scores(ws));
  const int64_t width = s.seq;
  ParallelBlocks(n / width, n >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      float *row = ws + r * width;
      const float *row_p = ps + r * width;
      if (drops) {
        const uint8_t *row_keep = keep.get() + r * width;
        for (int64_t j = 0; j < width; ++j) row[j] = row_keep[j] ? row[j] * upscale : 0.0f;
      }
      float dot = 0.0f;
      for (int64_t j = 0; j < width; ++j) dot += row[j] * row_p[j];
      for (int64_t j = 0; j < width; ++j) row[j] = row_p[j] * (row[j] - dot) * scale;
    }
  });
  // dq = dscores . k, dk = dscores^T . q
  BatchedMatMul(s.Scores(ws), s.Heads(k.data<float>()), s.Heads(q_grad.data<float>()));
  BatchedMatMul(s.Scores(ws, true), s.Heads(q.data<float>()), s.Heads(k_grad.data<float>()));
  return {q_grad, k_grad, v_grad};
}

std::vector<std::vector<int64_t>> BertAttentionInferShape(const std::vector<int64_t> &q,
                                                          const std::vector<int64_t> &k,
                                                          const std::vector<int64_t> &v,
                                                          const std::vector<int64_t> &bias) {
  return {q, {1}};
}

std::vector<paddle::DataType> BertAttentionInferDtype(const paddle::DataType &q, const paddle::DataType &k,
                                                      const paddle::DataType &v, const paddle::DataType &bias) {
  return {q, paddle::DataType::INT64};
}

std::vector<std::vector<int64_t>> BertAttentionGradInferShape(
    const std::vector<int64_t> &q, const std::vector<int64_t> &k, const std::vector<int64_t> &v,
    const std::vector<int64_t> &bias, const std::vector<int64_t> &seed, const std::vector<int64_t> &out_grad) {
  return {q, k, v};
}

PD_BUILD_OP(bert_attention)
    .Inputs({"Q", "K", "V", "Bias"})
    .Outputs({"Out", "Seed"})
    .Attrs({"num_heads: int", "p: float", "is_test: bool"})
    .SetKernelFn(PD_KERNEL(BertAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertAttentionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertAttentionInferDtype));

PD_BUILD_GRAD_OP(bert_attention)
    .Inputs({"Q", "K", "V", "Bias", "Seed", paddle::Grad("Out")})
    .Outputs({paddle::Grad("Q"), paddle::Grad("K"), paddle::Grad("V")})
    .Attrs({"num_heads: int", "p: float", "is_test: bool"})
    .SetKernelFn(PD_KERNEL(BertAttentionBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertAttentionGradInferShape));
