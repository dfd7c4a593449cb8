//===- MoECudaRuntime.cpp - mgpu* entry points over the CUDA driver API ---===//
//
// MLIR's gpu-to-llvm lowering turns `gpu.launch_func`, `gpu.alloc`,
// `gpu.memcpy` and friends into calls of `mgpu*` functions; Debian ships no
// library defining them, so this one does, over the CUDA driver API:
//
//   * libcuda.so.1 is opened with dlopen on first use (no link-time
//     dependency: binaries start on machines without a GPU); the
//     environment variable MOE_CUDA_DRIVER names another library to open
//     instead, such as the PTX emulator (runtime/ptx-emu);
//   * no function aborts: a failure is recorded as the calling thread's
//     pending error (the first one wins), later launches and copies of the
//     thread are skipped, and moe_cuda_take_error() reports and clears it;
//   * device memory comes from the driver's stream-ordered pool, which is
//     told to keep freed memory, so per-call temporaries cost no driver
//     allocation after the first call;
//   * streams are recycled per thread instead of created per launch;
//   * with MOE_CUDA_PROFILE=1, every launch is timed with CUDA events and
//     a per-kernel table is printed to stderr at exit.
//
// Signatures follow what MLIR 22's lowering emits (see docs/gpu.md).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/moe_cuda.h"

#include <dlfcn.h>
#include <pthread.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

namespace {

// The few driver API types used, as the ABI defines them.
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
using CUcontext = struct CUctx_st *;
using CUmodule = struct CUmod_st *;
using CUfunction = struct CUfunc_st *;
using CUstream = struct CUstream_st *;
using CUevent = struct CUevent_st *;
using CUmemoryPool = struct CUmemPoolHandle_st *;

constexpr int kAttrComputeCapabilityMajor = 75;
constexpr int kAttrComputeCapabilityMinor = 76;
constexpr int kJitOptimizationLevel = 7;
constexpr int kMemPoolReleaseThreshold = 4;
constexpr unsigned kEventDisableTiming = 2;

struct Driver {
  CUresult (*cuInit)(unsigned);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *,
                                 void **);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, CUstream, void **,
                             void **);
  CUresult (*cuStreamCreate)(CUstream *, unsigned);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
  CUresult (*cuEventCreate)(CUevent *, unsigned);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
  CUresult (*cuMemFreeAsync)(CUdeviceptr, CUstream);
  CUresult (*cuDeviceGetDefaultMemPool)(CUmemoryPool *, CUdevice);
  CUresult (*cuMemPoolSetAttribute)(CUmemoryPool, int, void *);
  CUresult (*cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
  CUresult (*cuMemsetD16Async)(CUdeviceptr, unsigned short, size_t, CUstream);
};

struct State {
  Driver driver{};
  CUresult initError = MOE_CUDA_ERROR_NO_DRIVER;
  CUdevice device = 0;
  CUcontext context = nullptr;
  int deviceCount = 0;
};

// Plain globals and pthread_once: the library needs no C++ runtime, so C
// programs link it without libstdc++.
State s;
pthread_once_t once = PTHREAD_ONCE_INIT;

