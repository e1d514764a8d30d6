// oneDNN glue shared by this package's operators: the C API of the oneDNN library inside Paddle's
// wheel (paddle/libs/libdnnl.so.3), one engine and stream, and RAII owners for its objects.
//
// Only oneDNN's C API is used, declared below from oneDNN 3.x's dnnl.h and dnnl_types.h (stable
// within the major version; Paddle 3.3.1 bundles 3.6.2 and ships no oneDNN headers).
//
// Threads: MathThreads() (threads.h). Paddle's oneDNN runs on Intel's OpenMP runtime (libiomp5),
// which importing Paddle leaves at one thread; MathThreadsScope raises the count for an op's calls.
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
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
typedef struct dnnl_primitive_attr *dnnl_primitive_attr_t;
typedef const struct dnnl_primitive_attr *const_dnnl_primitive_attr_t;
typedef struct dnnl_post_ops *dnnl_post_ops_t;
typedef const struct dnnl_post_ops *const_dnnl_post_ops_t;
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
dnnl_status_t dnnl_memory_desc_create_with_tag(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                                               int data_type, int tag);
dnnl_status_t dnnl_memory_desc_clone(dnnl_memory_desc_t *md, const_dnnl_memory_desc_t existing);
size_t dnnl_memory_desc_get_size(const_dnnl_memory_desc_t md);
int dnnl_memory_desc_equal(const_dnnl_memory_desc_t lhs, const_dnnl_memory_desc_t rhs);
const_dnnl_memory_desc_t dnnl_primitive_desc_query_md(const_dnnl_primitive_desc_t pd, int what, int index);
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
dnnl_status_t dnnl_eltwise_forward_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, int prop_kind,
                                                        int alg_kind, const_dnnl_memory_desc_t src,
                                                        const_dnnl_memory_desc_t dst, float alpha, float beta,
                                                        const_dnnl_primitive_attr_t attr);
dnnl_status_t dnnl_eltwise_backward_primitive_desc_create(dnnl_primitive_desc_t *pd, dnnl_engine_t engine, int alg_kind,
                                                         const_dnnl_memory_desc_t diff_src,
                                                         const_dnnl_memory_desc_t diff_dst,
                                                         const_dnnl_memory_desc_t data, float alpha, float beta,
                                                         const_dnnl_primitive_desc_t hint_fwd_pd,
                                                         const_dnnl_primitive_attr_t attr);
dnnl_status_t dnnl_primitive_desc_destroy(dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_create(dnnl_primitive_t *primitive, const_dnnl_primitive_desc_t pd);
dnnl_status_t dnnl_primitive_destroy(dnnl_primitive_t primitive);
dnnl_status_t dnnl_primitive_attr_create(dnnl_primitive_attr_t *attr);
dnnl_status_t dnnl_primitive_attr_destroy(dnnl_primitive_attr_t attr);
dnnl_status_t dnnl_primitive_attr_set_scales_mask(dnnl_primitive_attr_t attr, int arg, int mask);
dnnl_status_t dnnl_primitive_attr_set_post_ops(dnnl_primitive_attr_t attr, const_dnnl_post_ops_t post_ops);
dnnl_status_t dnnl_post_ops_create(dnnl_post_ops_t *post_ops);
dnnl_status_t dnnl_post_ops_destroy(dnnl_post_ops_t post_ops);
dnnl_status_t dnnl_post_ops_append_binary(dnnl_post_ops_t post_ops, int alg_kind, const_dnnl_memory_desc_t src1);
dnnl_status_t dnnl_post_ops_append_eltwise(dnnl_post_ops_t post_ops, int alg_kind, float alpha, float beta);
dnnl_status_t dnnl_primitive_execute(const_dnnl_primitive_t primitive, dnnl_stream_t stream, int nargs,
                                     const dnnl_exec_arg_t *args);
}

namespace bert_onednn {

// Values from oneDNN 3.x's dnnl_common_types.h and dnnl_types.h.
constexpr int kCpuEngine = 1;     // dnnl_cpu
constexpr unsigned kInOrder = 1;  // dnnl_stream_in_order
constexpr int kBf16 = 2;          // dnnl_bf16
constexpr int kF32 = 3;           // dnnl_f32
constexpr int kS8 = 5;            // dnnl_s8
constexpr int kU8 = 6;            // dnnl_u8
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41;
constexpr int kArgDiffSrc = 129, kArgDiffDst = 145;  // DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_DST
constexpr int kForwardTraining = 64;                 // dnnl_forward_training
constexpr int kArgSrc1 = 2;                 // DNNL_ARG_SRC_1, a binary post-op's operand
constexpr int kArgAttrScales = 4096;        // DNNL_ARG_ATTR_SCALES
constexpr int kArgPostOpBase = 32768;       // DNNL_ARG_ATTR_MULTIPLE_POST_OP_BASE
constexpr int kBinaryAdd = 0x1fff0, kBinaryMul = 0x1fff1;  // dnnl_binary_add, dnnl_binary_mul
constexpr int kEltwiseGeluErf = 0x31;                     // dnnl_eltwise_gelu_erf
constexpr int kFormatAny = 1;                             // dnnl_format_tag_any
constexpr int kQueryWeightsMd = 131;                      // dnnl_query_weights_md

inline void Check(dnnl_status_t status, const char *what) {
  PD_CHECK(status == 0, "oneDNN ", what, " failed with status ", status);
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

inline const std::vector<OpenMpRuntime> &OpenMpRuntimes() {
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

inline Runtime &GetRuntime() {
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
  // A dense row-major tensor of `dims` (at most 12).
  Desc(std::initializer_list<int64_t> dims, int dtype) {
    dnnl_dims_t shape = {}, strides = {};
    int ndims = 0;
    for (int64_t d : dims) shape[ndims++] = d;
    for (int i = ndims - 1, stride = 1; i >= 0; stride *= static_cast<int>(shape[i]), --i) strides[i] = stride;
    Check(dnnl_memory_desc_create_with_strides(&md, ndims, shape, dtype, strides), "memory descriptor");
  }
  // Takes ownership of `owned`.
  explicit Desc(dnnl_memory_desc_t owned) : md(owned) {}
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

// dst = a . b (+ bias) on oneDNN's matmul, in the shapes and strides the descriptors give (matrices,
// or batches of them); `bias` may be null. oneDNN's primitive cache makes repeated shapes cheap.
inline void RunMatMul(const Desc &a, const void *a_data, const Desc &b, const void *b_data, const Desc *bias,
                      const void *bias_data, const Desc &dst, void *dst_data) {
  dnnl_primitive_desc_t pd = nullptr;
  Check(dnnl_matmul_primitive_desc_create(&pd, GetRuntime().engine, a.md, b.md, bias ? bias->md : nullptr, dst.md,
                                          nullptr),
        "matmul descriptor");
  Primitive matmul(pd);
  Memory a_mem(a, const_cast<void *>(a_data)), b_mem(b, const_cast<void *>(b_data)), dst_mem(dst, dst_data);
  std::vector<dnnl_exec_arg_t> args = {{kArgSrc, a_mem.mem}, {kArgWeights, b_mem.mem}, {kArgDst, dst_mem.mem}};
  std::unique_ptr<Memory> bias_mem;
  if (bias) {
    bias_mem.reset(new Memory(*bias, const_cast<void *>(bias_data)));
    args.push_back({kArgBias, bias_mem->mem});
  }
  matmul.Run(args);
}

}  // namespace bert_onednn
