//===- SafeTensorsTest.cpp - the safetensors reader on good and bad files -===//

#include "moe/Frontend/SafeTensors.h"

#include "llvm/Support/Endian.h"

#include "gtest/gtest.h"

#include <cstring>

using namespace mlir::moe::frontend;

namespace {

/// An in-memory safetensors image: length, header, data.
std::unique_ptr<llvm::MemoryBuffer>
makeImage(const std::string &header, const std::vector<uint8_t> &data,
          std::optional<uint64_t> claimedHeaderLength = std::nullopt) {
  std::string bytes(8, '\0');
  llvm::support::endian::write64le(
      bytes.data(), claimedHeaderLength.value_or(header.size()));
  bytes += header;
  bytes.append(data.begin(), data.end());
  return llvm::MemoryBuffer::getMemBufferCopy(bytes, "test.safetensors");
}

/// The error message of opening `image`, or "" if it opened.
std::string openError(std::unique_ptr<llvm::MemoryBuffer> image) {
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::fromBuffer(std::move(image));
  if (file)
    return "";
  return llvm::toString(file.takeError());
}

std::vector<uint8_t> floatBytes(std::vector<float> values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

TEST(SafeTensors, ReadsAGoldenFile) {
  llvm::Expected<SafeTensorsFile> file = SafeTensorsFile::open(
      MOE_SOURCE_DIR "/testdata/golden/mixtral_t1/io.safetensors");
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  const TensorView *input = file->lookup("layers.0.input");
  ASSERT_NE(input, nullptr);
  EXPECT_EQ(input->dtype, DType::F32);
  EXPECT_EQ(input->shape, (std::vector<int64_t>{1, 64}));
  const TensorView *indices = file->lookup("layers.0.topk_indices");
  ASSERT_NE(indices, nullptr);
  llvm::Expected<std::vector<int64_t>> values = indices->toI64();
  ASSERT_TRUE(static_cast<bool>(values));
  ASSERT_EQ(values->size(), 2u);
  for (int64_t expert : *values) {
    EXPECT_GE(expert, 0);
    EXPECT_LT(expert, 8);
  }
  EXPECT_NE((*values)[0], (*values)[1]);
  EXPECT_EQ(file->getMetadata().lookup("expert"), "silu-glu");
  EXPECT_EQ(file->lookup("layers.0.missing"), nullptr);
  // Tensors come back in data order.
  EXPECT_EQ(file->getTensors().front().name, "layers.0.input");
}

TEST(SafeTensors, ReadsValuesInEveryFloatDType) {
  // 1.0, -2.5, 65504 (largest half), 2^-24 (smallest half subnormal).
  std::vector<uint8_t> data = floatBytes({1.0f, -2.5f});
  for (uint16_t half : {0x3c00, 0xc100, 0x7bff, 0x0001})
    data.insert(data.end(), {uint8_t(half & 0xff), uint8_t(half >> 8)});
  for (uint16_t bf16 : {0x3f80, 0xc020})
    data.insert(data.end(), {uint8_t(bf16 & 0xff), uint8_t(bf16 >> 8)});
  std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("h":{"dtype":"F16","shape":[2,2],"data_offsets":[8,16]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}})";
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::fromBuffer(makeImage(header, data));
  ASSERT_TRUE(static_cast<bool>(file)) << llvm::toString(file.takeError());
  EXPECT_EQ(*file->lookup("a")->toF32(), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(*file->lookup("h")->toF32(),
            (std::vector<float>{1.0f, -2.5f, 65504.0f, 5.9604645e-8f}));
  EXPECT_EQ(*file->lookup("b")->toF32(), (std::vector<float>{1.0f, -2.5f}));
  llvm::Expected<std::vector<int64_t>> notInts = file->lookup("a")->toI64();
  ASSERT_FALSE(static_cast<bool>(notInts));
  EXPECT_NE(llvm::toString(notInts.takeError()).find("expected an integer"),
            std::string::npos);
}

struct BadFile {
  const char *what;
  std::string header;
  size_t dataBytes;
  std::optional<uint64_t> claimedHeaderLength;
  const char *expected;
};

class SafeTensorsRejects : public ::testing::TestWithParam<BadFile> {};

TEST_P(SafeTensorsRejects, WithALocatedMessage) {
  const BadFile &bad = GetParam();
  std::string message = openError(makeImage(
      bad.header, std::vector<uint8_t>(bad.dataBytes), bad.claimedHeaderLength));
  EXPECT_NE(message.find("test.safetensors: "), std::string::npos) << message;
  EXPECT_NE(message.find(bad.expected), std::string::npos)
      << bad.what << ": " << message;
}

const std::string kOne = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

INSTANTIATE_TEST_SUITE_P(
    Corrupt, SafeTensorsRejects,
    ::testing::Values(
        BadFile{"header length past the end", kOne, 8, 4096,
                "header length 4096 runs past the end of the file"},
        BadFile{"bad JSON", R"({"t": {"dtype": )", 0, std::nullopt,
                "header is not valid JSON"},
        BadFile{"not an object", "[1, 2]", 0, std::nullopt,
                "header is not a JSON object"},
        BadFile{"unknown dtype",
                R"({"t":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", 1,
                std::nullopt, "tensor 't': unknown dtype 'Q4'"},
        BadFile{"negative dim",
                R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                8, std::nullopt, "shape entries must be non-negative"},
        BadFile{"offsets past the data", kOne, 4, std::nullopt,
                "data_offsets [0, 8] are not a range inside the 4-byte data "
                "section"},
        BadFile{"reversed offsets",
                R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8,
                std::nullopt, "are not a range"},
        BadFile{"size mismatch",
                R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8,
                std::nullopt, "shape [3] of F32 needs 12 bytes, data_offsets give 8"},
        BadFile{"overlap",
                R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                12, std::nullopt, "tensors 'a' and 'b' overlap"},
        BadFile{"huge shape",
                R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],)"
                R"("data_offsets":[0,8]}})",
                8, std::nullopt, "has too many elements"},
        BadFile{"missing offsets", R"({"t":{"dtype":"F32","shape":[2]}})", 8,
                std::nullopt, "'data_offsets' must be an array [begin, end]"},
        BadFile{"bad metadata", R"({"__metadata__":{"k":1}})", 0,
                std::nullopt, "__metadata__ entry 'k' is not a string"}));

TEST(SafeTensors, RejectsAFileShorterThanItsLengthField) {
  std::string message = openError(
      llvm::MemoryBuffer::getMemBufferCopy("abc", "test.safetensors"));
  EXPECT_NE(message.find("file is 3 bytes, shorter than the 8-byte header"),
            std::string::npos)
      << message;
}

TEST(SafeTensors, ReportsAMissingFile) {
  llvm::Expected<SafeTensorsFile> file =
      SafeTensorsFile::open("/nonexistent/model.safetensors");
  ASSERT_FALSE(static_cast<bool>(file));
  EXPECT_NE(llvm::toString(file.takeError())
                .find("/nonexistent/model.safetensors: cannot open"),
            std::string::npos);
}

} // namespace
