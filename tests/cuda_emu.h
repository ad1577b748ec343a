// CUDA built-ins for running the .cu kernels on the CPU under g++ (tests only; see cuda_emu.py).
//
// Every CUDA thread of a block is a fiber (ucontext) of one OS thread. Blocks run one after the
// other; inside a block the fibers run round-robin, each until it reaches a barrier or ends, so a
// launch is one legal schedule of the real GPU. `reverse` runs blocks and threads in reverse
// index order: a result that depends on the order shows a missing barrier or a race.
// What the emulator checks, beyond the results:
//  - __syncthreads() reached from different source lines by the threads of a block (barrier
//    divergence, undefined on a GPU) fails, and so do full-mask warp shuffles that not all 32
//    lanes of the warp reach (partial masks are not emulated);
//  - a block whose live threads all wait on barriers that cannot complete is a deadlock;
//  - dynamic shared memory above the 48 KiB a launch gets without an opt-in attribute
//    (CUDA C++ Programming Guide, "Shared Memory") fails; it is filled with 0xff bytes (NaN as
//    float or double) before every block so that a read before a write shows.
// Kernel arguments are checked against the kernel's C++ signature by cuda_emu.py.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ucontext.h>

// Under AddressSanitizer (cuda_emu.py's SPIKING_EMU_ASAN=1) every switch between the scheduler's
// stack and a fiber's is announced, as ASan's fiber interface asks
// (sanitizer/common_interface_defs.h: __sanitizer_start/finish_switch_fiber).
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __align__(n) alignas(n)
// Static shared arrays become function statics: one copy, shared by the threads of the block
// that runs (blocks run one at a time). `extern __shared__` arrays are rewritten by cuda_emu.py.
#define __shared__ static

struct emu_dim3 {
    unsigned int x, y, z;
};

