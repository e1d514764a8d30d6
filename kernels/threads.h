// How many threads this package's kernels use: OMP_NUM_THREADS when above 1, else the CPUs this
// process may run on shared among the processes of this node that paddle.distributed.launch
// started (PADDLE_LOCAL_SIZE). Importing Paddle sets OMP_NUM_THREADS=1 unless it was set higher,
// so 1 means "not chosen". device.math_threads() is the same rule in Python.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

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
