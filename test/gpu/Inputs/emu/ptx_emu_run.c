/* Loads a PTX file with a CUDA driver library (the PTX emulator in the
 * tests), launches one kernel and prints its status and buffers:
 *
 *   ptx_emu_run DRIVER.so FILE.ptx KERNEL GRID BLOCK ARG...
 *
 * GRID and BLOCK are x-dimensions (y = z = 1). Each ARG is `f32:N` (a
 * device buffer of N floats holding 0, 1, ..., N-1, passed as a pointer;
 * printed after the launch), `f32:N+O` (the same, the pointer offset by O
 * bytes) or `u32:V` / `u64:V` (a scalar). Exit status 0 when the launch
 * succeeded, 1 when it failed (the driver's code and message printed). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long devptr;
typedef int (*init_fn)(unsigned);
typedef int (*load_fn)(void **, const void *);
typedef int (*get_fn)(void **, void *, const char *);
typedef int (*launch_fn)(void *, unsigned, unsigned, unsigned, unsigned,
                         unsigned, unsigned, unsigned, void *, void **,
                         void **);
typedef int (*alloc_fn)(devptr *, size_t);
typedef int (*htod_fn)(devptr, const void *, size_t);
typedef int (*dtoh_fn)(void *, devptr, size_t);
typedef int (*error_fn)(int, const char **);
typedef int (*free_fn)(devptr);
typedef int (*unload_fn)(void *);

static void *sym(void *lib, const char *name) {
  void *p = dlsym(lib, name);
  if (!p) {
    fprintf(stderr, "missing %s\n", name);
    exit(2);
  }
  return p;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = calloc((size_t)n + 1, 1);
  if (fread(text, 1, (size_t)n, f) != (size_t)n)
    exit(2);
  fclose(f);
  return text;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: ptx_emu_run DRIVER.so FILE.ptx KERNEL GRID "
                    "BLOCK ARG...\n");
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) {
    fprintf(stderr, "%s\n", dlerror());
    return 2;
  }
  init_fn cuInit = (init_fn)sym(lib, "cuInit");
  load_fn cuModuleLoadData = (load_fn)sym(lib, "cuModuleLoadData");
  get_fn cuModuleGetFunction = (get_fn)sym(lib, "cuModuleGetFunction");
  launch_fn cuLaunchKernel = (launch_fn)sym(lib, "cuLaunchKernel");
  alloc_fn cuMemAlloc = (alloc_fn)sym(lib, "cuMemAlloc_v2");
  htod_fn cuMemcpyHtoD = (htod_fn)sym(lib, "cuMemcpyHtoD_v2");
  dtoh_fn cuMemcpyDtoH = (dtoh_fn)sym(lib, "cuMemcpyDtoH_v2");
  error_fn cuGetErrorString = (error_fn)sym(lib, "cuGetErrorString");
  free_fn cuMemFree = (free_fn)sym(lib, "cuMemFree_v2");
  unload_fn cuModuleUnload = (unload_fn)sym(lib, "cuModuleUnload");
  cuInit(0);

  void *module = NULL, *kernel = NULL;
  char *text = slurp(argv[2]);
  int r = cuModuleLoadData(&module, text);
  free(text);
  if (r == 0)
    r = cuModuleGetFunction(&kernel, module, argv[3]);
  enum { kMaxArgs = 16 };
  int nargs = argc - 6;
  if (nargs > kMaxArgs)
    return 2;
  uint64_t values[kMaxArgs];
  void *params[kMaxArgs];
  devptr buffers[kMaxArgs] = {0};
  long counts[kMaxArgs] = {0};
  for (int i = 0; r == 0 && i < nargs; ++i) {
    const char *a = argv[6 + i];
    if (strncmp(a, "f32:", 4) == 0) {
      char *end;
      counts[i] = strtol(a + 4, &end, 10);
      long offset = *end == '+' ? strtol(end + 1, NULL, 10) : 0;
      float *host = malloc((size_t)counts[i] * sizeof(float));
      for (long j = 0; j < counts[i]; ++j)
        host[j] = (float)j;
      r = cuMemAlloc(&buffers[i], (size_t)counts[i] * sizeof(float));
      if (r == 0)
        r = cuMemcpyHtoD(buffers[i], host, (size_t)counts[i] * sizeof(float));
      free(host);
      values[i] = buffers[i] + (uint64_t)offset;
    } else if (strncmp(a, "u32:", 4) == 0 || strncmp(a, "u64:", 4) == 0) {
      values[i] = strtoull(a + 4, NULL, 0);
    } else {
      fprintf(stderr, "bad argument %s\n", a);
      return 2;
    }
    params[i] = &values[i]; /* little-endian: a u32 reads the low half */
  }
  if (r == 0)
    r = cuLaunchKernel(kernel, (unsigned)atoi(argv[4]), 1, 1,
                       (unsigned)atoi(argv[5]), 1, 1, 0, NULL, params, NULL);
  const char *message = "?";
  cuGetErrorString(r, &message);
  printf("status %d: %s\n", r, message);
  for (int i = 0; r == 0 && i < nargs; ++i) {
    if (!counts[i])
      continue;
    float *host = malloc((size_t)counts[i] * sizeof(float));
    if (cuMemcpyDtoH(host, buffers[i], (size_t)counts[i] * sizeof(float)))
      return 1;
    printf("arg %d:", i);
    for (long j = 0; j < counts[i]; ++j)
      printf(" %g", host[j]);
    printf("\n");
    free(host);
  }
  for (int i = 0; i < nargs; ++i)
    if (buffers[i])
      cuMemFree(buffers[i]);
  if (module)
    cuModuleUnload(module);
  return r != 0;
}