void initialize() {
  const char *path = getenv("MOE_CUDA_DRIVER");
  void *lib =
      dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return;
  Driver &d = s.driver;
  bool complete = true;
  auto bind = [&](auto &fn, const char *name, bool required = true) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(lib, name));
    if (!fn && required)
      complete = false;
  };
  bind(d.cuInit, "cuInit");
  bind(d.cuGetErrorString, "cuGetErrorString");
  bind(d.cuDeviceGetCount, "cuDeviceGetCount");
  bind(d.cuDeviceGet, "cuDeviceGet");
  bind(d.cuDeviceGetName, "cuDeviceGetName");
  bind(d.cuDeviceGetAttribute, "cuDeviceGetAttribute");
  bind(d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  bind(d.cuCtxSetCurrent, "cuCtxSetCurrent");
  bind(d.cuCtxSynchronize, "cuCtxSynchronize");
  bind(d.cuModuleLoadData, "cuModuleLoadData");
  bind(d.cuModuleLoadDataEx, "cuModuleLoadDataEx");
  bind(d.cuModuleUnload, "cuModuleUnload");
  bind(d.cuModuleGetFunction, "cuModuleGetFunction");
  bind(d.cuLaunchKernel, "cuLaunchKernel");
  bind(d.cuStreamCreate, "cuStreamCreate");
  bind(d.cuStreamDestroy, "cuStreamDestroy_v2");
  bind(d.cuStreamSynchronize, "cuStreamSynchronize");
  bind(d.cuStreamWaitEvent, "cuStreamWaitEvent");
  bind(d.cuEventCreate, "cuEventCreate");
  bind(d.cuEventDestroy, "cuEventDestroy_v2");
  bind(d.cuEventRecord, "cuEventRecord");
  bind(d.cuEventSynchronize, "cuEventSynchronize");
  bind(d.cuEventElapsedTime, "cuEventElapsedTime");
  bind(d.cuMemAlloc, "cuMemAlloc_v2");
  bind(d.cuMemFree, "cuMemFree_v2");
  bind(d.cuMemAllocAsync, "cuMemAllocAsync", false);
  bind(d.cuMemFreeAsync, "cuMemFreeAsync", false);
  bind(d.cuDeviceGetDefaultMemPool, "cuDeviceGetDefaultMemPool", false);
  bind(d.cuMemPoolSetAttribute, "cuMemPoolSetAttribute", false);
  bind(d.cuMemcpyAsync, "cuMemcpyAsync");
  bind(d.cuMemcpyHtoD, "cuMemcpyHtoD_v2");
  bind(d.cuMemcpyDtoH, "cuMemcpyDtoH_v2");
  bind(d.cuMemsetD32Async, "cuMemsetD32Async");
  bind(d.cuMemsetD16Async, "cuMemsetD16Async");
  if (!complete)
    return;
  if ((s.initError = d.cuInit(0)) != 0)
    return;
  if ((s.initError = d.cuDeviceGetCount(&s.deviceCount)) != 0)
    return;
  if (s.deviceCount == 0) {
    s.initError = MOE_CUDA_ERROR_NO_DEVICE;
    return;
  }
  if ((s.initError = d.cuDeviceGet(&s.device, 0)) != 0)
    return;
  if ((s.initError = d.cuDevicePrimaryCtxRetain(&s.context, s.device)) != 0)
    return;
  if (!d.cuMemAllocAsync || !d.cuMemFreeAsync)
    d.cuMemAllocAsync = nullptr;
  // Keep freed pool memory for the next call instead of returning it at
  // every synchronization.
  CUmemoryPool pool;
  if (d.cuMemAllocAsync && d.cuDeviceGetDefaultMemPool &&
      d.cuMemPoolSetAttribute &&
      d.cuDeviceGetDefaultMemPool(&pool, s.device) == 0) {
    uint64_t keep = UINT64_MAX;
    d.cuMemPoolSetAttribute(pool, kMemPoolReleaseThreshold, &keep);
  }
  s.initError = 0;
}

State &state() {
  pthread_once(&once, initialize);
  return s;
}

thread_local CUresult pendingError = 0;
constexpr int kMaxFreeStreams = 8;
thread_local CUstream freeStreams[kMaxFreeStreams];
thread_local int numFreeStreams = 0;

void record(CUresult code) {
  if (code != 0 && pendingError == 0)
    pendingError = code;
}

/// The driver, current on this thread, or null (error recorded) when the
/// GPU cannot be used or an earlier operation of this thread failed.
const Driver *ready() {
  State &s = state();
  if (s.initError != 0) {
    record(s.initError);
    return nullptr;
  }
  if (pendingError != 0)
    return nullptr;
  thread_local bool current = false;
  if (!current) {
    CUresult r = s.driver.cuCtxSetCurrent(s.context);
    if (r != 0) {
      record(r);
      return nullptr;
    }
    current = true;
  }
  return &s.driver;
}

/// Like ready(), but also when an error is pending: for releasing
/// resources, which must happen whatever failed before.
const Driver *forCleanup() {
  State &s = state();
  if (s.initError != 0)
    return nullptr;
  s.driver.cuCtxSetCurrent(s.context);
  return &s.driver;
}

CUdeviceptr dptr(const void *p) { return reinterpret_cast<CUdeviceptr>(p); }

