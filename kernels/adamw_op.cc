// bert_adamw: Paddle's AdamW update (the adamw_ operator's formulas) in one multi-threaded pass.
//
// Why: Paddle 3.3.1's CPU adamw_ runs on one thread; for BERT-Large (334 M parameters, 28 bytes of
// state read or written per parameter and step) it took about a tenth of a training step on 2 cores.
// Same inputs, attributes and in-place outputs as adamw_ without master weights, AMSGrad or
// found_inf, plus GradScale: the gradient is g = Grad * GradScale[0], so that clipping by the global
// norm needs no pass of its own over the gradients. With lr' = lr * lr_ratio,
//   p  *= 1 - lr' * coeff                                  (with_decay only; decoupled decay)
//   m1  = beta1 * m1 + (1 - beta1) * g
//   m2  = beta2 * m2 + (1 - beta2) * g * g
//   p  -= lr' * sqrt(1 - beta2_pow) / (1 - beta1_pow) * m1 / (sqrt(m2) + epsilon * sqrt(1 - beta2_pow))
//   beta1_pow *= beta1, beta2_pow *= beta2
#include <cmath>
#include <cstdint>

#include "paddle/extension.h"
#include "threads.h"

namespace {

void Update(float *p, const float *g, float *m1, float *m2, int64_t begin, int64_t end, float scale, float decay,
            float beta1, float beta2, float step, float eps_hat) {
  for (int64_t i = begin; i < end; ++i) {
    float grad = g[i] * scale;
    float first = beta1 * m1[i] + (1.0f - beta1) * grad;
    float second = beta2 * m2[i] + (1.0f - beta2) * grad * grad;
    m1[i] = first;
    m2[i] = second;
    p[i] = p[i] * decay - step * first / (std::sqrt(second) + eps_hat);
  }
}

}  // namespace

void BertAdamWForward(paddle::Tensor &param, const paddle::Tensor &grad, const paddle::Tensor &learning_rate,
                      paddle::Tensor &moment1, paddle::Tensor &moment2, paddle::Tensor &beta1_pow,
                      paddle::Tensor &beta2_pow, const paddle::Tensor &grad_scale, float beta1, float beta2,
                      float epsilon, float lr_ratio, float coeff, bool with_decay) {
  PD_CHECK(param.is_cpu() && param.dtype() == paddle::DataType::FLOAT32, "bert_adamw updates float32 CPU tensors");
  PD_CHECK(grad.numel() == param.numel() && moment1.numel() == param.numel() && moment2.numel() == param.numel(),
           "bert_adamw: parameter, gradient and moments differ in size");
  PD_CHECK(grad_scale.numel() == 1, "bert_adamw: GradScale must hold one number");
  const float scale = grad_scale.data<float>()[0];
  const float lr = learning_rate.data<float>()[0] * lr_ratio;
  float *b1p = beta1_pow.data<float>(), *b2p = beta2_pow.data<float>();
  const float correction = std::sqrt(1.0f - b2p[0]);
  const float decay = with_decay ? 1.0f - lr * coeff : 1.0f;
  const float step = lr * correction / (1.0f - b1p[0]);
  const float eps_hat = epsilon * correction;
  float *p = param.data<float>(), *m1 = moment1.data<float>(), *m2 = moment2.data<float>();
  const float *g = grad.data<float>();
  const int64_t n = param.numel();
  ParallelBlocks(n, n >= (1 << 16), [&](int64_t begin, int64_t end, int) {
    Update(p, g, m1, m2, begin, end, scale, decay, beta1, beta2, step, eps_hat);
  });
  b1p[0] *= beta1;
  b2p[0] *= beta2;
}

PD_BUILD_OP(bert_adamw)
    .Inputs({"Param", "Grad", "LearningRate", "Moment1", "Moment2", "Beta1Pow", "Beta2Pow", "GradScale"})
    .Outputs({"ParamOut", "Moment1Out", "Moment2Out", "Beta1PowOut", "Beta2PowOut"})
    .Attrs({"beta1: float", "beta2: float", "epsilon: float", "lr_ratio: float", "coeff: float", "with_decay: bool"})
    .SetInplaceMap({{"Param", "ParamOut"},
                    {"Moment1", "Moment1Out"},
                    {"Moment2", "Moment2Out"},
                    {"Beta1Pow", "Beta1PowOut"},
                    {"Beta2Pow", "Beta2PowOut"}})
    .SetKernelFn(PD_KERNEL(BertAdamWForward));
