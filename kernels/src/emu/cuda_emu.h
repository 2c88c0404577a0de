// wsdscope kernels: the CUDA execution model on the CPU, so the project's CUDA sources
// (src/cuda/*.cu, unchanged) compile with a host C++ compiler and run on the CPU executor.
//
// A block runs on one OS thread; each of its CUDA threads is a fiber with its own stack.
// Fibers interleave only where CUDA threads synchronise, and genuinely wait there:
//   - __syncthreads() is a barrier across the block's live threads;
//   - the warp intrinsics (__shfl*_sync, __syncwarp, __ballot/__any/__all_sync) meet the
//     lanes of their mask in warp-synchronous steps and exchange values through the warp;
// so a missing barrier, a wrong shared-memory index or a skipped shuffle gives wrong
// answers here as on a GPU. The scheduler runs each fiber as far as it can before switching,
// which exposes a missing barrier as stale data. What a GPU would hang on or leave undefined
// is an error naming the block, the threads and the source line: a deadlock, lanes meeting
// at different shuffles or masks, a shuffle reading a lane outside its mask or a lane that
// has exited, threads meeting at different __syncthreads.
//
// __shared__ variables are per OS thread (one block at a time per thread), threadIdx and
// friends read the running fiber's indices, atomics are real atomics (blocks run in parallel
// on several OS threads). Floating point is IEEE single/double without fused multiply-add
// contraction (compile with -ffp-contract=off); rsqrtf and the fast intrinsics are exact.
//
// The translation unit that includes a source also lists its kernels with WSD_EMU_KERNEL and
// ends with WSD_EMU_EXPORTS, which defines the C entry points the Rust side loads.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <string>
#include <type_traits>
#include <utility>

struct dim3 {
    unsigned x, y, z;
};
typedef dim3 uint3;

namespace wsd_emu {

// Fiber contexts: a hand-written switch of the callee-saved registers on x86-64 (a few
// nanoseconds; swapcontext would also make a signal-mask system call per switch), ucontext
// elsewhere.
#if defined(__x86_64__)
extern "C" void wsd_emu_switch(void** save_sp, void* to_sp);
__asm__(
    ".text\n"
    ".globl wsd_emu_switch\n"
    ".hidden wsd_emu_switch\n"
    ".type wsd_emu_switch,@function\n"
    "wsd_emu_switch:\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $8, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $8, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size wsd_emu_switch, .-wsd_emu_switch\n");

struct Ctx {
    void* sp;
};

// A context that starts `fn` (which never returns) on the stack [lo, lo + size).
inline bool ctx_init(Ctx& c, char* lo, size_t size, void (*fn)()) {
    uintptr_t top = ((uintptr_t)(lo + size)) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;                  // fn's return address: it never returns
    *--sp = (uint64_t)(uintptr_t)fn;  // where the switch's ret goes
    for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp rbx r12 r13 r14 r15
    uint32_t csr[2];
    __asm__ volatile("stmxcsr %0" : "=m"(csr[0]));
    __asm__ volatile("fnstcw %0" : "=m"(csr[1]));
    --sp;
    memcpy(sp, csr, 8);
    c.sp = sp;
    return true;
}
inline void ctx_swap(Ctx& from, Ctx& to) { wsd_emu_switch(&from.sp, to.sp); }
[[noreturn]] inline void ctx_jump(Ctx& to) {
    void* dead;
    wsd_emu_switch(&dead, to.sp);
    __builtin_unreachable();
}
#else
struct Ctx {
    ucontext_t uc;
};
inline bool ctx_init(Ctx& c, char* lo, size_t size, void (*fn)()) {
    if (getcontext(&c.uc) != 0) return false;
    c.uc.uc_stack.ss_sp = lo;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, fn, 0);
    return true;
}
inline void ctx_swap(Ctx& from, Ctx& to) { swapcontext(&from.uc, &to.uc); }
[[noreturn]] inline void ctx_jump(Ctx& to) {
    setcontext(&to.uc);
    __builtin_unreachable();
}
#endif

enum class State : unsigned char { Ready, AtBarrier, AtWarp, Done };