//===----------------------------------------------------------------------===//
// MOE_CUDA_PROFILE=1: per-kernel times, printed to stderr at exit
//===----------------------------------------------------------------------===//

struct KernelStats {
  CUfunction function;
  char name[96];
  double ms;
  long long launches;
};
constexpr int kMaxKernels = 512;
KernelStats kernels[kMaxKernels];
int numKernels = 0;
pthread_mutex_t kernelsLock = PTHREAD_MUTEX_INITIALIZER;

bool profiling() {
  static int enabled = -1;
  if (enabled < 0) {
    const char *v = getenv("MOE_CUDA_PROFILE");
    enabled = v && *v && strcmp(v, "0") != 0;
  }
  return enabled;
}

void printProfile() {
  double total = 0;
  for (int i = 0; i < numKernels; ++i)
    total += kernels[i].ms;
  // Largest first (a selection sort: a few hundred kernels at most).
  for (int i = 0; i < numKernels; ++i) {
    int best = i;
    for (int j = i + 1; j < numKernels; ++j)
      if (kernels[j].ms > kernels[best].ms)
        best = j;
    KernelStats tmp = kernels[i];
    kernels[i] = kernels[best];
    kernels[best] = tmp;
  }
  fprintf(stderr, "moe_cuda profile: %.3f ms in %d kernels\n", total,
          numKernels);
  for (int i = 0; i < numKernels; ++i)
    fprintf(stderr, "  %10.3f ms %5.1f%% %8lld launches  %s\n", kernels[i].ms,
            total > 0 ? 100 * kernels[i].ms / total : 0.0, kernels[i].launches,
            kernels[i].name);
}

/// The statistics of `fn`, created (named `name`) on first sight.
KernelStats *statsFor(CUfunction fn, const char *name) {
  pthread_mutex_lock(&kernelsLock);
  KernelStats *found = nullptr;
  for (int i = 0; i < numKernels && !found; ++i)
    if (kernels[i].function == fn)
      found = &kernels[i];
  if (!found && numKernels < kMaxKernels) {
    if (numKernels == 0)
      atexit(printProfile);
    found = &kernels[numKernels++];
    found->function = fn;
    snprintf(found->name, sizeof found->name, "%s", name ? name : "?");
  }
  pthread_mutex_unlock(&kernelsLock);
  return found;
}

} // namespace

//===----------------------------------------------------------------------===//
// The host program's API (moe_cuda.h)
//===----------------------------------------------------------------------===//

