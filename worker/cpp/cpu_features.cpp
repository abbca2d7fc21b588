// Hopper's question to libtorch about the CPU: which instruction sets does
// it have, as torch itself sees them? libtorch ships cpuinfo (its symbols are
// exported by libc10) and decides with it, and with oneDNN, whether a CPU
// runs bf16 natively; the worker asks the same library rather than guessing.
// See worker/src/embed/cpu.rs.

#include <cpuinfo.h>

extern "C" {

// The CPU's features as bits (HOPPER_CPU_* in cpu.rs); -1 when cpuinfo
// cannot initialise (an unknown CPU or a sandbox without /proc, /sys).
long long hopper_cpu_features() {
  if (!cpuinfo_initialize()) {
    return -1;
  }
  long long bits = 0;
  bits |= (long long)cpuinfo_has_x86_avx2() << 0;
  bits |= (long long)cpuinfo_has_x86_avx512bw() << 1;
  bits |= (long long)cpuinfo_has_x86_avx512vl() << 2;
  bits |= (long long)cpuinfo_has_x86_avx512dq() << 3;
  bits |= (long long)cpuinfo_has_x86_avx_ne_convert() << 4;
  bits |= (long long)cpuinfo_has_x86_avx512bf16() << 5;
  bits |= (long long)cpuinfo_has_x86_amx_bf16() << 6;
  bits |= (long long)cpuinfo_has_arm_bf16() << 7;
  return bits;
}

} // extern "C"