// A source location: the file and line of a __syncthreads or warp intrinsic.
struct Site {
    const char* file;
    int line;
    bool operator!=(const Site& o) const { return line != o.line || strcmp(file, o.file) != 0; }
};

struct Block;

// One CUDA thread: a fiber.
struct Thread {
    Ctx ctx;
    uint3 tid;
    unsigned linear;  // x + y·bx + z·bx·by
    State state;
    Site site;  // where it waits
    Block* blk;
};

// One warp's synchronisation state and exchange slots (double-buffered by generation).
struct Warp {
    unsigned exists;   // lanes the block has
    unsigned live;     // lanes that have not exited
    unsigned arrived;  // lanes at the current warp step
    unsigned mask;     // that step's mask
    Site site;         // and its source line
    unsigned gen;      // completed steps
    uint64_t slot[2][32];
};

typedef void (*Entry)(void**);

struct KernelInfo {
    const char* name;
    Entry entry;
    unsigned nargs;
    const unsigned* sizes;  // bytes of each parameter
};

struct Block {
    uint3 idx;
    dim3 dim, grid;
    const KernelInfo* kernel;
    void** params;
    Thread* threads;
    Warp* warps;
    unsigned n, live, arrived;
    Site barrier_site;
    Ctx sched;
    bool failed;
    std::string error;
};

inline thread_local Thread* cur = nullptr;

// Fiber stacks and thread slots of one OS thread, reused block after block.
struct Runtime {
    static constexpr size_t kStack = 64 * 1024;
    char* region = nullptr;
    size_t stride = 0, cap = 0, page = 0;
    Thread threads[1024];
    Warp warps[32];

