// How many threads this package's kernels use, and how they split their work.
// MathThreads(): OMP_NUM_THREADS when above 1, else the CPUs this
// process may run on shared among the processes of this node that paddle.distributed.launch
// started (PADDLE_LOCAL_SIZE). Importing Paddle sets OMP_NUM_THREADS=1 unless it was set higher,
// so 1 means "not chosen". device.math_threads() is the same rule in Python.
#pragma once

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

inline int MathThreads() {
  static const int threads = [] {
    const char *chosen = std::getenv("OMP_NUM_THREADS");
    if (chosen != nullptr && std::atoi(chosen) > 1) return std::atoi(chosen);
    cpu_set_t cpus;
    int count = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus)
                                                               : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    const char *local = std::getenv("PADDLE_LOCAL_SIZE");
    int processes = local != nullptr ? std::atoi(local) : 1;
    return std::max(1, count / std::max(1, processes));
  }();
  return threads;
}

// The OpenMP team that Paddle's oneDNN runs on (Intel's runtime, libiomp5), through the GNU entry
// point that runtime also exports; empty where libiomp5 is not loaded.
struct OneDnnTeam {
  void (*parallel)(void (*)(void *), void *, unsigned, unsigned) = nullptr;  // GOMP_parallel
  int (*thread_num)() = nullptr;
  int (*num_threads)() = nullptr;
  bool usable() const { return parallel != nullptr && thread_num != nullptr && num_threads != nullptr; }
};

inline const OneDnnTeam &GetOneDnnTeam() {
  static const OneDnnTeam team = [] {
    OneDnnTeam found;
    void *handle = dlopen("libiomp5.so", RTLD_NOW | RTLD_NOLOAD);  // Only if loaded already; kept open.
    if (handle == nullptr) return found;
    found.parallel = reinterpret_cast<void (*)(void (*)(void *), void *, unsigned, unsigned)>(
        dlsym(handle, "GOMP_parallel"));
    found.thread_num = reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_thread_num"));
    found.num_threads = reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_num_threads"));
    return found;
  }();
  return team;
}

// Runs body(begin, end, block) over [0, count) in contiguous blocks, one a thread, on up to
// MathThreads() threads (block < MathThreads()); on the calling thread alone unless worth_threads.
// The threads are oneDNN's OpenMP team where it is loaded: threads of our own would take turns with
// its threads, which spin for a while after each oneDNN call (a quantization pass took 0.2-7 ms
// on std::threads against 0.06 ms on the team).
template <typename Body>
void ParallelBlocks(int64_t count, bool worth_threads, const Body &body) {
  const int threads = worth_threads ? static_cast<int>(std::min<int64_t>(MathThreads(), count)) : 1;
  if (threads <= 1) {
    body(int64_t{0}, count, 0);
    return;
  }
  const OneDnnTeam &team = GetOneDnnTeam();
  if (team.usable()) {
    struct Work {
      const Body *body;
      int64_t count;
      const OneDnnTeam *team;
    } work{&body, count, &team};
    team.parallel(
        [](void *data) {
          const Work &w = *static_cast<const Work *>(data);
          const int64_t parts = w.team->num_threads(), part = w.team->thread_num();
          const int64_t chunk = (w.count + parts - 1) / parts;
          const int64_t begin = part * chunk, end = std::min(w.count, begin + chunk);
          if (begin < end) (*w.body)(begin, end, static_cast<int>(part));
        },
        &work, static_cast<unsigned>(threads), 0);
    return;
  }
  std::vector<std::thread> workers;
  const int64_t chunk = (count + threads - 1) / threads;
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = t * chunk, end = std::min(count, begin + chunk);
    if (begin < end) workers.emplace_back(body, begin, end, t);
  }
  for (std::thread &worker : workers) worker.join();
}
