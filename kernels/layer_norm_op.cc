// bert_layer_norm: layer normalization over the last axis of x [M, N], forward and backward, on
// MathThreads() threads (threads.h). Paddle 3.3.1's CPU layer_norm_grad runs on one thread and
// took about 3 % of a BERT-Large training step.
//   y = (x - mean) * rstd * scale + bias, rstd = 1 / sqrt(var + epsilon) (biased variance, as Paddle)
//   dx = rstd * (dy*scale - mean(dy*scale) - xhat * mean(dy*scale * xhat)), xhat = (x - mean) * rstd
//   dscale = sum over rows of dy * xhat, dbias = sum over rows of dy
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "paddle/extension.h"
#include "threads.h"

namespace {

void CheckInputs(const paddle::Tensor &x, const paddle::Tensor &scale) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, "bert_layer_norm takes float32 CPU tensors");
  PD_CHECK(x.shape().size() == 2 && scale.numel() == x.shape()[1], "bert_layer_norm takes x [M, N] and scale [N]");
}

}  // namespace

std::vector<paddle::Tensor> BertLayerNormForward(const paddle::Tensor &x, const paddle::Tensor &scale,
                                                 const paddle::Tensor &bias, float epsilon) {
  CheckInputs(x, scale);
  const int64_t m = x.shape()[0], n = x.shape()[1];
  auto y = paddle::empty({m, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto mean = paddle::empty({m}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto rstd = paddle::empty({m}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float *xs = x.data<float>(), *g = scale.data<float>(), *b = bias.data<float>();
  float *ys = y.data<float>(), *mu = mean.data<float>(), *rs = rstd.data<float>();
  ParallelBlocks(m, m * n >= (1 << 15), [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float *row = xs + r * n;
      double sum = 0.0, squares = 0.0;
      for (int64_t c = 0; c < n; ++c) sum += row[c];
      const float row_mean = static_cast<float>(sum / n);
      for (int64_t c = 0; c < n; ++c) {
        float d = row[c] - row_mean;
        squares += d * d;
      }
      const float row_rstd = 1.0f / std::sqrt(static_cast<float>(squares / n) + epsilon);
      float *out = ys + r * n;
      for (int64_t c = 0; c < n; ++c) out[c] = (row[c] - row_mean) * row_rstd * g[c] + b[c];
      mu[r] = row_mean;
      rs[r] = row_rstd;
    }
  });
  return {y, mean, rstd};
}

std::vector<paddle::Tensor> BertLayerNormBackward(const paddle::Tensor &x, const paddle::Tensor &scale,
                                                  const paddle::Tensor &mean, const paddle::Tensor &rstd,
                                                  const paddle::Tensor &y_grad, float epsilon) {
  CheckInputs(x, scale);
  const int64_t m = x.shape()[0], n = x.shape()[1];
  auto x_grad = paddle::empty({m, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto scale_grad = paddle::empty({n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto bias_grad = paddle::empty({n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float *xs = x.data<float>(), *g = scale.data<float>(), *mu = mean.data<float>(), *rs = rstd.data<float>();
  const float *dys = y_grad.data<float>();
  float *dxs = x_grad.data<float>();
  const int slots = std::max(1, MathThreads());
  // Per-thread partial column sums for dscale and dbias, added up after.
  std::vector<float> partial(static_cast<size_t>(2 * slots * n), 0.0f);
  ParallelBlocks(m, m * n >= (1 << 15), [&](int64_t begin, int64_t end, int slot) {
    float *dg = partial.data() + 2 * slot * n, *db = dg + n;
    for (int64_t r = begin; r < end; ++r) {
      const float *row = xs + r * n, *dy = dys + r * n;
      float *dx = dxs + r * n;
      const float row_mean = mu[r], row_rstd = rs[r];
      float sum_dyg = 0.0f, sum_dyg_xhat = 0.0f;
      for (int64_t c = 0; c < n; ++c) {
        float xhat = (row[c] - row_mean) * row_rstd, dyg = dy[c] * g[c];
        sum_dyg += dyg;
        sum_dyg_xhat += dyg * xhat;
        dg[c] += dy[c] * xhat;
        db[c] += dy[c];
      }
      const float mean_dyg = sum_dyg / n, mean_dyg_xhat = sum_dyg_xhat / n;
      for (int64_t c = 0; c < n; ++c) {
        float xhat = (row[c] - row_mean) * row_rstd;
        dx[c] = row_rstd * (dy[c] * g[c] - mean_dyg - xhat * mean_dyg_xhat);
      }
    }
  });
  float *dscale = scale_grad.data<float>(), *dbias = bias_grad.data<float>();
  for (int64_t c = 0; c < n; ++c) dscale[c] = dbias[c] = 0.0f;
  for (int slot = 0; slot < slots; ++slot) {
    const float *dg = partial.data() + 2 * slot * n, *db = dg + n;
    for (int64_t c = 0; c < n; ++c) {
      dscale[c] += dg[c];
      dbias[c] += db[c];
    }
  }
  return {x_grad, scale_grad, bias_grad};
}

std::vector<std::vector<int64_t>> BertLayerNormInferShape(const std::vector<int64_t> &x,
                                                          const std::vector<int64_t> &scale,
                                                          const std::vector<int64_t> &bias) {
  return {x, {x[0]}, {x[0]}};
}

std::vector<paddle::DataType> BertLayerNormInferDtype(const paddle::DataType &x, const paddle::DataType &scale,
                                                      const paddle::DataType &bias) {
  return {x, x, x};
}

std::vector<std::vector<int64_t>> BertLayerNormGradInferShape(const std::vector<int64_t> &x,
                                                              const std::vector<int64_t> &scale,
                                                              const std::vector<int64_t> &mean,
                                                              const std::vector<int64_t> &rstd,
                                                              const std::vector<int64_t> &y_grad) {
  return {x, scale, scale};
}

PD_BUILD_OP(bert_layer_norm)
    .Inputs({"X", "Scale", "Bias"})
    .Outputs({"Y", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(BertLayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLayerNormInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertLayerNormInferDtype));

PD_BUILD_GRAD_OP(bert_layer_norm)
    .Inputs({"X", "Scale", "Mean", "Rstd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Scale"), paddle::Grad("Bias")})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(BertLayerNormBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLayerNormGradInferShape));