    bool ensure(unsigned n) {
        if (n <= cap) return true;
        release();
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        stride = kStack + page;  // a guard page below each stack
        void* p = mmap(nullptr, stride * n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        region = (char*)p;
        for (unsigned i = 0; i < n; ++i) {
            if (mprotect(region + i * stride, page, PROT_NONE) != 0) return false;
        }
        this->page = page;
        cap = n;
        return true;
    }
    void release() {
        if (region) munmap(region, stride * cap);
        region = nullptr;
        cap = 0;
    }
    ~Runtime() { release(); }
};

inline Runtime& runtime() {
    static thread_local Runtime* rt = nullptr;
    static thread_local struct Owner {
        Runtime** p;
        ~Owner() {
            delete *p;
            *p = nullptr;
        }
    } owner{&rt};
    (void)owner;
    if (!rt) rt = new Runtime();
    return *rt;
}

inline void yield() {
    Thread* t = cur;
    ctx_swap(t->ctx, t->blk->sched);
}

// Records the block's first failure and leaves the fiber for good.
[[noreturn]] inline void fail(const std::string& msg) {
    Thread* t = cur;
    Block* b = t->blk;
    if (!b->failed) {
        b->failed = true;
        char where[96];
        snprintf(where, sizeof where, "thread (%u,%u,%u): ", t->tid.x, t->tid.y, t->tid.z);
        b->error = where + msg;
    }
    t->state = State::Done;
    ctx_jump(b->sched);
}

inline std::string line_str(Site s) {
    const char* base = strrchr(s.file, '/');
    return std::string(base ? base + 1 : s.file) + ":" + std::to_string(s.line);
}

inline void release_barrier(Block* b) {
    for (unsigned i = 0; i < b->n; ++i)
        if (b->threads[i].state == State::AtBarrier) b->threads[i].state = State::Ready;
    b->arrived = 0;
}

inline void syncthreads(Site line) {
    Thread* t = cur;
    Block* b = t->blk;
    if (b->arrived == 0) {
        b->barrier_site = line;
    } else if (b->barrier_site != line) {
        fail("__syncthreads at " + line_str(line) + " meets threads waiting at the one at " +
             line_str(b->barrier_site) + " (a barrier in divergent code)");
    }
    if (++b->arrived == b->live) {
        release_barrier(b);
        return;
    }
    t->state = State::AtBarrier;
    t->site = line;
    yield();
}

// One warp-synchronous step over the lanes of `mask`: returns once every one has arrived.
// Returns the generation the step had, which picks the exchange slots of the step.
inline unsigned warp_step(unsigned mask, Site line, const char* what) {
    Thread* t = cur;
    Block* b = t->blk;
    Warp& w = b->warps[t->linear / 32];
    const unsigned lane = t->linear % 32, bit = 1u << lane;
    if (!(mask & bit))
        fail(std::string(what) + " at " + line_str(line) + ": lane " + std::to_string(lane) +
             " calls it but is not in its mask");
    if ((mask & ~w.exists) != 0)
        fail(std::string(what) + " at " + line_str(line) +
             ": its mask names lanes this block does not have (blockDim not a multiple of 32?)");
    if ((mask & ~w.live) != 0)
        fail(std::string(what) + " at " + line_str(line) + ": its mask names lanes that have exited");
    if (w.arrived == 0) {
        w.mask = mask;
        w.site = line;
    } else if (w.mask != mask || w.site != line) {
        fail(std::string(what) + " at " + line_str(line) + " meets lanes waiting at " + line_str(w.site) +
             " (divergent warp: lanes at different warp intrinsics or masks)");
    }
    const unsigned gen = w.gen;
    w.arrived |= bit;
    if (w.arrived == w.mask) {
        w.arrived = 0;
        w.gen++;
        const unsigned base = t->linear & ~31u;
        for (unsigned l = 0; l < 32; ++l)
            if ((w.mask >> l) & 1u) {
                Thread& o = b->threads[base + l];
                if (o.state == State::AtWarp) o.state = State::Ready;
            }
        return gen;
    }
    t->state = State::AtWarp;
    t->site = line;
    yield();
    return gen;
}

enum Mode { Idx, Up, Down, Xor };

template <typename T>
inline T shfl(Mode mode, Site line, unsigned mask, T v, int arg, int width = 32) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    Thread* t = cur;
    Warp& w = t->blk->warps[t->linear / 32];
    const int lane = (int)(t->linear % 32);
    if (width <= 0 || width > 32 || (width & (width - 1)) != 0)
        fail("shuffle at " + line_str(line) + ": width " + std::to_string(width) + " is not a power of two up to 32");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    w.slot[w.gen & 1][lane] = bits;
    const unsigned gen = warp_step(mask, line, "shuffle");
    const int seg = lane & ~(width - 1), in = lane - seg;
    int src = lane;
    switch (mode) {
        case Idx: src = seg + (arg % width + width) % width; break;
        case Up: src = in - arg >= 0 ? lane - arg : lane; break;
        case Down: src = in + arg < width ? lane + arg : lane; break;
        case Xor: src = (lane ^ arg) < seg + width ? (lane ^ arg) : lane; break;
    }
    if (src < 0 || src > 31 || !((mask >> src) & 1u))
        fail("shuffle at " + line_str(line) + ": lane " + std::to_string(lane) + " reads lane " +
             std::to_string(src) + ", which is not in the mask");
    T r;
    memcpy(&r, &w.slot[gen & 1][src], sizeof(T));
    return r;
}

// __syncwarp(mask = all lanes) at a site: a callable, so the macro needs no empty-argument
// comma handling.
struct SyncWarp {
    Site line;
    void operator()(unsigned mask = 0xffffffffu) const { warp_step(mask, line, "__syncwarp"); }
};

// The mask of lanes whose predicate is non-zero.
inline unsigned ballot(Site line, const char* what, unsigned mask, int pred) {
    Thread* t = cur;
    Warp& w = t->blk->warps[t->linear / 32];
    const unsigned lane = t->linear % 32;
    w.slot[w.gen & 1][lane] = pred != 0;
    const unsigned gen = warp_step(mask, line, what);
    unsigned r = 0;
    for (unsigned l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && w.slot[gen & 1][l]) r |= 1u << l;
    return r;
}

inline void thread_exit() {
    Thread* t = cur;
    Block* b = t->blk;
    Warp& w = b->warps[t->linear / 32];
    const unsigned bit = 1u << (t->linear % 32);
    w.live &= ~bit;
    if (w.arrived != 0 && (w.mask & bit))
        fail("exited while lanes of its warp wait for it at the warp intrinsic at " + line_str(w.site));
    t->state = State::Done;
    b->live--;
    if (b->arrived > 0 && b->arrived == b->live) release_barrier(b);
    ctx_jump(b->sched);
}

