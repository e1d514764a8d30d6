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
// tensor stays float32 in the program. Needs avx512_bf16 or amx_bf16 for speed.
//
// Threads: MathThreads() (threads.h). Paddle's oneDNN runs on Intel's OpenMP runtime (libiomp5),
// which importing Paddle leaves at one thread; the op raises the count for its own calls only.
//
// Only oneDNN's C API is used, declared below from oneDNN 3.x's dnnl.h (stable within the major
// version; Paddle 3.3.1 bundles 3.6.2), so no oneDNN headers are needed to build this file.
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "threads.h"

extern "C" {
typedef int dnnl_status_t;  // dnnl_success = 0
typedef int64_t dnnl_dim_t;
typedef dnnl_dim_t dnnl_dims_t[12];
typedef struct dnnl_engine *dnnl_engine_t;
typedef struct dnnl_stream *dnnl_stream_t;
typedef struct dnnl_memory_desc *dnnl_memory_desc_t;
typedef const struct dnnl_memory_desc *const_dnnl_memory_desc_t;
typedef struct dnnl_memory *dnnl_memory_t;
typedef struct dnnl_primitive_desc *dnnl_primitive_desc_t;
typedef const struct dnnl_primitive_desc *const_dnnl_primitive_desc_t;
typedef struct dnnl_primitive *dnnl_primitive_t;
typedef const struct dnnl_primitive *const_dnnl_primitive_t;
typedef const struct dnnl_primitive_attr *const_dnnl_primitive_attr_t;
typedef struct {
  int arg;
  dnnl_memory_t memory;
} dnnl_exec_arg_t;

dnnl_status_t dnnl_engine_create(dnnl_engine_t *engine, int kind, size_t index);
dnnl_status_t dnnl_stream_create(dnnl_stream_t *stream, dnnl_engine_t engine, unsigned flags);
dnnl_status_t dnnl_stream_wait(dnnl_stream_t stream);
dnnl_status_t dnnl_memory_desc_create_with_strides(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                                                    int data_type, const dnnl_dims_t strides);
dnnl_status_t dnnl_memory_desc_destroy(dnnl_memory_desc_t md);
dnnl_status_t dnnl_memory_create(dnnl_memory_t *memory, const_dnnl_memory_desc_t md, dnnl_engine_t engine,
                                 void *handle);
dnnl_status_t dnnl_memory_destroy(dnnl_memory_t memory);
dnnl_status_t dnnl_matmul_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine,
                                                const_dnnl_memory_desc_t src, const_dnnl_memory_desc_t weights,
                                                const_dnnl_memory_desc_t bias, const_dnnl_memory_desc_t dst,
                                                const_dnnl_primitive_attr_t attr);
dnnl_status_t dnnl_reorder_primitive_desc_create(dnnl_primitive_desc_t *pd, const_dnnl_memory_desc_t src,
                                                 dnnl_engine_t src_engine, const_dnnl_memory_desc_t dst,
                                                 dnnl_engine_t dst_engine, const_dnnl_primitive_attr_t attr);
dnnl_status_t dnnl_primitive_desc_destroy(dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_create(dnnl_primitive_t *primitive, const_dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_destroy(dnnl_primitive_t primitive);
dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t primitive, dnnl_stream_t stream, int nargs,
                                     const dnnl_exec_arg_t *args);
}

namespace {

// Values from oneDNN 3.x's dnnl_common_types.h and dnnl_types.h.
constexpr int kCpuEngine = 1;     // dnnl_cpu
constexpr unsigned kInOrder = 1;  // dnnl_stream_in_order
constexpr int kBf16 = 2;          // dnnl_bf16
constexpr int kF32 = 3;           // dnnl_f32
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41;

void Check(dnnl_status_t status, const char *what) {
  PD_CHECK(status == 0, "bert_linear: oneDNN ", what, " failed with status ", status);
}

struct Runtime {
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
  std::mutex mutex;  // One stream; the executor may call from several threads.
  Runtime() {
    Check(dnnl_engine_create(&engine, kCpuEngine, 0), "engine creation");
    Check(dnnl_stream_create(&stream, engine, kInOrder), "stream creation");
  }
};

// The OpenMP runtimes loaded in this process: Intel's, which Paddle's oneDNN binds to, and GNU's.
struct OpenMpRuntime {
  void (*set_num_threads)(int) = nullptr;
  int (*get_max_threads)() = nullptr;
};

const std::vector<OpenMpRuntime> &OpenMpRuntimes() {
  static const std::vector<OpenMpRuntime> runtimes = [] {
    std::vector<OpenMpRuntime> found;
    for (const char *library : {"libiomp5.so", "libgomp.so.1"}) {
      void *handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);  // Only if loaded already; kept open.
      if (handle == nullptr) continue;
      OpenMpRuntime runtime;
      runtime.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(handle, "omp_set_num_threads"));
      runtime.get_max_threads = reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_max_threads"));
      if (runtime.set_num_threads != nullptr && runtime.get_max_threads != nullptr) found.push_back(runtime);
    }
    return found;
  }();
  return runtimes;
}

