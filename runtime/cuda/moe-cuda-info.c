/* moe-cuda-info: what libmoe_cuda_runtime sees of this machine's GPU.
 *
 * Prints the device the runtime uses (name, compute capability), or why
 * there is none. Exit status 0 with a device, 1 without: the test suite
 * uses it to decide whether GPU execution tests can run. */
#include "moe/Runtime/moe_cuda.h"

#include <stdio.h>

int main(void) {
  int count = moe_cuda_device_count();
  if (count == 0) {
    /* The first GPU operation reports why. */
    moe_cuda_malloc(1);
    int32_t error = moe_cuda_take_error();
    printf("no CUDA device: %s\n",
           moe_cuda_error_string(error ? error : MOE_CUDA_ERROR_NO_DEVICE));
    return 1;
  }
  char name[256] = {0};
  int capability = 0;
  int32_t error = moe_cuda_device_info(name, sizeof name, &capability);
  if (error) {
    printf("CUDA device query failed: %s\n", moe_cuda_error_string(error));
    return 1;
  }
  printf("%d CUDA device(s); using %s, sm_%d\n", count, name, capability);
  return 0;
}
