//===- DeviceCode.h - The tools' names for embedded GPU code ----*- C++ -*-===//
//
// moe-compile (`--emit`, `--device-code`), moe-run and moe-bench
// (`--device-code`) name the form of the device code the same way; this
// maps the names to the formats of MLIR's gpu-module-to-binary.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_COMMON_DEVICECODE_H
#define MOE_TOOLS_COMMON_DEVICECODE_H

#include "llvm/ADT/StringRef.h"

#include <optional>

namespace moe_tools {

/// The gpu-module-to-binary format of device code `name`: fatbin (cubin for
/// the chip and PTX for later ones), cubin, or ptx (compiled by the driver
/// as the module loads; what the PTX emulator runs); nullopt for any other
/// name.
inline std::optional<llvm::StringRef> parseDeviceCode(llvm::StringRef name) {
  if (name == "fatbin")
    return llvm::StringRef("fatbin");
  if (name == "cubin")
    return llvm::StringRef("bin");
  if (name == "ptx")
    return llvm::StringRef("isa");
  return std::nullopt;
}

} // namespace moe_tools

#endif // MOE_TOOLS_COMMON_DEVICECODE_H