namespace emu {

constexpr size_t kDynSmemMax = 48 * 1024;  // per launch without cudaFuncAttributeMax...
#ifdef EMU_ASAN  // ASan's red zones make frames several times larger
constexpr size_t kStack = 2048 * 1024;
#else
constexpr size_t kStack = 256 * 1024;
#endif

enum State { READY, WAITING, DONE };

struct Fiber {
    ucontext_t ctx;
    emu_dim3 tid;
    State st;
    int lin;
    char* stack;
    void* fake;  // ASan's fake stack of the fiber while it is switched out
};

struct Warp {
    int live = 0, arrived = 0, line = 0;
    unsigned char slot[32][8];
};

inline emu_dim3 g_thread, g_block, g_bdim, g_gdim;
inline std::vector<Fiber> g_fibers;
inline std::vector<Warp> g_warps;
inline std::vector<char*> g_stacks;  // kept from launch to launch
inline ucontext_t g_sched;
inline Fiber* g_cur = nullptr;
inline void (*g_call)(void**) = nullptr;
inline void** g_params = nullptr;
inline std::string g_error;
inline int g_live = 0, g_bar_arrived = 0, g_bar_line = 0;
inline std::vector<std::pair<unsigned char*, size_t>> g_dyn_smem;
inline const void* g_sched_bottom = nullptr;  // the scheduler's stack, as ASan reports it
inline size_t g_sched_size = 0;

// A fiber hands control back to the scheduler (and, unless `final`, is resumed here later).
inline void to_scheduler(bool final = false) {
#ifdef EMU_ASAN
    Fiber* me = g_cur;
    __sanitizer_start_switch_fiber(final ? nullptr : &me->fake, g_sched_bottom, g_sched_size);
#endif
    swapcontext(&g_cur->ctx, &g_sched);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(me->fake, &g_sched_bottom, &g_sched_size);
#endif
}

inline void to_fiber(Fiber& f) {
#ifdef EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, kStack);
#endif
    swapcontext(&g_sched, &f.ctx);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Called once per `extern __shared__` array, at file scope before any launch, or inside a kernel
// by the first thread that reaches the declaration (the launch's later blocks are poisoned by
// launch()).
inline int register_dyn_smem(unsigned char* p, size_t n) {
    g_dyn_smem.emplace_back(p, n);
    std::memset(p, 0xff, n);
    return 0;
}

inline std::string where() {
    char b[96];
    snprintf(b, sizeof b, "block (%u,%u,%u) thread (%u,%u,%u)", g_block.x, g_block.y, g_block.z,
             g_thread.x, g_thread.y, g_thread.z);
    return b;
}

// Stop the launch: record the error and return to the scheduler for good.
[[noreturn]] inline void fail(const std::string& msg) {
    if (g_error.empty()) g_error = msg + " (" + where() + ")";
    to_scheduler(true);
    abort();  // never resumed
}

inline void wait_here() {
    g_cur->st = WAITING;
    to_scheduler();
}

inline void release_block() {  // fibers waiting on a warp barrier have lin < 0
    for (auto& f : g_fibers)
        if (f.st == WAITING && f.lin >= 0) f.st = READY;
    g_bar_arrived = 0;
}

inline void syncthreads(int line) {
    if (g_bar_arrived == 0) {
        g_bar_line = line;
    } else if (line != g_bar_line) {
        fail("__syncthreads() at line " + std::to_string(line) + " while other threads of the "
             "block wait at line " + std::to_string(g_bar_line) + " (barrier divergence)");
    }
    g_cur->st = WAITING;
    if (++g_bar_arrived == g_live) release_block();  // the last one in releases all, itself too
    to_scheduler();
}

inline Warp& my_warp() { return g_warps[g_cur->lin / 32]; }

inline void warp_barrier(int line) {
    Warp& w = my_warp();
    if (w.arrived == 0) {
        w.line = line;
    } else if (line != w.line) {
        fail("warp collective at line " + std::to_string(line) + " while other lanes wait at line " +
             std::to_string(w.line));
    }
    const int me = g_cur->lin;
    if (++w.arrived == w.live) {
        w.arrived = 0;
        const int base = (me / 32) * 32;
        for (int l = base; l < base + 32 && l < (int)g_fibers.size(); ++l)
            if (l != me && g_fibers[l].st == WAITING && g_fibers[l].lin < 0) g_fibers[l].st = READY;
        g_cur->st = READY;
        to_scheduler();  // let the others read before anyone writes again
        return;
    }
    g_cur->lin = -1 - me;  // waiting on a warp barrier: not released by the block barrier
    wait_here();
    g_cur->lin = me;
}

template <typename T>
T shfl_down(int line, unsigned mask, T v, unsigned delta, int width = 32) {
    static_assert(sizeof(T) <= 8, "shuffles of at most 8 bytes");
    if (mask != 0xffffffffu) fail("__shfl_down_sync with a partial mask is not emulated");
    Warp& w = my_warp();
    if (w.live != 32)
        fail("__shfl_down_sync(0xffffffff) in a warp with " + std::to_string(w.live) +
             " live lanes (all 32 must take part)");
    const int lane = g_cur->lin % 32;
    std::memcpy(w.slot[lane], &v, sizeof(T));
    warp_barrier(line);
    T out = v;
    const int src = lane + (int)delta;
    if (src / width == lane / width && src < 32) std::memcpy(&out, w.slot[src], sizeof(T));
    warp_barrier(line);
    return out;
}

inline void thread_exit() {
    Fiber* f = g_cur;
    if (my_warp().arrived > 0)
        fail("a thread ended while other lanes of its warp wait in a full-mask warp collective");
    f->st = DONE;
    --g_live;
    --my_warp().live;
    if (g_bar_arrived > 0 && g_bar_arrived == g_live) release_block();
}

inline void entry(int idx) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_bottom, &g_sched_size);
#endif
    g_call(g_params);
    g_cur = &g_fibers[idx];
    thread_exit();
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, g_sched_bottom, g_sched_size);  // stack done
#endif
}  // returns to g_sched through uc_link

