/*===- moe_cuda.h - moe-mlir's CUDA runtime: the host program's side -----===*
 *
 * Code that moe-compile generates for NVPTX (`--target nvptx`) reaches the
 * GPU through the `mgpu*` functions of libmoe_cuda_runtime, a small library
 * over the CUDA driver API. This header is what a host program uses of it:
 * device buffers for the layer's arguments, copies, and the error of the
 * last failed GPU operation.
 *
 * libcuda.so.1 is loaded on first use with dlopen, so programs linked with
 * the runtime start on machines without a GPU or driver; every GPU
 * operation then fails with MOE_CUDA_ERROR_NO_DRIVER or
 * MOE_CUDA_ERROR_NO_DEVICE instead of aborting. The runtime uses device 0
 * (or CUDA_VISIBLE_DEVICES's first) through its primary context.
 *
 * Errors: the runtime records the first failure of each thread; after it,
 * the thread's launches and copies are skipped (so a failed allocation
 * never turns into a device fault) until moe_cuda_take_error() clears it.
 * Generated layer entries clear it on entry and return
 * MOE_ERROR_DEVICE (-3) when it was set during the call, leaving it for
 * the caller's moe_cuda_take_error() to report.
 *
 *===----------------------------------------------------------------------===*/
#ifndef MOE_RUNTIME_MOE_CUDA_H
#define MOE_RUNTIME_MOE_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Codes of the runtime itself; other nonzero codes are CUresult values. */
enum {
  MOE_CUDA_SUCCESS = 0,
  MOE_CUDA_ERROR_NO_DRIVER = 100000, /* libcuda.so.1 could not be loaded */
  MOE_CUDA_ERROR_NO_DEVICE = 100001, /* the driver reports no device */
  MOE_CUDA_ERROR_NO_MODULE = 100002  /* a kernel's module failed to load */
};

/* Number of CUDA devices (0 without a driver or device). */
int moe_cuda_device_count(void);
/* Writes the name and compute capability (major * 10 + minor) of the
 * device in use; returns 0 or an error code. */
int32_t moe_cuda_device_info(char *name, size_t size, int *capability);

/* Device memory. moe_cuda_malloc returns NULL on failure (and records the
 * error); size 0 gives NULL without error. */
void *moe_cuda_malloc(size_t bytes);
void moe_cuda_free(void *device);
/* Synchronous copies; return 0 or an error code. */
int32_t moe_cuda_copy_to_device(void *device, const void *host, size_t bytes);
int32_t moe_cuda_copy_to_host(void *host, const void *device, size_t bytes);
/* Waits for all work of the device; returns 0 or an error code. */
int32_t moe_cuda_synchronize(void);

/* The calling thread's first error since the last call, then cleared. */
int32_t moe_cuda_take_error(void);
/* The same error, left pending. */
int32_t moe_cuda_peek_error(void);
/* A message for a code of this runtime or of the driver. */
const char *moe_cuda_error_string(int32_t code);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_MOE_CUDA_H */
