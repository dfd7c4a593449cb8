//===- moe-compile.cpp - Ahead-of-time compilation of MoE layers ----------===//
//
//   moe-compile --model DIR -o layers.o --header layers.h [--layer N]
//               [--prefix NAME] [--embed-weights] [--target-cpu CPU]
//   moe-compile --model layer.mlir -o layer.o --header layer.h
//   moe-compile --model DIR --target nvptx --chip sm_90 [--emit obj|ptx|cubin]
//
// Imports the MoE layers of a Hugging Face model and writes one object file
// with a plain C entry per layer plus the header that declares them
// (docs/user-guide.md). With --embed-weights the object also holds the
// weights, returned by NAME_embedded_weights().
//
// Given a .mlir file instead, compiles its public functions on tensors
// through the CPU pipeline and declares their C interface
// (_mlir_ciface_NAME, memrefs passed as descriptor structs).
//
//===----------------------------------------------------------------------===//

#include "../common/DeviceCode.h"
#include "moe/Compiler/Compiler.h"
#include "moe/Frontend/ModelImport.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <cctype>
#include <set>

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::compiler;
using namespace mlir::moe::frontend;
namespace cl = llvm::cl;

static cl::OptionCategory category("moe-compile options");
static cl::opt<std::string> modelDir("model",
                                     cl::desc("Hugging Face model directory, "
                                              "or a .mlir file"),
                                     cl::value_desc("dir|file.mlir"),
                                     cl::Required, cl::cat(category));
static cl::opt<std::string> outputObject("o", cl::desc("Output object file"),
                                         cl::value_desc("file.o"), cl::Required,
                                         cl::cat(category));
static cl::opt<std::string> outputHeader("header", cl::desc("Output C header"),
                                         cl::value_desc("file.h"),
                                         cl::cat(category));
static cl::opt<int64_t> onlyLayer("layer",
                                  cl::desc("Only this model layer index"),
                                  cl::init(-1), cl::cat(category));
static cl::opt<std::string>
    prefix("prefix", cl::desc("Symbol prefix of the entries (default moe)"),
           cl::init("moe"), cl::cat(category));
static cl::opt<bool>
    embedWeights("embed-weights",
                 cl::desc("Store the weights in the object; "
                          "NAME_embedded_weights() returns them"),
                 cl::cat(category));
static cl::opt<bool>
    noOpenMP("no-openmp",
             cl::desc("Run the parallel loops on the calling thread: the "
                      "object then needs no OpenMP runtime"),
             cl::cat(category));
static cl::opt<std::string>
    sanitize("sanitize",
             cl::desc("address: instrument the generated code with "
                      "AddressSanitizer (link the object into a program "
                      "built with -fsanitize=address)"),
             cl::value_desc("address"), cl::cat(category));
static cl::opt<std::string>
    dtype("dtype",
          cl::desc("Expert weight type: f32 (default) or bf16 (the "
                   "NAME_weights fields w1, w2, shared_w1, shared_w2 then "
                   "hold bf16 bits)"),
          cl::init("f32"), cl::cat(category));
static cl::opt<std::string> targetCPU("target-cpu",
                                      cl::desc("native, x86-64-v3, x86-64-v4"),
                                      cl::init("native"), cl::cat(category));
static cl::opt<std::string> &schedule = addScheduleOption(category);
static cl::opt<std::string>
    target("target",
           cl::desc("cpu (default), or nvptx: the layers run as GPU kernels "
                    "launched by the object's host code"),
           cl::init("cpu"), cl::cat(category));
static cl::opt<std::string> chip("chip",
                                 cl::desc("GPU architecture with --target "
                                          "nvptx: sm_80 or sm_90"),
                                 cl::init("sm_90"), cl::cat(category));
static cl::opt<bool>
    mma("mma",
        cl::desc("With --target nvptx and --dtype bf16: multiply the expert "
                 "tiles on tensor cores (mma.sync, tokens rounded to bf16)"),
        cl::init(false), cl::cat(category));