extern "C" {

int moe_cuda_device_count(void) {
  State &s = state();
  return s.initError == 0 ? s.deviceCount : 0;
}

int32_t moe_cuda_device_info(char *name, size_t size, int *capability) {
  State &s = state();
  if (s.initError != 0)
    return s.initError;
  const Driver &d = s.driver;
  if (name && size > 0) {
    CUresult r = d.cuDeviceGetName(name, static_cast<int>(size), s.device);
    if (r != 0)
      return r;
  }
  if (capability) {
    int major = 0, minor = 0;
    CUresult r =
        d.cuDeviceGetAttribute(&major, kAttrComputeCapabilityMajor, s.device);
    if (r == 0)
      r = d.cuDeviceGetAttribute(&minor, kAttrComputeCapabilityMinor, s.device);
    if (r != 0)
      return r;
    *capability = major * 10 + minor;
  }
  return 0;
}

void *moe_cuda_malloc(size_t bytes) {
  if (bytes == 0)
    return nullptr;
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUdeviceptr p = 0;
  CUresult r = d->cuMemAlloc(&p, bytes);
  if (r != 0) {
    record(r);
    return nullptr;
  }
  return reinterpret_cast<void *>(p);
}

void moe_cuda_free(void *device) {
  if (!device)
    return;
  if (const Driver *d = forCleanup())
    d->cuMemFree(dptr(device));
}

int32_t moe_cuda_copy_to_device(void *device, const void *host, size_t bytes) {
  if (bytes == 0)
    return 0;
  const Driver *d = ready();
  if (!d)
    return moe_cuda_take_error();
  CUresult r = d->cuMemcpyHtoD(dptr(device), host, bytes);
  record(r);
  return r != 0 ? moe_cuda_take_error() : 0;
}

int32_t moe_cuda_copy_to_host(void *host, const void *device, size_t bytes) {
  if (bytes == 0)
    return 0;
  const Driver *d = ready();
  if (!d)
    return moe_cuda_take_error();
  CUresult r = d->cuMemcpyDtoH(host, dptr(device), bytes);
  record(r);
  return r != 0 ? moe_cuda_take_error() : 0;
}

int32_t moe_cuda_synchronize(void) {
  const Driver *d = ready();
  if (!d)
    return moe_cuda_take_error();
  CUresult r = d->cuCtxSynchronize();
  record(r);
  return r != 0 ? moe_cuda_take_error() : 0;
}

int32_t moe_cuda_take_error(void) {
  CUresult r = pendingError;
  pendingError = 0;
  return r;
}

int32_t moe_cuda_peek_error(void) { return pendingError; }

const char *moe_cuda_error_string(int32_t code) {
  switch (code) {
  case MOE_CUDA_SUCCESS:
    return "no error";
  case MOE_CUDA_ERROR_NO_DRIVER:
    return "the CUDA driver (libcuda.so.1) could not be loaded";
  case MOE_CUDA_ERROR_NO_DEVICE:
    return "no CUDA device is present";
  case MOE_CUDA_ERROR_NO_MODULE:
    return "a GPU module failed to load (see the earlier error)";
  default:
    break;
  }
  State &s = state();
  const char *text = nullptr;
  if (s.driver.cuGetErrorString &&
      s.driver.cuGetErrorString(code, &text) == 0 && text)
    return text;
  return "unknown CUDA error";
}

//===----------------------------------------------------------------------===//
// The mgpu* entry points of MLIR's gpu-to-llvm lowering
//===----------------------------------------------------------------------===//

void *mgpuModuleLoad(void *data, size_t /*size*/) {
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUmodule module = nullptr;
  CUresult r = d->cuModuleLoadData(&module, data);
  record(r);
  return r == 0 ? module : nullptr;
}

void *mgpuModuleLoadJIT(void *data, int optLevel) {
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUmodule module = nullptr;
  int option = kJitOptimizationLevel;
  void *value = reinterpret_cast<void *>(static_cast<intptr_t>(optLevel));
  CUresult r = d->cuModuleLoadDataEx(&module, data, 1, &option, &value);
  record(r);
  return r == 0 ? module : nullptr;
}

void mgpuModuleUnload(void *module) {
  if (!module)
    return;
  if (const Driver *d = forCleanup())
    d->cuModuleUnload(static_cast<CUmodule>(module));
}

void *mgpuModuleGetFunction(void *module, const char *name) {
  // Modules load in global constructors, on whatever thread ran them; a
  // null module here means that load failed.
  if (!module) {
    State &s = state();
    record(s.initError != 0 ? s.initError : MOE_CUDA_ERROR_NO_MODULE);
    return nullptr;
  }
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUfunction fn = nullptr;
  CUresult r = d->cuModuleGetFunction(&fn, static_cast<CUmodule>(module), name);
  record(r);
  if (r == 0 && profiling())
    statsFor(fn, name);
  return r == 0 ? fn : nullptr;
}

void mgpuLaunchKernel(void *function, intptr_t gridX, intptr_t gridY,
                      intptr_t gridZ, intptr_t blockX, intptr_t blockY,
                      intptr_t blockZ, int32_t smem, void *stream,
                      void **params, void **extra, size_t /*paramsCount*/) {
  if (!function)
    return;
  const Driver *d = ready();
  if (!d)
    return;
  CUevent start = nullptr, end = nullptr;
  if (profiling()) {
    d->cuEventCreate(&start, 0);
    d->cuEventCreate(&end, 0);
    d->cuEventRecord(start, static_cast<CUstream>(stream));
  }
  record(d->cuLaunchKernel(static_cast<CUfunction>(function), gridX, gridY,
                           gridZ, blockX, blockY, blockZ, smem,
                           static_cast<CUstream>(stream), params, extra));
  if (start) {
    float ms = 0;
    d->cuEventRecord(end, static_cast<CUstream>(stream));
    d->cuEventSynchronize(end);
    d->cuEventElapsedTime(&ms, start, end);
    d->cuEventDestroy(start);
    d->cuEventDestroy(end);
    if (KernelStats *stats =
            statsFor(static_cast<CUfunction>(function), nullptr)) {
      pthread_mutex_lock(&kernelsLock);
      stats->ms += ms;
      stats->launches += 1;
      pthread_mutex_unlock(&kernelsLock);
    }
  }
}

void *mgpuStreamCreate() {
  if (numFreeStreams > 0)
    return freeStreams[--numFreeStreams];
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUstream stream = nullptr;
  CUresult r = d->cuStreamCreate(&stream, 0);
  record(r);
  return r == 0 ? stream : nullptr;
}

void mgpuStreamDestroy(void *stream) {
  if (!stream)
    return;
  // Kept for reuse: the generated code makes one per group of operations.
  if (numFreeStreams < kMaxFreeStreams) {
    freeStreams[numFreeStreams++] = static_cast<CUstream>(stream);
    return;
  }
  if (const Driver *d = forCleanup())
    d->cuStreamDestroy(static_cast<CUstream>(stream));
}

void mgpuStreamSynchronize(void *stream) {
  const Driver *d = ready();
  if (!d)
    return;
  record(d->cuStreamSynchronize(static_cast<CUstream>(stream)));
}

void mgpuStreamWaitEvent(void *stream, void *event) {
  const Driver *d = ready();
  if (!d || !event)
    return;
  record(d->cuStreamWaitEvent(static_cast<CUstream>(stream),
                              static_cast<CUevent>(event), 0));
}

void *mgpuEventCreate() {
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUevent event = nullptr;
  CUresult r = d->cuEventCreate(&event, kEventDisableTiming);
  record(r);
  return r == 0 ? event : nullptr;
}

void mgpuEventDestroy(void *event) {
  if (!event)
    return;
  if (const Driver *d = forCleanup())
    d->cuEventDestroy(static_cast<CUevent>(event));
}

void mgpuEventSynchronize(void *event) {
  const Driver *d = ready();
  if (!d || !event)
    return;
  record(d->cuEventSynchronize(static_cast<CUevent>(event)));
}

void mgpuEventRecord(void *event, void *stream) {
  const Driver *d = ready();
  if (!d || !event)
    return;
  record(d->cuEventRecord(static_cast<CUevent>(event),
                          static_cast<CUstream>(stream)));
}

void *mgpuMemAlloc(uint64_t bytes, void *stream, bool /*isHostShared*/) {
  if (bytes == 0)
    return nullptr;
  const Driver *d = ready();
  if (!d)
    return nullptr;
  CUdeviceptr p = 0;
  CUresult r =
      d->cuMemAllocAsync
          ? d->cuMemAllocAsync(&p, bytes, static_cast<CUstream>(stream))
          : d->cuMemAlloc(&p, bytes);
  record(r);
  return r == 0 ? reinterpret_cast<void *>(p) : nullptr;
}

void mgpuMemFree(void *ptr, void *stream) {
  if (!ptr)
    return;
  const Driver *d = forCleanup();
  if (!d)
    return;
  if (d->cuMemAllocAsync)
    d->cuMemFreeAsync(dptr(ptr), static_cast<CUstream>(stream));
  else
    d->cuMemFree(dptr(ptr));
}

void mgpuMemcpy(void *dst, void *src, size_t bytes, void *stream) {
  if (bytes == 0)
    return;
  const Driver *d = ready();
  if (!d)
    return;
  record(d->cuMemcpyAsync(dptr(dst), dptr(src), bytes,
                          static_cast<CUstream>(stream)));
}

void mgpuMemset32(void *dst, unsigned value, size_t count, void *stream) {
  const Driver *d = ready();
  if (!d || count == 0)
    return;
  record(d->cuMemsetD32Async(dptr(dst), value, count,
                             static_cast<CUstream>(stream)));
}

void mgpuMemset16(void *dst, unsigned short value, size_t count, void *stream) {
  const Driver *d = ready();
  if (!d || count == 0)
    return;
  record(d->cuMemsetD16Async(dptr(dst), value, count,
                             static_cast<CUstream>(stream)));
}

void mgpuSetDefaultDevice(int32_t /*device*/) {
  // One device (the first visible one) is used; see moe_cuda.h.
}

} // extern "C"