inline void fiber_main() {
    Block* b = cur->blk;
    b->kernel->entry(b->params);
    thread_exit();
}

inline std::string describe_deadlock(const Block& b) {
    std::string s = "deadlock: no thread can run;";
    unsigned shown = 0;
    for (unsigned i = 0; i < b.n && shown < 8; ++i) {
        const Thread& t = b.threads[i];
        if (t.state == State::AtBarrier || t.state == State::AtWarp) {
            // Show the first thread of each run of threads waiting at the same place.
            if (i > 0 && b.threads[i - 1].state == t.state && !(b.threads[i - 1].site != t.site)) continue;
            s += " thread " + std::to_string(i) +
                 (t.state == State::AtBarrier ? " waits at __syncthreads, " : " waits at a warp intrinsic, ") +
                 line_str(t.site) + ";";
            shown++;
        }
    }
    return s;
}

// Runs blocks [begin, end) (linear block indices, x fastest) of `k`; returns 0, or 1 with
// the first failure in `err`.
inline int run_blocks(const KernelInfo& k, const unsigned* grid, const unsigned* block, void** params,
                      uint64_t begin, uint64_t end, char* err, size_t errlen) {
    const unsigned n = block[0] * block[1] * block[2];
    auto error = [&](const std::string& msg) {
        snprintf(err, errlen, "%s", msg.c_str());
        return 1;
    };
    if (n == 0 || n > 1024 || block[2] > 64 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0)
        return error(std::string(k.name) + ": launch geometry outside CUDA's limits (at most 1024 threads per block, z ≤ 64, no empty grid)");
    Runtime& rt = runtime();
    if (!rt.ensure(n)) return error("cannot allocate fiber stacks");
    auto stack = [&](unsigned i) { return rt.region + i * rt.stride + rt.page; };
    Block b{};
    b.dim = {block[0], block[1], block[2]};
    b.grid = {grid[0], grid[1], grid[2]};
    b.kernel = &k;
    b.params = params;
    b.threads = rt.threads;
    b.warps = rt.warps;
    b.n = n;
    for (uint64_t lin = begin; lin < end; ++lin) {
        b.idx = {(unsigned)(lin % grid[0]), (unsigned)(lin / grid[0] % grid[1]), (unsigned)(lin / ((uint64_t)grid[0] * grid[1]))};
        b.live = n;
        b.arrived = 0;
        b.failed = false;
        for (unsigned wi = 0; wi * 32 < n; ++wi) {
            Warp& w = b.warps[wi];
            const unsigned lanes = n - wi * 32 >= 32 ? 32 : n - wi * 32;
            w.exists = w.live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
            w.arrived = 0;
            w.gen = 0;
        }
        for (unsigned i = 0; i < n; ++i) {
            Thread& t = b.threads[i];
            t.tid = {i % block[0], i / block[0] % block[1], i / (block[0] * block[1])};
            t.linear = i;
            t.state = State::Ready;
            t.blk = &b;
            if (!ctx_init(t.ctx, stack(i), Runtime::kStack, fiber_main)) return error("cannot create a fiber");
        }
        for (;;) {
            bool ran = false, done = true;
            for (unsigned i = 0; i < n; ++i) {
                Thread& t = b.threads[i];
                if (t.state == State::Done) continue;
                done = false;
                if (t.state != State::Ready) continue;
                cur = &t;
                ctx_swap(b.sched, t.ctx);
                ran = true;
                if (b.failed) break;
            }
            cur = nullptr;
            if (b.failed || done) break;
            if (!ran) {
                b.failed = true;
                b.error = describe_deadlock(b);
                break;
            }
        }
        if (b.failed) {
            char where[160];
            snprintf(where, sizeof where, "%s, block (%u,%u,%u) of grid (%u,%u,%u), %u threads: ", k.name, b.idx.x,
                     b.idx.y, b.idx.z, grid[0], grid[1], grid[2], n);
            return error(where + b.error);
        }
    }
    return 0;
}

