// Lets multistep.cu compile as host C++ (g++ -x c++ -include host_shim.h -DSJB_HOST) so the CPU tests
// can check the kernel math. One "thread": the kernels' grid-stride loops then visit every neuron.
#pragma once
#include <math.h>
#include <string.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct sjb_dim3 { unsigned int x; };
static const sjb_dim3 threadIdx = {0}, blockIdx = {0}, blockDim = {1}, gridDim = {1};
static inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