// Sets this thread's OpenMP thread count to MathThreads() in every runtime while it lives; oneDNN
// plans its primitives and runs them with it. The counts found are put back after.
class MathThreadsScope {
 public:
  MathThreadsScope() {
    for (const OpenMpRuntime &runtime : OpenMpRuntimes()) {
      saved_.push_back(runtime.get_max_threads());
      runtime.set_num_threads(MathThreads());
    }
  }
  MathThreadsScope(const MathThreadsScope &) = delete;
  ~MathThreadsScope() {
    const std::vector<OpenMpRuntime> &runtimes = OpenMpRuntimes();
    for (size_t i = 0; i < saved_.size(); ++i) runtimes[i].set_num_threads(saved_[i]);
  }

 private:
  std::vector<int> saved_;
};

Runtime &GetRuntime() {
  static Runtime runtime;  // Never destroyed: oneDNN may be unloaded first at exit.
  return runtime;
}

// A row-major [rows, cols] matrix at `data`; `transposed` reads it as its transpose, in place.
struct Matrix {
  void *data;
  int64_t rows, cols;
  bool transposed;
  int dtype;
};

// Owns a memory descriptor; shape and strides of `m` as seen by the product.
struct Desc {
  dnnl_memory_desc_t md = nullptr;
  explicit Desc(const Matrix &m) {
    dnnl_dims_t dims = {m.transposed ? m.cols : m.rows, m.transposed ? m.rows : m.cols};
    dnnl_dims_t strides = {m.transposed ? 1 : m.cols, m.transposed ? m.cols : 1};
    Check(dnnl_memory_desc_create_with_strides(&md, 2, dims, m.dtype, strides), "memory descriptor");
  }
  Desc(const Desc &) = delete;
  ~Desc() { dnnl_memory_desc_destroy(md); }
};

struct Memory {
  dnnl_memory_t mem = nullptr;
  Memory(const Desc &desc, void *data) {
    Check(dnnl_memory_create(&mem, desc.md, GetRuntime().engine, data), "memory creation");
  }
  Memory(const Memory &) = delete;
  ~Memory() { dnnl_memory_destroy(mem); }
};

struct Primitive {
  dnnl_primitive_desc_t pd = nullptr;
  dnnl_primitive_t prim = nullptr;
  Primitive(dnnl_primitive_desc_t created) : pd(created) {
    Check(dnnl_primitive_create(&prim, pd), "primitive creation");
  }
  Primitive(const Primitive &) = delete;
  ~Primitive() {
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
  }
  void Run(std::vector<dnnl_exec_arg_t> args) {
    Runtime &rt = GetRuntime();
    std::lock_guard<std::mutex> lock(rt.mutex);
    Check(dnnl_primitive_execute(prim, rt.stream, static_cast<int>(args.size()), args.data()), "execution");
    Check(dnnl_stream_wait(rt.stream), "stream wait");
  }
};

// dst[M, N] = a[M, K] . b[K, N] (+ bias[N]); oneDNN's primitive cache makes repeats cheap.
void MatMul(const Matrix &a, const Matrix &b, const float *bias, float *dst, int64_t n) {
  Desc a_desc(a), b_desc(b);
  int64_t m = a.transposed ? a.cols : a.rows;
  Desc dst_desc(Matrix{dst, m, n, false, kF32});
  Desc bias_desc(Matrix{const_cast<float *>(bias), 1, n, false, kF32});
  dnnl_primitive_desc_t pd = nullptr;
  Check(dnnl_matmul_primitive_desc_create(&pd, GetRuntime().engine, a_desc.md, b_desc.md,
                                          bias ? bias_desc.md : nullptr, dst_desc.md, nullptr),
        "matmul descriptor");
  Primitive matmul(pd);
  Memory a_mem(a_desc, a.data), b_mem(b_desc, b.data), dst_mem(dst_desc, dst);
  std::vector<dnnl_exec_arg_t> args = {{kArgSrc, a_mem.mem}, {kArgWeights, b_mem.mem}, {kArgDst, dst_mem.mem}};
  Memory bias_mem(bias_desc, const_cast<float *>(bias));
  if (bias) args.push_back({kArgBias, bias_mem.mem});
  matmul.Run(args);
}