static cl::opt<std::string>
    emitKind("emit",
             cl::desc("obj (default): object file (and --header); with "
                      "--target nvptx also ptx or cubin: the device code "
                      "alone"),
             cl::init("obj"), cl::cat(category));
static cl::opt<std::string> deviceCode(
    "device-code",
    cl::desc("With --target nvptx --emit obj: the device code the object "
             "embeds: fatbin (default: cubin for --chip and PTX for later "
             "chips), cubin, or ptx (compiled by the driver when the module "
             "loads; what the PTX emulator runs)"),
    cl::init("fatbin"), cl::cat(category));

namespace {

[[noreturn]] void fail(const llvm::Twine &message) {
  llvm::errs() << "moe-compile: error: " << message << "\n";
  exit(1);
}

template <typename T> T check(llvm::Expected<T> value) {
  if (!value)
    fail(llvm::toString(value.takeError()));
  return std::move(*value);
}

/// --target nvptx.
bool gpu = false;

CodegenOptions codegenOptions() {
  CodegenOptions options;
  options.targetCPU = targetCPU;
  options.sanitizeAddress = sanitize == "address";
  return options;
}

bool isIdentifier(llvm::StringRef name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0])))
    return false;
  return llvm::all_of(name, [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

/// Adds constant globals holding `w` and `const NAME_weights
/// *NAME_embedded_weights(void)` returning a table of their addresses.
void embedLayerWeights(ModuleOp module, const LayerABI &abi,
                       const LayerWeights &w) {
  MLIRContext *ctx = module.getContext();
  ImplicitLocOpBuilder b(module.getLoc(), ctx);
  b.setInsertionPointToEnd(module.getBody());
  auto ptrType = LLVM::LLVMPointerType::get(ctx);
  SmallVector<std::string> names;
  for (const EntryArg &field : abi.weights) {
    std::string name = abi.symbol + "__weight_" + field.name;
    auto [data, count] = getWeightData(w, field);
    // bf16 weights are stored as their 16-bit patterns.
    Type element = field.ctype == "int32_t"    ? Type(b.getI32Type())
                   : field.ctype == "uint16_t" ? Type(b.getI16Type())
                                               : Type(b.getF32Type());
    auto type = RankedTensorType::get({int64_t(count)}, element);
    Attribute value;
    if (field.ctype == "int32_t")
      value = DenseElementsAttr::get(
          type, ArrayRef<int32_t>(static_cast<const int32_t *>(data), count));
    else if (field.ctype == "uint16_t")
      value = DenseElementsAttr::get(
          type, ArrayRef<int16_t>(static_cast<const int16_t *>(data), count));
    else
      value = DenseElementsAttr::get(
          type, ArrayRef<float>(static_cast<const float *>(data), count));
    Type arrayType = LLVM::LLVMArrayType::get(element, count);
    auto global = LLVM::GlobalOp::create(b, arrayType, /*isConstant=*/true,
                                         LLVM::Linkage::Internal, name, value);
    global.setAlignment(64);
    names.push_back(name);
  }
  // The table of pointers, laid out like NAME_weights.
  auto tableType = LLVM::LLVMArrayType::get(ptrType, names.size());
  std::string tableName = abi.symbol + "__weights";
  auto table =
      LLVM::GlobalOp::create(b, tableType, /*isConstant=*/true,
                             LLVM::Linkage::Internal, tableName, Attribute());
  {
    OpBuilder::InsertionGuard guard(b);
    Block *init = b.createBlock(&table.getInitializerRegion());
    b.setInsertionPointToStart(init);
    Value array = LLVM::UndefOp::create(b, tableType);
    for (auto [i, name] : llvm::enumerate(names)) {
      Value address = LLVM::AddressOfOp::create(b, ptrType, name);
      array = LLVM::InsertValueOp::create(b, array, address,
                                          ArrayRef<int64_t>{int64_t(i)});
    }
    LLVM::ReturnOp::create(b, array);
  }
  auto fnType = LLVM::LLVMFunctionType::get(ptrType, {});
  auto fn =
      LLVM::LLVMFuncOp::create(b, abi.symbol + "_embedded_weights", fnType);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(fn.addEntryBlock(b));
  Value address = LLVM::AddressOfOp::create(b, ptrType, tableName);
  LLVM::ReturnOp::create(b, address);
}

std::string headerGuard(llvm::StringRef path) {
  std::string guard;
  for (char c : llvm::sys::path::filename(path))
    guard += std::isalnum(static_cast<unsigned char>(c))
                 ? char(std::toupper(static_cast<unsigned char>(c)))
                 : '_';
  return guard + "_";
}

/// The C spelling of a scalar element type, or "" when it has none.
std::string cTypeOf(Type type) {
  if (type.isF32())
    return "float";
  if (type.isF64())
    return "double";
  if (type.isF16() || type.isBF16())
    return "uint16_t";
  if (type.isIndex() || type.isInteger(64))
    return "int64_t";
  if (type.isInteger(32))
    return "int32_t";
  if (type.isInteger(16))
    return "int16_t";
  if (type.isInteger(8))
    return "int8_t";
  if (type.isInteger(1))
    return "bool";
  return "";
}

/// Declares the descriptor struct of a ranked buffer once and returns its
/// name: {allocated, aligned, offset, sizes[R], strides[R]}, MLIR's
/// StridedMemRefType layout.
std::string descriptorType(ShapedType type, std::set<std::string> &declared,
                           llvm::raw_ostream &os) {
  std::string element = cTypeOf(type.getElementType());
  std::string name =
      "moe_memref_" + element + "_" + std::to_string(type.getRank()) + "d";
  if (declared.insert(name).second) {
    os << "typedef struct " << name << " {\n  " << element << " *allocated;\n  "
       << element << " *aligned;\n  int64_t offset;\n";
    if (type.getRank() > 0)
      os << "  int64_t sizes[" << type.getRank() << "];\n  int64_t strides["
         << type.getRank() << "];\n";
    os << "} " << name << ";\n\n";
  }
  return name;
}

/// Compiles a .mlir file: its public functions keep their names and get a
/// C interface.
int compileMLIRFile(MLIRContext &context) {
  llvm::SourceMgr sourceMgr;
  std::string error;
  auto file = llvm::MemoryBuffer::getFile(modelDir);
  if (!file)
    fail("cannot read '" + modelDir + "': " + file.getError().message());
  sourceMgr.AddNewSourceBuffer(std::move(*file), llvm::SMLoc());
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;
  if (embedWeights)
    fail("--embed-weights needs a model directory: a .mlir file has no "
         "weights to embed");

  std::string decls;
  llvm::raw_string_ostream os(decls);
  std::set<std::string> declared;
  std::string functions;
  llvm::raw_string_ostream fos(functions);
  for (auto fn : module->getOps<func::FuncOp>()) {
    if (fn.isPrivate() || fn.isExternal())
      continue;
    fn->setAttr("llvm.emit_c_interface", UnitAttr::get(&context));
    auto spell = [&](Type type, bool pointer) -> std::string {
      if (auto shaped = dyn_cast<ShapedType>(type)) {
        if (!shaped.hasRank() || cTypeOf(shaped.getElementType()).empty())
          fail("function '" + fn.getName() + "' has a parameter of type " +
               llvm::formatv("{0}", type).str() + " without a C spelling");
        return descriptorType(shaped, declared, os) + (pointer ? " *" : "");
      }
      std::string scalar = cTypeOf(type);
      if (scalar.empty())
        fail("function '" + fn.getName() + "' has a parameter of type " +
             llvm::formatv("{0}", type).str() + " without a C spelling");
      return scalar + (pointer ? " *" : "");
    };
    FunctionType type = fn.getFunctionType();
    std::string resultType = "void";
    SmallVector<std::string> params;
    if (type.getNumResults() == 1 && isa<ShapedType>(type.getResult(0))) {
      params.push_back(spell(type.getResult(0), true) + "result");
    } else if (type.getNumResults() == 1) {
      resultType = spell(type.getResult(0), false);
    } else if (type.getNumResults() > 1) {
      std::string results = fn.getName().str() + "_results";
      os << "typedef struct " << results << " {\n";
      for (auto [i, r] : llvm::enumerate(type.getResults()))
        os << "  " << spell(r, false) << " r" << i << ";\n";
      os << "} " << results << ";\n\n";
      params.push_back(results + " *results");
    }
    for (auto [i, input] : llvm::enumerate(type.getInputs())) {
      bool shaped = isa<ShapedType>(input);
      params.push_back(spell(input, shaped) + (shaped ? "" : " ") + "arg" +
                       std::to_string(i));
    }
    fos << resultType << " _mlir_ciface_" << fn.getName() << "("
        << llvm::join(params, ", ") << ");\n";
  }

  // Plain malloc: the caller frees returned buffers with free().
  if (llvm::Error error = lowerToLLVM(*module, {}, /*cachingAllocator=*/false,
                                      /*openmp=*/!noOpenMP, targetCPU,
                                      schedule))
    fail(llvm::toString(std::move(error)));
  if (llvm::Error error = emitObjectFile(*module, outputObject,
                                         codegenOptions()))
    fail(llvm::toString(std::move(error)));
  if (outputHeader.empty())
    return 0;
  std::string guard = headerGuard(outputHeader);
  std::error_code ec;
  llvm::ToolOutputFile out(outputHeader, ec, llvm::sys::fs::OF_Text);
  if (ec)
    fail("cannot open '" + outputHeader + "': " + ec.message());
  out.os()
      << "/* Generated by moe-compile from " << modelDir
      << ". Do not edit.\n *\n"
         " * Tensors are passed as memref descriptors (dense row-major:\n"
         " * allocated = aligned = the data, offset 0, strides[i] = the\n"
         " * product of the later sizes). Returned buffers are malloc'ed\n"
         " * by the compiled code; free(result.allocated) releases them. */\n"
      << "#ifndef " << guard << "\n#define " << guard
      << "\n\n#include <stdbool.h>\n#include <stdint.h>\n\n"
         "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
      << decls << functions << "\n#ifdef __cplusplus\n}\n#endif\n\n#endif /* "
      << guard << " */\n";
  out.keep();
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv, "moe-mlir ahead-of-time compiler\n");
  if (!isIdentifier(prefix))
    fail("--prefix '" + prefix + "' is not a C identifier");
  if (target != "cpu" && target != "nvptx")
    fail("--target must be cpu or nvptx, not '" + target + "'");
  gpu = target == "nvptx";
  if (gpu && chip != "sm_80" && chip != "sm_90")
    fail("--chip must be sm_80 or sm_90, not '" + chip + "'");
  if (emitKind != "obj" && emitKind != "ptx" && emitKind != "cubin")
    fail("--emit must be obj, ptx or cubin, not '" + emitKind + "'");
  if (emitKind != "obj" && !gpu)
    fail("--emit " + emitKind + " needs --target nvptx");
  if (!moe_tools::parseDeviceCode(deviceCode))
    fail("--device-code must be fatbin, cubin or ptx, not '" + deviceCode +
         "'");
  if (deviceCode.getNumOccurrences() && (!gpu || emitKind != "obj"))
    fail("--device-code applies to --target nvptx --emit obj only");
  if (gpu && noOpenMP)
    fail("--no-openmp applies to --target cpu only");
  if (mma && !gpu)
    fail("--mma applies to --target nvptx only");
  if (gpu && !schedule.empty())
    fail("--schedule applies to --target cpu only");
  if (!sanitize.empty() && sanitize != "address")
    fail("--sanitize must be address, not '" + sanitize + "'");
  if (gpu && !sanitize.empty())
    fail("--sanitize applies to --target cpu only");

  if (llvm::StringRef(modelDir).ends_with(".mlir")) {
    if (gpu)
      fail("--target nvptx compiles model directories; for a .mlir file run "
           "moe-opt --moe-nvptx-pipeline");
    DialectRegistry registry;
    registerCompilerDialects(registry);
    MLIRContext context(registry);
    return compileMLIRFile(context);
  }

  std::optional<int64_t> layer;
  if (onlyLayer >= 0)
    layer = onlyLayer;
  WeightType weightType;
  if (!parseWeightType(dtype, weightType))
    fail("--dtype must be f32 or bf16, not '" + dtype + "'");
  auto model = importModel(modelDir, layer);
  if (!model)
    fail(llvm::toString(model.takeError()));
  if (model->layers.empty())
    fail("the model in '" + modelDir + "' has no MoE layer");
  setExpertWeights(*model, weightType);

  DialectRegistry registry;
  registerCompilerDialects(registry);
  MLIRContext context(registry);
  std::vector<LayerABI> abis;
  for (const LayerSpec &spec : model->layers)
    abis.push_back(describeLayer(spec, prefix + "_" + spec.name));
  OwningOpRef<ModuleOp> module = buildLayerModule(&context, abis);
  if (gpu) {
    // --emit ptx and cubin name device code as --device-code does.
    llvm::StringRef format = *moe_tools::parseDeviceCode(
        emitKind == "obj" ? llvm::StringRef(deviceCode) : emitKind);
    if (llvm::Error error =
            lowerToLLVMForNVPTX(*module, abis, chip, format, mma))
      fail(llvm::toString(std::move(error)));
    if (emitKind != "obj") {
      std::string binary = check(getDeviceBinary(*module));
      std::error_code ec;
      llvm::ToolOutputFile out(outputObject, ec, llvm::sys::fs::OF_None);
      if (ec)
        fail("cannot open '" + outputObject + "': " + ec.message());
      out.os() << binary;
      out.keep();
      return 0;
    }
  } else if (llvm::Error error = lowerToLLVM(
                 *module, abis,
                 // Under ASan every temporary is its own malloc block, so
                 // its redzones sit right at its end.
                 /*cachingAllocator=*/sanitize.empty(),
                 /*openmp=*/!noOpenMP, targetCPU, schedule)) {
    fail(llvm::toString(std::move(error)));
  }
  if (embedWeights)
    for (auto [abi, weights] : llvm::zip(abis, model->weights))
      embedLayerWeights(*module, abi, weights);

  if (llvm::Error error = emitObjectFile(*module, outputObject,
                                         codegenOptions()))
    fail(llvm::toString(std::move(error)));

  if (!outputHeader.empty()) {
    std::string text = emitCHeader(abis, headerGuard(outputHeader));
    if (gpu) {
      size_t at = text.find("#ifdef __cplusplus");
      text.insert(at,
                  "/* Compiled for " + chip +
                      " (--target nvptx): every pointer of the weights, the "
                      "batch and the outputs\n * is a device pointer (the "
                      "moe_batch struct itself stays in host memory).\n * "
                      "Link with libmoe_cuda_runtime.a (-ldl) and see "
                      "moe_cuda.h for device buffers;\n * MOE_ERROR_DEVICE "
                      "means a CUDA operation failed. */\n\n");
    }
    if (embedWeights) {
      std::string decls = "/* Weights stored in the object (--embed-weights)" +
                          std::string(gpu ? ", in host memory: copy them "
                                            "to the device"
                                          : "") +
                          ". */\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n";
      for (const LayerABI &abi : abis)
        decls += "const " + abi.symbol + "_weights *" + abi.symbol +
                 "_embedded_weights(void);\n";
      decls += "#ifdef __cplusplus\n}\n#endif\n\n#endif /* " +
               headerGuard(outputHeader) + " */\n";
      size_t end = text.rfind("#endif /*");
      text = text.substr(0, end) + decls;
    }
    std::error_code ec;
    llvm::ToolOutputFile out(outputHeader, ec, llvm::sys::fs::OF_Text);
    if (ec)
      fail("cannot open '" + outputHeader + "': " + ec.message());
    out.os() << text;
    out.keep();
  }
  return 0;
}
