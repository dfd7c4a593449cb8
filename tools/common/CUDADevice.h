//===- CUDADevice.h - The GPU side of moe-run and moe-bench ----*- C++ -*-===//
//
// moe-run and moe-bench call layers compiled by lowerToLLVMForNVPTX, whose
// entries take device pointers. This holds what both need: choosing the
// chip for the machine's device, and device copies of host arrays. Each tool
// defines toolFail (print "TOOL: error: MESSAGE", exit).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_CUDADEVICE_H
#define MOE_TOOLS_COMMON_CUDADEVICE_H

#include "DeviceCode.h"
#include "moe/Compiler/Compiler.h"
#include "moe/Compiler/LayerModule.h"
#include "moe/Runtime/moe_cuda.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/CommandLine.h"

#include <algorithm>
#include <string>
#include <vector>

namespace moe_tools {

/// Prints `message` as the tool's error and exits; defined by each tool.
[[noreturn]] void toolFail(const llvm::Twine &message);

/// Fails with `what` and the CUDA runtime's pending error.
[[noreturn]] inline void failCUDA(const llvm::Twine &what) {
  toolFail(what + ": " + moe_cuda_error_string(moe_cuda_take_error()));
}

/// Fails with the runtime's reason when a layer entry returned
/// StatusDeviceError (its GPU work failed); returns `status` otherwise.
inline int32_t checkDeviceStatus(int32_t status, const llvm::Twine &what) {
  if (status == mlir::moe::compiler::StatusDeviceError)
    failCUDA(what + " failed on the GPU");
  return status;
}

/// Registers the tools' `--chip` option (the GPU architecture for
/// --device cuda) in `category`; call before parsing the command line.
inline llvm::cl::opt<std::string> &
addChipOption(llvm::cl::OptionCategory &category) {
  return *new llvm::cl::opt<std::string>(
      "chip",
      llvm::cl::desc("GPU architecture with --device cuda: sm_80 or sm_90 "
                     "(default: the device's)"),
      llvm::cl::cat(category));
}

/// Registers the tools' `--mma` option (tensor-core tiles for bf16 expert
/// weights with --device cuda) in `category`.
inline llvm::cl::opt<bool> &addMmaOption(llvm::cl::OptionCategory &category) {
  return *new llvm::cl::opt<bool>(
      "mma",
      llvm::cl::desc("With --device cuda and --dtype bf16: multiply the "
                     "expert tiles on tensor cores (mma.sync, tokens "
                     "rounded to bf16)"),
      llvm::cl::init(false), llvm::cl::cat(category));
}

/// Registers the tools' `--device-code` option (the form of the device code
/// the JIT embeds with --device cuda) in `category`.
inline llvm::cl::opt<std::string> &
addDeviceCodeOption(llvm::cl::OptionCategory &category) {
  return *new llvm::cl::opt<std::string>(
      "device-code",
      llvm::cl::desc("With --device cuda: fatbin (default), cubin, or ptx "
                     "(compiled by the driver as the module loads; what the "
                     "PTX emulator runs)"),
      llvm::cl::init("fatbin"), llvm::cl::cat(category));
}

/// The gpu-module-to-binary format for `--device-code` (parseDeviceCode);
/// fails on other values.
inline llvm::StringRef deviceCodeFormat(llvm::StringRef deviceCode) {
  if (std::optional<llvm::StringRef> format = parseDeviceCode(deviceCode))
    return *format;
  toolFail("--device-code must be fatbin, cubin or ptx, not '" + deviceCode +
           "'");
}

/// Checks `--chip` (empty, sm_80 or sm_90) without touching the driver.
inline void checkChipOption(llvm::StringRef chip) {
  if (!chip.empty() && chip != "sm_80" && chip != "sm_90")
    toolFail("--chip must be sm_80 or sm_90, not '" + chip + "'");
}

/// The chip to compile for CUDA device 0: `chip` when given, else the
/// device's (sm_90 from compute capability 9.0 on, sm_80 below). Fails when
/// there is no device or it is older than sm_80.
inline std::string selectCUDAChip(llvm::StringRef chip) {
  checkChipOption(chip);
  if (moe_cuda_device_count() == 0) {
    moe_cuda_malloc(1); // makes the runtime record why
    failCUDA("--device cuda: no CUDA device");
  }
  int capability = 0;
  if (int32_t error = moe_cuda_device_info(nullptr, 0, &capability))
    toolFail(llvm::Twine("--device cuda: ") + moe_cuda_error_string(error));
  if (capability < 80)
    toolFail("--device cuda: the device is sm_" + llvm::Twine(capability) +
             "; sm_80 or later is needed");
  if (!chip.empty())
    return chip.str();
  return capability >= 90 ? "sm_90" : "sm_80";
}

/// A device buffer holding a copy of `bytes` at `host` (uninitialized when
/// `host` is null), freed with the object.
class DeviceBuffer {
public:
  DeviceBuffer(const void *host, size_t bytes) : bytes(bytes) {
    data = moe_cuda_malloc(bytes);
    if (bytes && !data)
      failCUDA("cannot allocate " + llvm::Twine(bytes) + " bytes on the GPU");
    if (host && moe_cuda_copy_to_device(data, host, bytes))
      failCUDA("copy to the GPU failed");
  }
  DeviceBuffer(DeviceBuffer &&other) noexcept
      : data(other.data), bytes(other.bytes) {
    other.data = nullptr;
  }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() { moe_cuda_free(data); }