// The kernel's parameter list, and a call of it from cuLaunchKernel-style parameters (an
// array of pointers to each argument's bytes).
template <typename F>
struct Sig;
template <typename... A>
struct Sig<void (*)(A...)> {
    static constexpr unsigned nargs = sizeof...(A);
    static constexpr unsigned sizes[sizeof...(A) + 1] = {(unsigned)sizeof(A)..., 0u};
    template <void (*F)(A...), size_t... I>
    static void call_with(void** p, std::index_sequence<I...>) {
        F(*static_cast<A*>(p[I])...);
    }
    template <void (*F)(A...)>
    static void call(void** p) {
        call_with<F>(p, std::index_sequence_for<A...>{});
    }
};

}  // namespace wsd_emu

// ---- the CUDA names the sources use ------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __align__(n) alignas(n)
#define __restrict__ __restrict
#define __launch_bounds__(...)

#define WSD_EMU_SITE (wsd_emu::Site{__FILE__, __LINE__})
#define threadIdx (wsd_emu::cur->tid)
#define blockIdx (wsd_emu::cur->blk->idx)
#define blockDim (wsd_emu::cur->blk->dim)
#define gridDim (wsd_emu::cur->blk->grid)
#define warpSize 32

#define __syncthreads() wsd_emu::syncthreads(WSD_EMU_SITE)
#define __syncwarp(...) (wsd_emu::SyncWarp{WSD_EMU_SITE}(__VA_ARGS__))
#define __shfl_sync(m, v, ...) wsd_emu::shfl(wsd_emu::Idx, WSD_EMU_SITE, m, v, __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) wsd_emu::shfl(wsd_emu::Up, WSD_EMU_SITE, m, v, __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) wsd_emu::shfl(wsd_emu::Down, WSD_EMU_SITE, m, v, __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) wsd_emu::shfl(wsd_emu::Xor, WSD_EMU_SITE, m, v, __VA_ARGS__)
#define __ballot_sync(m, p) wsd_emu::ballot(WSD_EMU_SITE, "__ballot_sync", m, p)
#define __any_sync(m, p) (wsd_emu::ballot(WSD_EMU_SITE, "__any_sync", m, p) != 0u)
#define __all_sync(m, p) (wsd_emu::ballot(WSD_EMU_SITE, "__all_sync", m, p) == (m))

inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline double __longlong_as_double(long long x) { double d; memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double x) { long long i; memcpy(&i, &x, 8); return i; }

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T>
inline T atomicAdd(T* a, T v) {
    if constexpr (std::is_integral<T>::value) {
        return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
    } else {
        T old, next;
        __atomic_load(a, &old, __ATOMIC_RELAXED);
        do {
            next = old + v;
        } while (!__atomic_compare_exchange(a, &old, &next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        return old;
    }
}
template <typename T>
inline T atomicMax(T* a, T v) {
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
inline T atomicMin(T* a, T v) {
    T old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <typename T>
inline T atomicExch(T* a, T v) {
    T old;
    __atomic_exchange(a, &v, &old, __ATOMIC_RELAXED);
    return old;
}
template <typename T>
inline T atomicCAS(T* a, T expected, T desired) {
    __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return expected;
}

// ---- the kernel table and the C entry points ---------------------------------------------

#define WSD_EMU_KERNEL(name)                                                                      \
    {#name, &wsd_emu::Sig<decltype(&name)>::template call<&name>, wsd_emu::Sig<decltype(&name)>::nargs, \
     wsd_emu::Sig<decltype(&name)>::sizes},

#define WSD_EMU_EXPORTS(table)                                                                            \
    extern "C" __attribute__((visibility("default"))) unsigned wsd_emu_kernels(const wsd_emu::KernelInfo** out) { \
        *out = table;                                                                                     \
        return sizeof(table) / sizeof(table[0]);                                                          \
    }                                                                                                     \
    extern "C" __attribute__((visibility("default"))) int wsd_emu_run(                                    \
        unsigned kernel, const unsigned* grid, const unsigned* block, void** params, uint64_t begin,      \
        uint64_t end, char* err, size_t errlen) {                                                         \
        return wsd_emu::run_blocks(table[kernel], grid, block, params, begin, end, err, errlen);          \
    }
