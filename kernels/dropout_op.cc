// bert_dropout: dropout with upscaling in training (Paddle's default mode), forward and backward, on
// MathThreads() threads (threads.h). Paddle 3.3.1's CPU dropout draws every element's number from one
// std::mt19937 on one thread: 8 % of a 128-token BERT-Large training step on 2 cores.
//   mask = kept (dropout_mask.h), out = x * mask / (1 - p), dx = dy * mask / (1 - p)
// The seed is drawn from Paddle's CPU generator at every call, so paddle.seed() makes runs repeat.
// is_test (set by network.inference_clone): out = x, and the mask is left unset.
#include <cstdint>
#include <cstring>
#include <vector>

#include "dropout_mask.h"
#include "paddle/extension.h"
#include "paddle/phi/core/generator.h"
#include "threads.h"

std::vector<paddle::Tensor> BertDropoutForward(const paddle::Tensor &x, float p, bool is_test) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, "bert_dropout takes float32 CPU tensors");
  PD_CHECK(p >= 0.0f && p < 1.0f, "bert_dropout: p must be in [0, 1), got ", p);
  auto out = paddle::empty(x.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto mask = paddle::empty(x.shape(), paddle::DataType::UINT8, paddle::CPUPlace());
  const int64_t n = x.numel();
  const float *xs = x.data<float>();
  float *ys = out.data<float>();
  if (is_test) {
    std::memcpy(ys, xs, sizeof(float) * n);
    return {out, mask};
  }
  const uint64_t seed = phi::DefaultCPUGenerator()->Random64();
  const uint32_t threshold = DropoutThreshold(p);
  const float scale = 1.0f / (1.0f - p);
  uint8_t *keep = mask.data<uint8_t>();
  ParallelBlocks(n, n >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    FillKeepMask(seed, threshold, begin, end, keep + begin);
    for (int64_t i = begin; i < end; ++i) ys[i] = keep[i] ? xs[i] * scale : 0.0f;
  });
  return {out, mask};
}

std::vector<paddle::Tensor> BertDropoutBackward(const paddle::Tensor &mask, const paddle::Tensor &out_grad, float p,
                                                bool is_test) {
  auto x_grad = paddle::empty(out_grad.shape(), paddle::DataType::FLOAT32, paddle::CPUPlace());
  const int64_t n = out_grad.numel();
  const float *dys = out_grad.data<float>();
  float *dxs = x_grad.data<float>();
  if (is_test) {
    std::memcpy(dxs, dys, sizeof(float) * n);
    return {x_grad};
  }
  const float scale = 1.0f / (1.0f - p);
  const uint8_t *keep = mask.data<uint8_t>();
  ParallelBlocks(n, n >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) dxs[i] = keep[i] ? dys[i] * scale : 0.0f;
  });
  return {x_grad};
}

std::vector<std::vector<int64_t>> BertDropoutInferShape(const std::vector<int64_t> &x) { return {x, x}; }

std::vector<paddle::DataType> BertDropoutInferDtype(const paddle::DataType &x) {
  return {x, paddle::DataType::UINT8};
}

std::vector<std::vector<int64_t>> BertDropoutGradInferShape(const std::vector<int64_t> &mask,
                                                            const std::vector<int64_t> &out_grad) {
  return {out_grad};
}

std::vector<paddle::DataType> BertDropoutGradInferDtype(const paddle::DataType &mask,
                                                        const paddle::DataType &out_grad) {
  return {out_grad};
}

PD_BUILD_OP(bert_dropout)
    .Inputs({"X"})
    .Outputs({"Out", "Mask"})
    .Attrs({"p: float", "is_test: bool"})
    .SetKernelFn(PD_KERNEL(BertDropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertDropoutInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertDropoutInferDtype));

PD_BUILD_GRAD_OP(bert_dropout)
    .Inputs({"Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float", "is_test: bool"})
    .SetKernelFn(PD_KERNEL(BertDropoutBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertDropoutGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertDropoutGradInferDtype));
