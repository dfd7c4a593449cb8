//===- SafeTensors.cpp - validated, memory-mapped safetensors reader ------===//

#include "moe/Frontend/SafeTensors.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

using namespace llvm;
using namespace mlir::moe::frontend;

size_t mlir::moe::frontend::getDTypeSize(DType dtype) {
  switch (dtype) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
  case DType::I16:
    return 2;
  case DType::I8:
  case DType::U8:
  case DType::Bool:
    return 1;
  }
  llvm_unreachable("unknown dtype");
}

StringRef mlir::moe::frontend::getDTypeName(DType dtype) {
  switch (dtype) {
  case DType::F32: return "F32";
  case DType::F16: return "F16";
  case DType::BF16: return "BF16";
  case DType::F64: return "F64";
  case DType::I64: return "I64";
  case DType::I32: return "I32";
  case DType::I16: return "I16";
  case DType::I8: return "I8";
  case DType::U8: return "U8";
  case DType::Bool: return "BOOL";
  }
  llvm_unreachable("unknown dtype");
}

static std::optional<DType> parseDType(StringRef name) {
  return StringSwitch<std::optional<DType>>(name)
      .Case("F32", DType::F32)
      .Case("F16", DType::F16)
      .Case("BF16", DType::BF16)
      .Case("F64", DType::F64)
      .Case("I64", DType::I64)
      .Case("I32", DType::I32)
      .Case("I16", DType::I16)
      .Case("I8", DType::I8)
      .Case("U8", DType::U8)
      .Case("BOOL", DType::Bool)
      .Default(std::nullopt);
}

static Error fail(StringRef file, const Twine &message) {
  return createStringError(inconvertibleErrorCode(), file + ": " + message);
}

static std::string shapeToString(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (auto [i, dim] : llvm::enumerate(shape))
    text += (i ? ", " : "") + std::to_string(dim);
  return text + "]";
}

int64_t TensorView::getNumElements() const {
  int64_t count = 1;
  for (int64_t dim : shape)
    count *= dim;
  return count;
}

/// IEEE binary16 -> binary32, exact (every half is a float).
static float halfToFloat(uint16_t half) {
  uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  uint32_t exponent = (half >> 10) & 0x1fu;
  uint32_t mantissa = half & 0x3ffu;
  if (exponent == 0) {
    float value = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -value : value;
  }
  uint32_t bits = exponent == 31
                      ? sign | 0x7f800000u | (mantissa << 13)
                      : sign | ((exponent + 112) << 23) | (mantissa << 13);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

static float bf16ToFloat(uint16_t bf16) {
  uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

static Error wrongDType(const TensorView &tensor, StringRef expected) {
  return createStringError(inconvertibleErrorCode(),
                           "tensor '" + tensor.name + "' has dtype " +
                               getDTypeName(tensor.dtype).str() +
                               ", expected " + expected.str());
}

Expected<std::vector<float>> TensorView::toF32() const {
  using namespace llvm::support;
  int64_t count = getNumElements();
  std::vector<float> values(count);
  const uint8_t *data = bytes.data();
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
    case DType::F32: {
      uint32_t bits = endian::read32le(data + 4 * i);
      std::memcpy(&values[i], &bits, 4);
      break;
    }
    case DType::F64: {
      uint64_t bits = endian::read64le(data + 8 * i);
      double value;
      std::memcpy(&value, &bits, 8);
      values[i] = static_cast<float>(value);
      break;
    }
    case DType::F16:
      values[i] = halfToFloat(endian::read16le(data + 2 * i));
      break;
    case DType::BF16:
      values[i] = bf16ToFloat(endian::read16le(data + 2 * i));
      break;
    default:
      return wrongDType(*this, "a float dtype (F32, F16, BF16 or F64)");
    }
  }
  return values;
}

Expected<std::vector<int64_t>> TensorView::toI64() const {
  using namespace llvm::support;
  int64_t count = getNumElements();
  std::vector<int64_t> values(count);
  const uint8_t *data = bytes.data();
  for (int64_t i = 0; i < count; ++i) {
    switch (dtype) {
    case DType::I64:
      values[i] = static_cast<int64_t>(endian::read64le(data + 8 * i));
      break;
    case DType::I32:
      values[i] = static_cast<int32_t>(endian::read32le(data + 4 * i));
      break;
    case DType::I16:
      values[i] = static_cast<int16_t>(endian::read16le(data + 2 * i));
      break;
    case DType::I8:
      values[i] = static_cast<int8_t>(data[i]);
      break;
    case DType::U8:
      values[i] = data[i];
      break;
    default:
      return wrongDType(*this, "an integer dtype");
    }
  }
  return values;
}