// Run the grid; returns 0, or 1 with the reason in err.
inline int launch(void (*call)(void**), void** params, const unsigned* grid, const unsigned* block,
                  size_t smem, int reverse, char* err, int errcap) {
    g_error.clear();
    if (smem > kDynSmemMax) {
        snprintf(err, errcap, "%zu bytes of dynamic shared memory asked; a launch gets at most "
                 "%zu without raising the kernel's max dynamic shared memory attribute", smem,
                 kDynSmemMax);
        return 1;
    }
    const unsigned nthr = block[0] * block[1] * block[2];
    g_call = call;
    g_params = params;
    g_bdim = {block[0], block[1], block[2]};
    g_gdim = {grid[0], grid[1], grid[2]};
    g_fibers.assign(nthr, Fiber{});
    while (g_stacks.size() < nthr) g_stacks.push_back(static_cast<char*>(malloc(kStack)));
    for (unsigned i = 0; i < nthr; ++i) g_fibers[i].stack = g_stacks[i];
    g_warps.assign((nthr + 31) / 32, Warp{});
    for (unsigned cz = 0; cz < grid[2]; ++cz)
        for (unsigned cy = 0; cy < grid[1]; ++cy)
            for (unsigned cx = 0; cx < grid[0]; ++cx) {  // reverse: blocks in reverse order too
                const unsigned gx = reverse ? grid[0] - 1 - cx : cx;
                const unsigned gy = reverse ? grid[1] - 1 - cy : cy;
                const unsigned gz = reverse ? grid[2] - 1 - cz : cz;
                g_block = {gx, gy, gz};
                for (auto& s : g_dyn_smem) std::memset(s.first, 0xff, s.second);
                g_live = (int)nthr;
                g_bar_arrived = 0;
                for (auto& w : g_warps) w = Warp{};
                for (unsigned i = 0; i < nthr; ++i) {
                    Fiber& f = g_fibers[i];
                    f.tid = {i % block[0], (i / block[0]) % block[1], i / (block[0] * block[1])};
                    f.st = READY;
                    f.lin = (int)i;
                    ++g_warps[i / 32].live;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack;
                    f.ctx.uc_stack.ss_size = kStack;
                    f.ctx.uc_link = &g_sched;
                    makecontext(&f.ctx, (void (*)())entry, 1, (int)i);
                }
                for (;;) {
                    bool ran = false, left = false;
                    for (unsigned k = 0; k < nthr; ++k) {
                        Fiber& f = g_fibers[reverse ? nthr - 1 - k : k];
                        if (f.st == READY) {
                            g_cur = &f;
                            g_thread = f.tid;
                            to_fiber(f);
                            ran = true;
                            if (!g_error.empty()) {
                                snprintf(err, errcap, "%s", g_error.c_str());
                                return 1;
                            }
                        }
                        if (f.st != DONE) left = true;
                    }
                    if (!left) break;
                    if (!ran) {
                        snprintf(err, errcap, "deadlock in block (%u,%u,%u): %d live threads wait "
                                 "on barriers that cannot complete", gx, gy, gz, g_live);
                        return 1;
                    }
                }
            }
    return 0;
}

template <typename A>
void sig_one(std::string& s) {
    using T = std::decay_t<A>;
    if (!s.empty()) s += ",";
    if constexpr (std::is_pointer_v<T>) s += "p";
    else if constexpr (std::is_same_v<T, bool>) s += "b1";
    else if constexpr (std::is_integral_v<T>) s += "i" + std::to_string(sizeof(T));
    else if constexpr (std::is_floating_point_v<T>) s += "f" + std::to_string(sizeof(T));
    else s += "s" + std::to_string(sizeof(T));
}

template <typename... A>
const char* signature(void (*)(A...)) {
    static std::string s = [] {
        std::string r;
        (sig_one<A>(r), ...);
        return r;
    }();
    return s.c_str();
}

template <typename... A, size_t... I>
void invoke_impl(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::decay_t<A>*>(p[I])...);
}

template <typename... A>
void invoke(void (*f)(A...), void** p) {
    invoke_impl(f, p, std::index_sequence_for<A...>{});
}

}  // namespace emu

#define threadIdx (::emu::g_thread)
#define blockIdx (::emu::g_block)
#define blockDim (::emu::g_bdim)
#define gridDim (::emu::g_gdim)
#define __syncthreads() ::emu::syncthreads(__LINE__)
#define __shfl_down_sync(...) ::emu::shfl_down(__LINE__, __VA_ARGS__)

template <typename T>
inline T atomicAdd(T* p, T v) {  // one OS thread: a plain read-modify-write is atomic
    T old = *p;
    *p = old + v;
    return old;
}

inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}

// float16 conversions for dtypes.cuh (IEEE binary16, round to nearest even, as PTX cvt.rn).
inline float emu_f16_to_f32(unsigned short bits) {
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    return static_cast<float>(h);
}
inline unsigned short emu_f32_to_f16(float v) {
    _Float16 h = static_cast<_Float16>(v);
    unsigned short bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}

#define EMU_EXPORT(k)                                                                   \
    extern "C" void emu_call_##k(void** p) { ::emu::invoke(&k, p); }                  \
    extern "C" const char* emu_sig_##k() { return ::emu::signature(&k); }

#define EMU_RUNTIME                                                                     \
    extern "C" int emu_launch(void (*call)(void**), void** params, const unsigned* grid, \
                              const unsigned* block, size_t smem, int reverse, char* err, \
                              int errcap) {                                             \
        return ::emu::launch(call, params, grid, block, smem, reverse, err, errcap);    \
    }
