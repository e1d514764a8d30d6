// The dropout masks of bert_dropout and bert_attention: which elements a draw keeps.
//
// Element i of a draw with `seed` is kept when its 16-bit uniform number is at least the threshold
// (p rounded to 1/65536). The numbers come four at a time from a SplitMix64 hash of (seed, i / 4),
// so a mask depends on the seed and the element only: not on the thread count, and the same again
// when a backward pass draws it from the seed instead of keeping it.
#pragma once

#include <cstdint>

inline uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The keep threshold for dropout probability p in [0, 1).
inline uint32_t DropoutThreshold(float p) { return static_cast<uint32_t>(static_cast<double>(p) * 65536.0 + 0.5); }

// keep[i - begin] = whether element i in [begin, end) of the draw is kept (1) or dropped (0).
inline void FillKeepMask(uint64_t seed, uint32_t threshold, int64_t begin, int64_t end, uint8_t *keep) {
  for (int64_t group = begin / 4; 4 * group < end; ++group) {
    uint64_t bits = SplitMix64(seed ^ (static_cast<uint64_t>(group) * 0xd1b54a32d192ed03ULL));
    for (int64_t i = 4 * group; i < 4 * group + 4; ++i, bits >>= 16) {
      if (i >= begin && i < end) keep[i - begin] = static_cast<uint32_t>(bits & 0xffff) >= threshold;
    }
  }
}
