/* Calls out_of_bounds.mlir's pick() on a 4-element heap buffer at the
 * index given on the command line. */
#include "oob.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc != 2)
    return 2;
  float *data = malloc(4 * sizeof(float));
  for (int i = 0; i < 4; ++i)
    data[i] = 10.0f + (float)i;
  moe_memref_float_1d values = {data, data, 0, {4}, {1}};
  float v = _mlir_ciface_pick(&values, atoi(argv[1]));
  printf("pick: %g\n", v);
  free(data);
  return 0;
}