  void copyTo(void *host) const {
    if (moe_cuda_copy_to_host(host, data, bytes))
      failCUDA("copy from the GPU failed");
  }
  void *get() const { return data; }
  size_t size() const { return bytes; }

private:
  void *data = nullptr;
  size_t bytes = 0;
};

/// Device copies of a layer's weights, in the ABI's order; `table` gets
/// their device pointers (the entries' weight table).
inline std::vector<DeviceBuffer>
copyWeightsToDevice(const mlir::moe::compiler::LayerABI &abi,
                    const mlir::moe::frontend::LayerWeights &weights,
                    std::vector<const void *> &table) {
  std::vector<DeviceBuffer> buffers;
  table.clear();
  for (const mlir::moe::compiler::EntryArg &field : abi.weights) {
    auto [data, count] = mlir::moe::compiler::getWeightData(weights, field);
    buffers.emplace_back(
        data, count * mlir::moe::compiler::elementBytes(field.ctype));
    table.push_back(buffers.back().get());
  }
  return buffers;
}

/// `batch` with its arrays (tokens, token ids, group offsets) copied to the
/// device; `keep` owns the copies.
inline mlir::moe::compiler::MoEBatch
copyBatchToDevice(const mlir::moe::compiler::MoEBatch &batch, int64_t hidden,
                  std::vector<DeviceBuffer> &keep) {
  mlir::moe::compiler::MoEBatch d = batch;
  size_t tokens = std::max<int64_t>(batch.num_tokens, 0);
  auto copy = [&](const void *p, size_t bytes) -> const void * {
    if (!p)
      return nullptr;
    keep.emplace_back(p, bytes);
    return keep.back().get();
  };
  d.x = static_cast<const float *>(
      copy(batch.x, tokens * hidden * sizeof(float)));
  d.token_ids = static_cast<const int64_t *>(
      copy(batch.token_ids, tokens * sizeof(int64_t)));
  d.group_offsets = static_cast<const int32_t *>(
      copy(batch.group_offsets,
           std::max<int64_t>(batch.num_groups + 1, 0) * sizeof(int32_t)));
  return d;
}

/// Calls a route entry on device weights (`table`) and a device batch, and
/// copies its outputs into the host buffers `routing`.
inline int32_t routeOnDevice(const mlir::moe::compiler::LayerABI &abi,
                             mlir::moe::compiler::RouteFn route,
                             const void *const *table,
                             const mlir::moe::compiler::MoEBatch &deviceBatch,
                             mlir::moe::compiler::RoutingBuffers &routing) {
  std::vector<void *> host = routing.pointers(abi);
  std::vector<DeviceBuffer> outs;
  std::vector<void *> pointers;
  for (const mlir::moe::compiler::EntryArg &field : abi.routing) {
    outs.emplace_back(
        nullptr,
        mlir::moe::compiler::numElements(field, deviceBatch.num_tokens) * 4);
    pointers.push_back(outs.back().get());
  }
  int32_t status = checkDeviceStatus(
      route(table, &deviceBatch, pointers.data()), abi.symbol + " (route)");
  if (status >= 0)
    for (auto [buffer, to] : llvm::zip(outs, host))
      buffer.copyTo(to);
  return status;
}

} // namespace moe_tools

#endif // MOE_TOOLS_COMMON_CUDADEVICE_H
