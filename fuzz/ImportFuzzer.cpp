//===- ImportFuzzer.cpp - libFuzzer target: config.json + safetensors -----===//
//
// Input: a little-endian u32 length L, L bytes of config.json, then the
// bytes of model.safetensors. Both are written to a private directory and
// imported; any error is fine, a crash or a sanitizer report is a finding.
//
//===----------------------------------------------------------------------===//

#include "moe/Frontend/ModelImport.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <cstring>
#include <string>

namespace {

std::string directory() {
  static std::string dir = [] {
    llvm::SmallString<128> path;
    if (llvm::sys::fs::createUniqueDirectory("moe-fuzz-import", path))
      abort();
    return std::string(path);
  }();
  return dir;
}

void write(const std::string &path, const uint8_t *data, size_t size) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    abort();
  os.write(reinterpret_cast<const char *>(data), size);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4)
    return 0;
  uint32_t length;
  std::memcpy(&length, data, 4);
  length = std::min<size_t>(length, size - 4);
  std::string dir = directory();
  write(dir + "/config.json", data + 4, length);
  write(dir + "/model.safetensors", data + 4 + length, size - 4 - length);
  auto model = mlir::moe::frontend::importModel(dir);
  if (!model)
    llvm::consumeError(model.takeError());
  return 0;
}
