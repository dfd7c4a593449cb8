/* A minimal safetensors reader for the tests' C programs: enough for a
 * well-formed little-endian file (the project's C++ reader does the full
 * validation). Shared by golden_check.c and ../../gpu/Inputs/
 * golden_check_cuda.c. */
#ifndef MOE_TEST_SAFETENSORS_LITE_H
#define MOE_TEST_SAFETENSORS_LITE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_tensor {
  const unsigned char *data; /* not necessarily 4-byte aligned: copy it */
  size_t bytes;
  int rank;
  long long shape[4];
} st_tensor;

/* The whole file, or NULL. */
static inline unsigned char *st_read(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *file = malloc(*size + 16);
  if (fread(file, 1, *size, f) != *size) {
    free(file);
    file = NULL;
  }
  fclose(f);
  return file;
}

/* Finds tensor `name`; returns 1 and fills `t`, or 0. */
static inline int st_find(const unsigned char *file, size_t size,
                          const char *name, st_tensor *t) {
  unsigned long long header = 0;
  for (int i = 7; i >= 0; --i)
    header = header * 256 + file[i];
  if (header + 8 > size)
    return 0;
  char *json = malloc(header + 1);
  memcpy(json, file + 8, header);
  json[header] = 0;
  char key[256];
  snprintf(key, sizeof key, "\"%s\"", name);
  char *at = strstr(json, key);
  int found = 0;
  if (at) {
    char *shape = strstr(at, "\"shape\"");
    char *offsets = strstr(at, "\"data_offsets\"");
    unsigned long long begin = 0, end = 0;
    if (shape && offsets &&
        sscanf(strchr(offsets, '[') + 1, "%llu , %llu", &begin, &end) == 2 &&
        8 + header + end <= size) {
      t->data = file + 8 + header + begin;
      t->bytes = end - begin;
      t->rank = 0;
      char *p = strchr(shape, '[') + 1;
      while (*p != ']' && t->rank < 4) {
        t->shape[t->rank++] = strtoll(p, &p, 10);
        while (*p == ',' || *p == ' ')
          ++p;
      }
      found = 1;
    }
  }
  free(json);
  return found;
}

#endif /* MOE_TEST_SAFETENSORS_LITE_H */
