//===- SafeTensors.h - validated, memory-mapped safetensors reader -*- C++ -*-===//
//
// Reads the safetensors format (an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw
// data). The file is memory-mapped, not copied; every field is validated
// before a tensor is handed out, so a truncated or corrupt file gives an
// error naming the file and the tensor, never an out-of-bounds read.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_FRONTEND_SAFETENSORS_H
#define MOE_FRONTEND_SAFETENSORS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mlir::moe::frontend {

/// Element types of the format that the project reads.
enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

/// Size in bytes of one element.
size_t getDTypeSize(DType dtype);
llvm::StringRef getDTypeName(DType dtype);

/// One tensor of a file: a view into the mapped bytes.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  llvm::ArrayRef<uint8_t> bytes;

  int64_t getNumElements() const;
  /// Converts float (F32/F16/BF16/F64) elements to f32.
  llvm::Expected<std::vector<float>> toF32() const;
  /// Converts integer (I64/I32/I16/I8/U8) elements to i64.
  llvm::Expected<std::vector<int64_t>> toI64() const;
};

class SafeTensorsFile {
public:
  /// Maps and validates `path`.
  static llvm::Expected<SafeTensorsFile> open(llvm::StringRef path);
  /// Validates an in-memory image; `name` is used in messages.
  static llvm::Expected<SafeTensorsFile>
  fromBuffer(std::unique_ptr<llvm::MemoryBuffer> buffer);

  /// The tensor called `name`, or null.
  const TensorView *lookup(llvm::StringRef name) const;
  /// All tensors, in increasing data offset.
  llvm::ArrayRef<TensorView> getTensors() const { return tensors; }
  /// The optional `__metadata__` string map.
  const llvm::StringMap<std::string> &getMetadata() const { return metadata; }
  llvm::StringRef getPath() const { return buffer->getBufferIdentifier(); }

private:
  std::unique_ptr<llvm::MemoryBuffer> buffer;
  std::vector<TensorView> tensors;
  llvm::StringMap<size_t> index;
  llvm::StringMap<std::string> metadata;
};

} // namespace mlir::moe::frontend

#endif // MOE_FRONTEND_SAFETENSORS_H