Expected<SafeTensorsFile> SafeTensorsFile::open(StringRef path) {
  // Large files are mapped, not read: MemoryBuffer mmaps them when no null
  // terminator is required.
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer = MemoryBuffer::getFile(
      path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  if (!buffer)
    return fail(path, "cannot open: " + buffer.getError().message());
  return fromBuffer(std::move(*buffer));
}

Expected<SafeTensorsFile>
SafeTensorsFile::fromBuffer(std::unique_ptr<MemoryBuffer> buffer) {
  StringRef file = buffer->getBufferIdentifier();
  StringRef contents = buffer->getBuffer();
  if (contents.size() < 8)
    return fail(file, "file is " + Twine(contents.size()) +
                          " bytes, shorter than the 8-byte header length");
  uint64_t headerLength = support::endian::read64le(contents.data());
  if (headerLength > contents.size() - 8)
    return fail(file, "header length " + Twine(headerLength) +
                          " runs past the end of the file (" +
                          Twine(contents.size()) + " bytes)");
  StringRef header = contents.substr(8, headerLength);
  Expected<json::Value> parsed = json::parse(header);
  if (!parsed)
    return fail(file, "header is not valid JSON: " +
                          toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return fail(file, "header is not a JSON object");

  uint64_t dataStart = 8 + headerLength;
  uint64_t dataSize = contents.size() - dataStart;
  const uint8_t *data =
      reinterpret_cast<const uint8_t *>(contents.data()) + dataStart;

  SafeTensorsFile result;
  struct Range {
    uint64_t begin, end;
  };
  std::vector<Range> ranges;
  for (const auto &[key, value] : *root) {
    std::string name = key.str();
    if (name == "__metadata__") {
      const json::Object *entries = value.getAsObject();
      if (!entries)
        return fail(file, "__metadata__ is not a JSON object");
      for (const auto &[metaKey, metaValue] : *entries) {
        std::optional<StringRef> text = metaValue.getAsString();
        if (!text)
          return fail(file, "__metadata__ entry '" + metaKey.str() +
                                "' is not a string");
        result.metadata[metaKey.str()] = text->str();
      }
      continue;
    }
    auto tensorError = [&](const Twine &message) {
      return fail(file, "tensor '" + name + "': " + message);
    };
    const json::Object *entry = value.getAsObject();
    if (!entry)
      return tensorError("entry is not a JSON object");

    std::optional<StringRef> dtypeName = entry->getString("dtype");
    if (!dtypeName)
      return tensorError("missing string field 'dtype'");
    std::optional<DType> dtype = parseDType(*dtypeName);
    if (!dtype)
      return tensorError("unknown dtype '" + *dtypeName + "'");

    const json::Array *shapeArray = entry->getArray("shape");
    if (!shapeArray)
      return tensorError("missing array field 'shape'");
    std::vector<int64_t> shape;
    uint64_t numElements = 1;
    for (const json::Value &dim : *shapeArray) {
      std::optional<int64_t> size = dim.getAsInteger();
      if (!size || *size < 0)
        return tensorError("shape entries must be non-negative integers");
      shape.push_back(*size);
      if (*size != 0 &&
          numElements > std::numeric_limits<uint64_t>::max() / 16 / *size)
        return tensorError("shape " + shapeToString(shape) +
                           " has too many elements");
      numElements *= static_cast<uint64_t>(*size);
    }

    const json::Array *offsets = entry->getArray("data_offsets");
    if (!offsets || offsets->size() != 2)
      return tensorError("'data_offsets' must be an array [begin, end]");
    std::optional<int64_t> begin = (*offsets)[0].getAsInteger();
    std::optional<int64_t> end = (*offsets)[1].getAsInteger();
    if (!begin || !end || *begin < 0 || *end < *begin ||
        static_cast<uint64_t>(*end) > dataSize)
      return tensorError("data_offsets [" +
                         Twine(begin.value_or(-1)) + ", " +
                         Twine(end.value_or(-1)) +
                         "] are not a range inside the " + Twine(dataSize) +
                         "-byte data section");
    uint64_t expectedBytes = numElements * getDTypeSize(*dtype);
    uint64_t bytes = static_cast<uint64_t>(*end - *begin);
    if (bytes != expectedBytes)
      return tensorError("shape " + shapeToString(shape) + " of " +
                         getDTypeName(*dtype) + " needs " +
                         Twine(expectedBytes) + " bytes, data_offsets give " +
                         Twine(bytes));
    result.tensors.push_back(
        TensorView{name, *dtype, std::move(shape),
                   ArrayRef<uint8_t>(data + *begin, bytes)});
    ranges.push_back({static_cast<uint64_t>(*begin),
                      static_cast<uint64_t>(*end)});
  }

  // Order by offset (JSON objects are unordered) and reject overlaps.
  std::vector<size_t> order(result.tensors.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  llvm::sort(order, [&](size_t a, size_t b) {
    if (ranges[a].begin != ranges[b].begin)
      return ranges[a].begin < ranges[b].begin;
    return result.tensors[a].name < result.tensors[b].name;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const Range &prev = ranges[order[i - 1]], &next = ranges[order[i]];
    if (next.begin < prev.end)
      return fail(file, "tensors '" + result.tensors[order[i - 1]].name +
                            "' and '" + result.tensors[order[i]].name +
                            "' overlap");
  }
  std::vector<TensorView> sorted;
  for (size_t i : order)
    sorted.push_back(std::move(result.tensors[i]));
  result.tensors = std::move(sorted);
  for (auto [i, tensor] : llvm::enumerate(result.tensors))
    result.index[tensor.name] = i;
  result.buffer = std::move(buffer);
  return result;
}

const TensorView *SafeTensorsFile::lookup(StringRef name) const {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &tensors[it->second];
}