// A bfloat16 copy of the float32 matrix `m` (same layout), in `storage`.
Matrix ToBf16(const Matrix &m, std::vector<uint16_t> *storage) {
  storage->resize(static_cast<size_t>(m.rows * m.cols));
  Matrix plain{m.data, m.rows, m.cols, false, kF32};
  Matrix half{storage->data(), m.rows, m.cols, false, kBf16};
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
Matrix Operand(const Matrix &m, bool bf16, std::vector<uint16_t> *storage) {
  return bf16 ? ToBf16(m, storage) : m;
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
                                              const paddle::Tensor &b, bool bf16) {
  CheckInputs(x, w);
  MathThreadsScope threads;
  int64_t m = x.shape()[0], k = x.shape()[1], n = w.shape()[1];
  auto out = paddle::empty({m, n}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  if (m == 0) return {out};
  std::vector<uint16_t> x16, w16;
  Matrix xm = Operand({const_cast<float *>(x.data<float>()), m, k, false, kF32}, bf16, &x16);
  Matrix wm = Operand({const_cast<float *>(w.data<float>()), k, n, false, kF32}, bf16, &w16);
  MatMul(xm, wm, b.data<float>(), out.data<float>(), n);
  return {out};
}

std::vector<paddle::Tensor> BertLinearBackward(const paddle::Tensor &x, const paddle::Tensor &w,
                                               const paddle::Tensor &out_grad, bool bf16) {
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
  std::vector<uint16_t> x16, w16, g16, ones16;
  Matrix g = Operand({const_cast<float *>(out_grad.data<float>()), m, n, false, kF32}, bf16, &g16);
  // dx = dy . w^T
  Matrix wt = Operand({const_cast<float *>(w.data<float>()), k, n, true, kF32}, bf16, &w16);
  MatMul(g, wt, nullptr, x_grad.data<float>(), k);
  // dw = x^T . dy
  Matrix xt = Operand({const_cast<float *>(x.data<float>()), m, k, true, kF32}, bf16, &x16);
  MatMul(xt, g, nullptr, w_grad.data<float>(), n);
  // db = 1^T . dy, the column sums, in float32 whatever the mode.
  std::vector<float> ones(static_cast<size_t>(m), 1.0f);
  Matrix g32{const_cast<float *>(out_grad.data<float>()), m, n, false, kF32};
  MatMul({ones.data(), 1, m, false, kF32}, g32, nullptr, b_grad.data<float>(), n);
  return {x_grad, w_grad, b_grad};
}

std::vector<std::vector<int64_t>> BertLinearInferShape(const std::vector<int64_t> &x, const std::vector<int64_t> &w,
                                                       const std::vector<int64_t> &b) {
  return {{x[0], w[1]}};
}

std::vector<std::vector<int64_t>> BertLinearGradInferShape(const std::vector<int64_t> &x,
                                                           const std::vector<int64_t> &w,
                                                           const std::vector<int64_t> &out_grad) {
  return {x, w, {w[1]}};
}

std::vector<paddle::DataType> BertLinearInferDtype(const paddle::DataType &x, const paddle::DataType &w,
                                                   const paddle::DataType &b) {
  return {x};
}

PD_BUILD_OP(bert_linear)
    .Inputs({"X", "W", "B"})
    .Outputs({"Out"})
    .Attrs({"bf16: bool"})
    .SetKernelFn(PD_KERNEL(BertLinearForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLinearInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BertLinearInferDtype));

PD_BUILD_GRAD_OP(bert_linear)
    .Inputs({"X", "W", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("B")})
    .Attrs({"bf16: bool"})
    .SetKernelFn(PD_KERNEL(BertLinearBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(BertLinearGradInferShape));
