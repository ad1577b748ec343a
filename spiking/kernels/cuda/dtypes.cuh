// Storage types of the fused kernels and their float conversions, without any CUDA header
// (NVRTC compiles this alone). float16 / bfloat16 are stored as their 16 raw bits and computed
// in float32; float32 and float64 are computed in their own precision.
//  - float16 <-> float32: PTX cvt.f32.f16 / cvt.rn.f16.f32 (PTX ISA, "cvt" instruction).
//  - bfloat16 is the upper half of a float32 (Kalamkar et al. 2019, "A Study of BFLOAT16 for
//    Deep Learning Training"); float32 -> bfloat16 rounds to nearest even, NaN stays NaN.
#pragma once

struct f16_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const f16_t* p) {
#ifdef SPIKING_CUDA_EMULATION  // the CPU emulator of the tests (tests/cuda_emu.h)
    return emu_f16_to_f32(p->bits);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
    return f;
#endif
}
__device__ __forceinline__ float load(const bf16_t* p) {
    return __uint_as_float(((unsigned int)p->bits) << 16);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(f16_t* p, float v) {
#ifdef SPIKING_CUDA_EMULATION
    p->bits = emu_f32_to_f16(v);
#else
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
#endif
}
__device__ __forceinline__ void store(bf16_t* p, float v) {
    unsigned int u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a (quiet) NaN
        p->bits = (unsigned short)((u >> 16) | 0x40u);
        return;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    p->bits = (unsigned short)(u >> 16);
}

__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }
__device__ __forceinline__ float ab(float v) { return fabsf(v); }
__device__ __forceinline__ double ab(double v) { return fabs(v); }
__device__ __forceinline__ float mx(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double mx(double a, double b) { return fmax(a, b); }

// Built-in surrogate pseudo-derivatives by kernel_id (spiking/surrogate.py); k1, k2 are
// precomputed in double on the host exactly as the reference's Python scalars:
// atan (0): k1 = a/2, k2 = pi/2 a;  fast_sigmoid (1), sigmoid (2), triangle (3): k1 = a;
// straight_through (4): k1 = a/2, k2 = 1/a.
template <typename C>
__device__ __forceinline__ C surrogate_grad(C z, int sid, C k1, C k2) {
    const C one = C(1), zero = C(0);
    switch (sid) {
    case 0: { C u = k2 * z; return k1 / (one + u * u); }
    case 1: { C d = one + k1 * ab(z); return one / (d * d); }
    case 2: { C sg = one / (one + ex(-(k1 * z))); return k1 * sg * (one - sg); }
    case 3: return k1 * mx(zero, one - k1 * ab(z));
    default: return ab(z) < k2 ? k1 : zero;
    }
}
