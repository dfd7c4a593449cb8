//===- PtxEmulator.cpp - a CUDA driver that interprets PTX on the CPU -----===//
//
// libmoe_ptx_emu.so exports the CUDA driver API functions the project's
// runtime (runtime/cuda/MoECudaRuntime.cpp) calls, and runs the kernels of
// the PTX modules it is given on the host, one thread at a time. With
//
//   MOE_CUDA_DRIVER=build/lib/libmoe_ptx_emu.so
//
// the runtime opens it instead of libcuda.so.1, so the programs and JIT
// paths of `--target nvptx` run unchanged on a machine without a GPU: the
// GPU lowering's kernels are checked against the golden outputs in every
// test run, not only where a GPU is lent. It is a checker, not a simulator
// of timing: see docs/gpu.md ("The PTX emulator") for what it models.
//
// What it checks while it runs, each failure a located message on stderr
// and a CUDA error code returned to the caller (then sticky, as a real
// context's faults are):
//   * every global access lies inside one allocation (cuMemAlloc*), every
//     shared or local access inside the block's or thread's window;
//   * every access is aligned to its size (vector loads to the vector's);
//   * warp collectives (shfl.sync, mma.sync) are reached by every lane of
//     their member mask at the same instruction;
//   * no two threads of a block touch a word of shared memory between two
//     barriers with one of them writing (a data race, which the emulator's
//     one-thread-at-a-time order would otherwise hide);
//   * a block's threads cannot deadlock at bar.sync, and no kernel runs
//     more than MOE_PTX_EMU_MAX_STEPS instructions (default 2^32);
//   * launches respect the kernel's .maxntid.
// With MOE_PTX_EMU_STATS=1 it prints, at exit, each kernel's launches,
// threads, instructions executed, global bytes read and written, 16-byte
// accesses and mma.sync operations: a GPU's work counted without a GPU.
// Fresh allocations are filled with 0xff bytes (NaN as f32), so a kernel
// that reads memory nothing wrote shows it in its results.
//
// It reads the PTX subset LLVM's NVPTX backend emits for this project's
// kernels (the instructions in `decode` below); anything else is rejected
// when the module loads, naming the line. A cubin, or a fatbin without
// plain PTX, cannot be interpreted: compile with `--device-code ptx`.
//
//===----------------------------------------------------------------------===//

#include <cfenv>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

// The driver's codes for what can go wrong here.
enum : int {
  kSuccess = 0,
  kInvalidValue = 1,
  kOutOfMemory = 2,
  kNotInitialized = 3,
  kInvalidImage = 200,
  kInvalidPtx = 218,
  kNotFound = 500,
  kIllegalAddress = 700,
  kLaunchOutOfResources = 701,
  kLaunchTimeout = 702,
  kMisalignedAddress = 716,
  kIllegalInstruction = 715,
  kLaunchFailed = 719,
};

const char *errorName(int code) {
  switch (code) {
  case kSuccess:
    return "no error";
  case kInvalidValue:
    return "invalid argument";
  case kOutOfMemory:
    return "out of memory";
  case kNotInitialized:
    return "initialization error";
  case kInvalidImage:
    return "device kernel image is invalid (the PTX emulator runs PTX only)";
  case kInvalidPtx:
    return "a PTX JIT compilation failed (see the emulator's message)";
  case kNotFound:
    return "named symbol not found";
  case kIllegalAddress:
    return "an illegal memory access was encountered";
  case kLaunchOutOfResources:
    return "too many resources requested for launch";
  case kLaunchTimeout:
    return "the launch timed out (instruction limit of the PTX emulator)";
  case kMisalignedAddress:
    return "misaligned address";
  case kIllegalInstruction:
    return "an illegal instruction was encountered";
  case kLaunchFailed:
    return "unspecified launch failure";
  default:
    return nullptr;
  }
}

void report(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("moe-ptx-emu: ", stderr);
  vfprintf(stderr, format, args);
  fputc('\n', stderr);
  va_end(args);
}

//===----------------------------------------------------------------------===//
// Decoded PTX
//===----------------------------------------------------------------------===//

enum class Op : uint8_t {
  Mov,
  Ld,
  St,
  Add,
  Sub,
  Mul,
  Mad,
  Fma,
  Div,
  Rem,
  Min,
  Max,
  Neg,
  Abs,
  Not,
  And,
  Or,
  Xor,
  Shl,
  Shr,
  Setp,
  Selp,
  Cvt,
  Cvta,
  Bra,
  Ret,
  Bar,
  Shfl,
  Mma,
  Ex2,
  Lg2,
  Rcp,
  Sqrt,
  Rsqrt,
  Copysign,
};

// A PTX type: kind ('b', 'u', 's', 'f', 'p' for .pred) and width in bits.
struct Type {
  char kind = 0;
  uint8_t bits = 0;
  bool isFloat() const { return kind == 'f'; }
  bool isSigned() const { return kind == 's'; }
};

enum class Space : uint8_t { Global, Shared, Local, Param };
enum class Round : uint8_t { Nearest, Down, Up, Zero };
enum class Cmp : uint8_t {
  Eq,
  Ne,
  Lt,
  Le,
  Gt,
  Ge,
  Lo,
  Ls,
  Hi,
  Hs,
  Equ,
  Neu,
  Ltu,
  Leu,
  Gtu,
  Geu,
  Num,
  Nan,
};
enum class Special : uint8_t {
  TidX,
  TidY,
  TidZ,
  NtidX,
  NtidY,
  NtidZ,
  CtaidX,
  CtaidY,
  CtaidZ,
  NctaidX,
  NctaidY,
  NctaidZ,
  LaneId,
  WarpId,
};

struct Operand {
  enum Kind : uint8_t { None, Reg, Imm, Addr, Vec, Label, Spec } kind = None;
  bool negate = false;   // !%p in setp's and selp's predicate inputs
  int reg = -1;          // Reg; Addr's base register (-1: absolute)
  int64_t imm = 0;       // Imm; Addr's offset; Label's instruction; Spec
  std::vector<int> regs; // Vec elements (-1: the sink `_`)
};

struct Inst {
  Op op;
  Type type;    // the instruction's (destination) type
  Type srcType; // cvt's source type
  Space space = Space::Global;
  Round round = Round::Nearest;
  Cmp cmp = Cmp::Eq;
  uint8_t vec = 1;     // ld/st vector width
  uint8_t combine = 0; // setp's .and/.or/.xor: 0 none, 1 and, 2 or, 3 xor
  uint8_t mode =
      0; // mul/mad: 0 lo, 1 hi, 2 wide; shfl: 0 up 1 down 2 bfly 3 idx
  bool ftz = false, sat = false, approx = false, relu = false;
  int guard = -1; // predicate register guarding the instruction
  bool guardNegated = false;
  int secondDest = -1; // setp's `p|q`, shfl's `d|p`
  std::vector<Operand> ops;
  int line = 0;
};

struct Param {
  std::string name;
  unsigned size, align, offset;
};

struct Function {
  std::string name;
  std::vector<Param> params;
  unsigned paramBytes = 0;
  unsigned maxThreads[3] = {0, 0, 0}; // .maxntid (0: none)
  std::vector<Inst> code;
  unsigned numRegs = 0;
  unsigned sharedBytes = 0, localBytes = 0;
};

struct Module {
  std::vector<std::unique_ptr<Function>> functions;
};

//===----------------------------------------------------------------------===//
// The parser
//===----------------------------------------------------------------------===//

struct Token {
  std::string text;
  int line;
};

bool isWordChar(char c) {
  return isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
         c == '%' || c == '$';
}

std::vector<Token> tokenize(const char *text) {
  std::vector<Token> tokens;
  int line = 1;
  for (const char *p = text; *p;) {
    char c = *p;
    if (c == '\n') {
      ++line;
      ++p;
    } else if (isspace(static_cast<unsigned char>(c))) {
      ++p;
    } else if (c == '/' && p[1] == '/') {
      while (*p && *p != '\n')
        ++p;
    } else if (c == '/' && p[1] == '*') {
      p += 2;
      while (*p && !(*p == '*' && p[1] == '/')) {
        line += *p == '\n';
        ++p;
      }
      if (*p)
        p += 2;
    } else if (isWordChar(c)) {
      const char *start = p;
      while (isWordChar(*p))
        ++p;
      tokens.push_back({std::string(start, p), line});
    } else {
      tokens.push_back({std::string(1, c), line});
      ++p;
    }
  }
  return tokens;
}

class Parser {
public:
  explicit Parser(std::vector<Token> tokens) : toks(std::move(tokens)) {}

  /// Parses the whole module into `m`; on failure `error` says why.
  bool parseModule(Module &m) {
    while (pos < toks.size()) {
      const std::string &t = peek();
      if (t == ".version" || t == ".address_size") {
        pos += 2;
      } else if (t == ".target") {
        pos += 2;
        while (accept(","))
          ++pos;
      } else if (t == ".visible" || t == ".weak") {
        ++pos;
      } else if (t == ".entry") {
        ++pos;
        auto f = std::make_unique<Function>();
        if (!parseEntry(*f))
          return false;
        m.functions.push_back(std::move(f));
      } else {
        return fail("unsupported module-level statement '" + t +
                    "' (the emulator reads .entry kernels only)");
      }
    }
    return true;
  }

  std::string error;
  int errorLine = 0;

private:
  std::vector<Token> toks;
  size_t pos = 0;
  // Per-function state.
  Function *fn = nullptr;
  std::unordered_map<std::string, int> regs;
  std::unordered_map<std::string, int64_t> shared, local, params;
  std::unordered_map<std::string, int> labels;
  std::vector<std::pair<size_t, std::string>> fixups; // (inst, label)

  const std::string &peek(size_t ahead = 0) const {
    static const std::string end;
    return pos + ahead < toks.size() ? toks[pos + ahead].text : end;
  }
  int line() const {
    return pos < toks.size() ? toks[pos].line
           : toks.empty()    ? 0
                             : toks.back().line;
  }
  bool accept(const char *t) {
    if (peek() != t)
      return false;
    ++pos;
    return true;
  }
  bool fail(const std::string &message) {
    if (error.empty()) {
      error = message;
      errorLine = line();
    }
    return false;
  }
  bool expect(const char *t) {
    return accept(t) ||
           fail(std::string("expected '") + t + "', found '" + peek() + "'");
  }
  bool number(int64_t &value) {
    bool negative = accept("-");
    const std::string &t = peek();
    if (t.empty() || !isdigit(static_cast<unsigned char>(t[0])))
      return fail("expected a number, found '" + t + "'");
    if (t.size() == 10 && (t[1] == 'f' || t[1] == 'F') && t[0] == '0') {
      value = static_cast<int64_t>(strtoull(t.c_str() + 2, nullptr, 16));
    } else if (t.size() == 18 && (t[1] == 'd' || t[1] == 'D') && t[0] == '0') {
      value = static_cast<int64_t>(strtoull(t.c_str() + 2, nullptr, 16));
    } else {
      char *endp = nullptr;
      value = static_cast<int64_t>(strtoull(t.c_str(), &endp, 0));
      if (*endp == 'U')
        ++endp;
      if (*endp)
        return fail("malformed number '" + t + "'");
    }
    if (negative)
      value = static_cast<int64_t>(0 - static_cast<uint64_t>(value));
    ++pos;
    return true;
  }

  static bool typeOf(const std::string &s, Type &t) {
    if (s.size() < 3 || s[0] != '.')
      return false;
    if (s == ".pred") {
      t = {'p', 1};
      return true;
    }
    char k = s[1];
    if (s == ".bf16") {
      t = {'h', 16}; // brain float, only as cvt's and mma's operand type
      return true;
    }
    if (k != 'b' && k != 'u' && k != 's' && k != 'f')
      return false;
    int bits = atoi(s.c_str() + 2);
    if (bits != 8 && bits != 16 && bits != 32 && bits != 64)
      return false;
    t = {k, static_cast<uint8_t>(bits)};
    return true;
  }

  bool parseEntry(Function &f) {
    fn = &f;
    regs.clear();
    shared.clear();
    local.clear();
    params.clear();
    labels.clear();
    fixups.clear();
    f.name = peek();
    ++pos;
    if (!expect("("))
      return false;
    while (!accept(")")) {
      if (!f.params.empty() && !expect(","))
        return false;
      if (!expect(".param"))
        return false;
      Param p{};
      Type t;
      if (!typeOf(peek(), t))
        return fail("unsupported parameter type '" + peek() + "'");
      ++pos;
      p.size = p.align = t.bits / 8;
      while (peek() == ".ptr" || peek() == ".global" || peek() == ".align") {
        if (accept(".align")) {
          int64_t a;
          if (!number(a))
            return false;
          if (t.bits == 8)
            p.align = static_cast<unsigned>(a);
        } else {
          ++pos;
        }
      }
      p.name = peek();
      ++pos;
      if (accept("[")) {
        int64_t n;
        if (!number(n) || !expect("]"))
          return false;
        p.size *= static_cast<unsigned>(n);
      }
      f.paramBytes = (f.paramBytes + p.align - 1) / p.align * p.align;
      p.offset = f.paramBytes;
      f.paramBytes += p.size;
      params[p.name] = p.offset;
      f.params.push_back(p);
    }
    while (peek() != "{") {
      const std::string d = peek();
      ++pos;
      if (d == ".maxntid" || d == ".reqntid") {
        for (int i = 0; i < 3; ++i) {
          int64_t n;
          if (!number(n))
            return false;
          f.maxThreads[i] = static_cast<unsigned>(n);
          if (!accept(","))
            break;
        }
        for (int i = 0; i < 3; ++i)
          if (f.maxThreads[i] == 0)
            f.maxThreads[i] = 1;
      } else if (d == ".minnctapersm" || d == ".maxnreg" ||
                 d == ".maxclusterrank") {
        int64_t n;
        if (!number(n))
          return false;
      } else if (d.empty()) {
        return fail("unexpected end of the module in " + f.name);
      } else {
        return fail("unsupported kernel directive '" + d + "'");
      }
    }
    ++pos;
    while (!accept("}")) {
      if (pos >= toks.size())
        return fail("unexpected end of the module in " + f.name);
      if (!parseStatement())
        return false;
    }
    for (auto &[index, name] : fixups) {
      auto it = labels.find(name);
      if (it == labels.end())
        return fail("unknown label '" + name + "' in " + f.name);
      f.code[index].ops[0].imm = it->second;
    }
    f.numRegs = static_cast<unsigned>(regs.size());
    return true;
  }

  bool parseStatement() {
    const std::string t = peek();
    if (t == ".reg") {
      ++pos;
      ++pos; // the type; registers hold any value as bits
      do {
        std::string name = peek();
        ++pos;
        if (accept("<")) {
          int64_t n;
          if (!number(n) || !expect(">"))
            return false;
          if (n < 0 || n > (1 << 20))
            return fail("too many registers declared: " + std::to_string(n));
          for (int64_t i = 0; i < n; ++i)
            regs.emplace(name + std::to_string(i),
                         static_cast<int>(regs.size()));
        } else {
          regs.emplace(name, static_cast<int>(regs.size()));
        }
      } while (accept(","));
      return expect(";");
    }
    if (t == ".shared" || t == ".local") {
      ++pos;
      int64_t align = 1;
      if (accept(".align") && !number(align))
        return false;
      Type type;
      if (!typeOf(peek(), type))
        return fail("unsupported variable type '" + peek() + "'");
      ++pos;
      std::string name = peek();
      ++pos;
      int64_t count = 1;
      if (accept("[") && (!number(count) || !expect("]")))
        return false;
      unsigned &bytes = t == ".shared" ? fn->sharedBytes : fn->localBytes;
      bytes = static_cast<unsigned>((bytes + align - 1) / align * align);
      (t == ".shared" ? shared : local)[name] = bytes;
      bytes += static_cast<unsigned>(count * (type.bits / 8));
      return expect(";");
    }
    if (peek(1) == ":" && t[0] != '@' && t[0] != '.') {
      labels[t] = static_cast<int>(fn->code.size());
      pos += 2;
      return true;
    }
    return parseInstruction();
  }

  bool parseRegister(int &index) {
    const std::string &t = peek();
    auto it = regs.find(t);
    if (it == regs.end())
      return fail("unknown register '" + t + "'");
    index = it->second;
    ++pos;
    return true;
  }

  bool parseOperand(Operand &o, Inst &inst) {
    const std::string t = peek();
    if (accept("!")) {
      if (!parseOperand(o, inst))
        return false;
      o.negate = true;
      return true;
    }
    if (accept("{")) {
      o.kind = Operand::Vec;
      do {
        if (accept("_")) {
          o.regs.push_back(-1);
          continue;
        }
        int r;
        if (!parseRegister(r))
          return false;
        o.regs.push_back(r);
      } while (accept(","));
      return expect("}");
    }
    if (accept("[")) {
      o.kind = Operand::Addr;
      const std::string base = peek();
      if (regs.count(base)) {
        if (!parseRegister(o.reg))
          return false;
      } else if (!base.empty() &&
                 isdigit(static_cast<unsigned char>(base[0]))) {
        if (!number(o.imm))
          return false;
      } else if (!symbol(base, o.imm)) {
        return false;
      } else {
        ++pos;
      }
      if (accept("+")) {
        int64_t offset;
        if (!number(offset))
          return false;
        o.imm += offset;
      }
      return expect("]");
    }
    if (t == "-" || (!t.empty() && isdigit(static_cast<unsigned char>(t[0])))) {
      o.kind = Operand::Imm;
      return number(o.imm);
    }
    if (regs.count(t)) {
      o.kind = Operand::Reg;
      return parseRegister(o.reg);
    }
    static const std::pair<const char *, Special> specials[] = {
        {"%tid.x", Special::TidX},       {"%tid.y", Special::TidY},
        {"%tid.z", Special::TidZ},       {"%ntid.x", Special::NtidX},
        {"%ntid.y", Special::NtidY},     {"%ntid.z", Special::NtidZ},
        {"%ctaid.x", Special::CtaidX},   {"%ctaid.y", Special::CtaidY},
        {"%ctaid.z", Special::CtaidZ},   {"%nctaid.x", Special::NctaidX},
        {"%nctaid.y", Special::NctaidY}, {"%nctaid.z", Special::NctaidZ},
        {"%laneid", Special::LaneId},    {"%warpid", Special::WarpId}};
    for (auto &[name, s] : specials)
      if (t == name) {
        o.kind = Operand::Spec;
        o.imm = static_cast<int64_t>(s);
        ++pos;
        return true;
      }
    if (t[0] == '%')
      return fail("unsupported register '" + t + "'");
    if (inst.op == Op::Bra) {
      o.kind = Operand::Label;
      fixups.emplace_back(fn->code.size(), t);
      ++pos;
      return true;
    }
    o.kind = Operand::Imm;
    if (!symbol(t, o.imm))
      return false;
    ++pos;
    return true;
  }

  /// The address of variable `name` in its state space.
  bool symbol(const std::string &name, int64_t &address) {
    if (auto it = params.find(name); it != params.end()) {
      address = it->second;
      return true;
    }
    if (auto it = shared.find(name); it != shared.end()) {
      address = it->second;
      return true;
    }
    if (auto it = local.find(name); it != local.end()) {
      address = it->second;
      return true;
    }
    return fail("unknown symbol '" + name + "'");
  }

  bool parseInstruction() {
    Inst inst{};
    inst.line = line();
    if (accept("@")) {
      inst.guardNegated = accept("!");
      if (!parseRegister(inst.guard))
        return false;
    }
    std::string opcode = peek();
    ++pos;
    if (!decode(opcode, inst))
      return false;
    if (peek() != ";") {
      do {
        Operand o;
        if (!parseOperand(o, inst))
          return false;
        inst.ops.push_back(std::move(o));
        if (inst.ops.size() == 1 && accept("|")) {
          if (!parseRegister(inst.secondDest))
            return false;
        }
      } while (accept(","));
    }
    if (!expect(";"))
      return false;
    if (!checkOperands(inst, opcode))
      return false;
    fn->code.push_back(std::move(inst));
    return true;
  }

  bool checkOperands(const Inst &inst, const std::string &opcode) {
    size_t want = 0;
    switch (inst.op) {
    case Op::Ret:
      want = 0;
      break;
    case Op::Bra:
    case Op::Bar:
      want = 1;
      break;
    case Op::Mov:
    case Op::Ld:
    case Op::St:
    case Op::Neg:
    case Op::Abs:
    case Op::Not:
    case Op::Cvt:
    case Op::Cvta:
    case Op::Ex2:
    case Op::Lg2:
    case Op::Rcp:
    case Op::Sqrt:
    case Op::Rsqrt:
      want = 2;
      break;
    case Op::Mad:
    case Op::Fma:
    case Op::Selp:
      want = 4;
      break;
    case Op::Setp:
      want = inst.combine ? 4 : 3;
      break;
    case Op::Shfl:
      want = 5;
      break;
    case Op::Mma:
      want = 4;
      break;
    default:
      want = 3;
      break;
    }
    if (inst.ops.size() != want)
      return fail("'" + opcode + "' takes " + std::to_string(want) +
                  " operands, not " + std::to_string(inst.ops.size()));
    if (inst.op == Op::Mma) {
      static const size_t sizes[4] = {4, 4, 2, 4};
      for (int i = 0; i < 4; ++i)
        if (inst.ops[i].kind != Operand::Vec ||
            inst.ops[i].regs.size() != sizes[i])
          return fail("'" + opcode + "' wants {4}, {4}, {2}, {4} registers");
    }
    if (inst.op == Op::Ld || inst.op == Op::St) {
      bool load = inst.op == Op::Ld;
      if (inst.ops[load ? 1 : 0].kind != Operand::Addr)
        return fail("'" + opcode + "' needs an [address]");
      const Operand &data = inst.ops[load ? 0 : 1];
      bool ok = inst.vec > 1
                    ? data.kind == Operand::Vec && data.regs.size() == inst.vec
                    : data.kind == Operand::Reg ||
                          (!load && data.kind == Operand::Imm);
      if (!ok)
        return fail("'" + opcode + "' needs " +
                    (inst.vec > 1
                         ? "{" + std::to_string(inst.vec) + " registers}"
                         : std::string("a register")));
    }
    if (inst.op == Op::Bra && inst.ops[0].kind != Operand::Label)
      return fail("'" + opcode +
                  "' needs a label (indirect branches are not "
                  "emulated)");
    for (size_t i = 1; i < inst.ops.size(); ++i)
      if (inst.op != Op::Mma && inst.op != Op::Mov && inst.op != Op::St &&
          inst.ops[i].kind == Operand::Vec)
        return fail("'" + opcode + "' takes no {vector} operand here");
    if (inst.op != Op::Bra && inst.op != Op::Bar && inst.op != Op::St &&
        inst.op != Op::Ret && inst.op != Op::Mma &&
        inst.ops[0].kind != Operand::Reg &&
        !(inst.ops[0].kind == Operand::Vec &&
          (inst.op == Op::Mov || inst.op == Op::Ld)))
      return fail("'" + opcode + "' needs a destination register");
    return true;
  }

  /// Fills `inst` from the dotted opcode, or fails naming what is unknown.
  bool decode(const std::string &opcode, Inst &inst) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t i = 0; i <= opcode.size(); ++i)
      if (i == opcode.size() || opcode[i] == '.') {
        parts.push_back(opcode.substr(start, i - start));
        start = i + 1;
      }
    static const std::unordered_map<std::string, Op> ops = {
        {"mov", Op::Mov},          {"ld", Op::Ld},       {"st", Op::St},
        {"add", Op::Add},          {"sub", Op::Sub},     {"mul", Op::Mul},
        {"mad", Op::Mad},          {"fma", Op::Fma},     {"div", Op::Div},
        {"rem", Op::Rem},          {"min", Op::Min},     {"max", Op::Max},
        {"neg", Op::Neg},          {"abs", Op::Abs},     {"not", Op::Not},
        {"and", Op::And},          {"or", Op::Or},       {"xor", Op::Xor},
        {"shl", Op::Shl},          {"shr", Op::Shr},     {"setp", Op::Setp},
        {"selp", Op::Selp},        {"cvt", Op::Cvt},     {"cvta", Op::Cvta},
        {"bra", Op::Bra},          {"ret", Op::Ret},     {"exit", Op::Ret},
        {"bar", Op::Bar},          {"barrier", Op::Bar}, {"shfl", Op::Shfl},
        {"mma", Op::Mma},          {"ex2", Op::Ex2},     {"lg2", Op::Lg2},
        {"rcp", Op::Rcp},          {"sqrt", Op::Sqrt},   {"rsqrt", Op::Rsqrt},
        {"copysign", Op::Copysign}};
    auto it = ops.find(parts[0]);
    if (it == ops.end())
      return fail("unsupported instruction '" + opcode + "'");
    inst.op = it->second;
    auto unsupported = [&](const std::string &part) {
      return fail("unsupported modifier '." + part + "' in '" + opcode + "'");
    };
    if (inst.op == Op::Mma) {
      if (opcode != "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
        return fail("unsupported instruction '" + opcode +
                    "' (the emulator knows the m16n8k16 bf16 -> f32 shape)");
      inst.type = {'f', 32};
      return true;
    }
    static const std::unordered_map<std::string, Cmp> cmps = {
        {"eq", Cmp::Eq},   {"ne", Cmp::Ne},   {"lt", Cmp::Lt},
        {"le", Cmp::Le},   {"gt", Cmp::Gt},   {"ge", Cmp::Ge},
        {"lo", Cmp::Lo},   {"ls", Cmp::Ls},   {"hi", Cmp::Hi},
        {"hs", Cmp::Hs},   {"equ", Cmp::Equ}, {"neu", Cmp::Neu},
        {"ltu", Cmp::Ltu}, {"leu", Cmp::Leu}, {"gtu", Cmp::Gtu},
        {"geu", Cmp::Geu}, {"num", Cmp::Num}, {"nan", Cmp::Nan}};
    int types = 0;
    bool toSpace = false;
    for (size_t i = 1; i < parts.size(); ++i) {
      const std::string &p = parts[i];
      Type t;
      if (typeOf("." + p, t)) {
        // cvt.dst.src; everything else has one type.
        if (types++ == 0)
          inst.type = t;
        else if (inst.op == Op::Cvt)
          inst.srcType = t;
        else
          return unsupported(p);
        continue;
      }
      if (inst.op == Op::Ld || inst.op == Op::St || inst.op == Op::Cvta) {
        if (p == "global" || p == "shared" || p == "local" || p == "param") {
          inst.space = p == "global"   ? Space::Global
                       : p == "shared" ? Space::Shared
                       : p == "local"  ? Space::Local
                                       : Space::Param;
          continue;
        }
        if (p == "v2" || p == "v4") {
          inst.vec = static_cast<uint8_t>(p[1] - '0');
          continue;
        }
        if (p == "to" && inst.op == Op::Cvta) {
          toSpace = true;
          continue;
        }
        if (p == "nc" || p == "ca" || p == "cg" || p == "cs" || p == "lu" ||
            p == "cv" || p == "wb" || p == "wt" || p == "volatile")
          continue;
        return unsupported(p);
      }
      if (p == "rn" || p == "rni") {
        inst.round = Round::Nearest;
        continue;
      }
      if (p == "rm" || p == "rmi") {
        inst.round = Round::Down;
        continue;
      }
      if (p == "rp" || p == "rpi") {
        inst.round = Round::Up;
        continue;
      }
      if (p == "rz" || p == "rzi") {
        inst.round = Round::Zero;
        continue;
      }
      if (p == "ftz") {
        inst.ftz = true;
        continue;
      }
      if (p == "sat") {
        inst.sat = true;
        continue;
      }
      if (p == "relu" && (inst.op == Op::Max || inst.op == Op::Min)) {
        inst.relu = true; // the result clamped below at zero
        continue;
      }
      if (p == "approx" || p == "full") {
        inst.approx = true;
        continue;
      }
      if ((inst.op == Op::Mul || inst.op == Op::Mad) &&
          (p == "lo" || p == "hi" || p == "wide")) {
        inst.mode = p == "lo" ? 0 : p == "hi" ? 1 : 2;
        continue;
      }
      if (inst.op == Op::Setp && cmps.count(p) && i == 1) {
        inst.cmp = cmps.at(p);
        continue;
      }
      if (inst.op == Op::Setp && (p == "and" || p == "or" || p == "xor")) {
        inst.combine = p == "and" ? 1 : p == "or" ? 2 : 3;
        continue;
      }
      if (inst.op == Op::Bra && p == "uni")
        continue;
      if (inst.op == Op::Bar && (p == "sync" || p == "cta" || p == "aligned"))
        continue;
      if (inst.op == Op::Shfl) {
        if (p == "sync")
          continue;
        if (p == "up" || p == "down" || p == "bfly" || p == "idx") {
          inst.mode = p == "up" ? 0 : p == "down" ? 1 : p == "bfly" ? 2 : 3;
          continue;
        }
      }
      return unsupported(p);
    }
    if (inst.op == Op::Cvta && (!toSpace || inst.space != Space::Global))
      return fail("unsupported instruction '" + opcode +
                  "' (generic addresses other than global ones)");
    bool typed = inst.op != Op::Bra && inst.op != Op::Ret && inst.op != Op::Bar;
    if (typed && types == 0)
      return fail("'" + opcode + "' has no type");
    if (inst.op == Op::Cvt && types != 2)
      return fail("'" + opcode + "' needs a destination and a source type");
    if (inst.op == Op::Bar && opcode != "bar.sync" &&
        opcode != "barrier.sync" && opcode != "barrier.sync.aligned")
      return fail("unsupported instruction '" + opcode + "'");
    // Floating-point arithmetic is emulated in f32 only; bf16 appears only
    // as cvt's operand.
    bool floatOp = inst.type.isFloat() || inst.srcType.isFloat();
    if (floatOp && ((inst.type.isFloat() && inst.type.bits != 32) ||
                    (inst.srcType.isFloat() && inst.srcType.bits != 32)))
      return fail("unsupported instruction '" + opcode +
                  "' (floating point is emulated in f32 and bf16)");
    if (inst.type.kind == 'h' && inst.op != Op::Cvt)
      return fail("unsupported instruction '" + opcode + "'");
    return true;
  }
};

//===----------------------------------------------------------------------===//
// Device memory
//===----------------------------------------------------------------------===//

struct Memory {
  std::map<uint64_t, size_t> allocations; // base -> size

  /// The allocation (base, size) holding [address, address + bytes), or
  /// null.
  const std::pair<const uint64_t, size_t> *find(uint64_t address,
                                                uint64_t bytes) const {
    auto it = allocations.upper_bound(address);
    if (it == allocations.begin())
      return nullptr;
    --it;
    return address >= it->first && address - it->first + bytes <= it->second
               ? &*it
               : nullptr;
  }
  bool contains(uint64_t address, uint64_t bytes) const {
    return find(address, bytes) != nullptr;
  }
  /// Whether `address` lies in some allocation.
  bool isDevice(uint64_t address) const { return contains(address, 1); }
};

//===----------------------------------------------------------------------===//
// The interpreter
//===----------------------------------------------------------------------===//

enum class Status : uint8_t { Ready, AtBarrier, AtWarpOp, Exited };

struct Thread {
  std::vector<uint64_t> r;
  std::vector<uint8_t> local;
  size_t pc = 0;
  Status status = Status::Ready;
  unsigned tid[3];
  unsigned index, lane, warp;
};

/// Who last wrote and read one 4-byte word of shared memory, and in which
/// interval between barriers (epoch): two threads touching a word in one
/// interval, one of them writing, is a race.
struct SharedShadow {
  uint32_t writeEpoch = 0, readEpoch = 0;
  int32_t writer = -1, reader = -1; // reader -2: several threads
};

float asFloat(uint64_t v) {
  float f;
  uint32_t u = static_cast<uint32_t>(v);
  memcpy(&f, &u, 4);
  return f;
}
uint64_t bitsOf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
uint64_t mask(uint64_t v, unsigned bits) {
  return bits >= 64 ? v : v & ((uint64_t(1) << bits) - 1);
}
int64_t signExtend(uint64_t v, unsigned bits) {
  if (bits >= 64)
    return static_cast<int64_t>(v);
  uint64_t m = uint64_t(1) << (bits - 1);
  v = mask(v, bits);
  return static_cast<int64_t>((v ^ m) - m);
}
float flush(float f, bool ftz) {
  return ftz && std::fpclassify(f) == FP_SUBNORMAL ? std::copysign(0.0f, f) : f;
}
uint16_t toBf16(float f) {
  uint32_t u = static_cast<uint32_t>(bitsOf(f));
  if (std::isnan(f))
    return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1); // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}
float fromBf16(uint64_t v) { return asFloat(mask(v, 16) << 16); }

class ScopedRounding {
public:
  explicit ScopedRounding(Round r) : changed(r != Round::Nearest) {
    if (changed)
      fesetround(r == Round::Down ? FE_DOWNWARD
                 : r == Round::Up ? FE_UPWARD
                                  : FE_TOWARDZERO);
  }
  ~ScopedRounding() {
    if (changed)
      fesetround(FE_TONEAREST);
  }

private:
  bool changed;
};

/// What a kernel did, summed over its launches (MOE_PTX_EMU_STATS=1).
struct KernelStats {
  uint64_t launches = 0, threads = 0, instructions = 0;
  uint64_t globalRead = 0, globalWritten = 0, vectorAccesses = 0, mmas = 0;

  KernelStats &operator+=(const KernelStats &o) {
    launches += o.launches;
    threads += o.threads;
    instructions += o.instructions;
    globalRead += o.globalRead;
    globalWritten += o.globalWritten;
    vectorAccesses += o.vectorAccesses;
    mmas += o.mmas;
    return *this;
  }
};

class Launch {
public:
  Launch(const Function &f, Memory &memory, const unsigned grid[3],
         const unsigned block[3], std::vector<uint8_t> params,
         uint64_t maxSteps)
      : f(f), memory(memory), params(std::move(params)), maxSteps(maxSteps) {
    for (int i = 0; i < 3; ++i) {
      this->grid[i] = grid[i];
      this->block[i] = block[i];
    }
  }

  KernelStats stats;

  /// Runs every block; returns a driver error code.
  int run() {
    stats.launches = 1;
    stats.threads =
        uint64_t(grid[0]) * grid[1] * grid[2] * block[0] * block[1] * block[2];
    unsigned n = block[0] * block[1] * block[2];
    threads.resize(n);
    shared.assign(f.sharedBytes, 0xff);
    for (unsigned z = 0; z < grid[2]; ++z)
      for (unsigned y = 0; y < grid[1]; ++y)
        for (unsigned x = 0; x < grid[0]; ++x) {
          ctaid[0] = x;
          ctaid[1] = y;
          ctaid[2] = z;
          int e = runBlock();
          stats.instructions = steps;
          if (e)
            return e;
        }
    return kSuccess;
  }

private:
  const Function &f;
  Memory &memory;
  std::vector<uint8_t> params;
  uint64_t maxSteps, steps = 0;
  unsigned grid[3], block[3], ctaid[3];
  std::vector<Thread> threads;
  std::vector<uint8_t> shared;
  std::vector<SharedShadow> shadow;
  uint32_t epoch = 1;
  int error = kSuccess;
  uint64_t lastBase = 0, lastSize = 0; // the last allocation hit

  int fault(const Thread &t, int code, const char *format, ...) {
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    const Inst &inst = f.code[t.pc < f.code.size() ? t.pc : f.code.size() - 1];
    report("%s: %s (block (%u, %u, %u), thread (%u, %u, %u), PTX line %d)",
           f.name.c_str(), message, ctaid[0], ctaid[1], ctaid[2], t.tid[0],
           t.tid[1], t.tid[2], inst.line);
    error = code;
    return code;
  }

  int runBlock() {
    unsigned n = static_cast<unsigned>(threads.size());
    std::fill(shared.begin(), shared.end(), 0xff);
    shadow.assign((shared.size() + 3) / 4, SharedShadow());
    epoch = 1;
    for (unsigned i = 0; i < n; ++i) {
      Thread &t = threads[i];
      t.r.assign(f.numRegs, 0);
      t.local.assign(f.localBytes, 0xff);
      t.pc = 0;
      t.status = Status::Ready;
      t.tid[0] = i % block[0];
      t.tid[1] = i / block[0] % block[1];
      t.tid[2] = i / (block[0] * block[1]);
      t.index = i;
      t.lane = i % 32;
      t.warp = i / 32;
    }
    unsigned warps = (n + 31) / 32;
    for (;;) {
      bool progress = false;
      for (Thread &t : threads)
        if (t.status == Status::Ready) {
          progress = true;
          if (step(t))
            return error;
        }
      for (unsigned w = 0; w < warps; ++w) {
        int e = warpCollectives(w, progress);
        if (e)
          return e;
      }
      if (progress)
        continue;
      unsigned atBarrier = 0, exited = 0;
      for (Thread &t : threads) {
        atBarrier += t.status == Status::AtBarrier;
        exited += t.status == Status::Exited;
      }
      if (exited == n)
        return kSuccess;
      if (atBarrier + exited == n) {
        ++epoch;
        for (Thread &t : threads)
          if (t.status == Status::AtBarrier) {
            t.status = Status::Ready;
            ++t.pc;
          }
        continue;
      }
      for (Thread &t : threads)
        if (t.status == Status::AtWarpOp)
          return fault(t, kLaunchFailed,
                       "deadlock: lane %u waits at a warp collective that "
                       "other lanes of its mask never reach",
                       t.lane);
      return fault(threads[0], kLaunchFailed, "deadlock in the block");
    }
  }

  /// Executes the shfl/mma instructions the lanes of warp `w` wait at, once
  /// no lane of it can run further.
  int warpCollectives(unsigned w, bool &progress) {
    unsigned first = w * 32;
    unsigned last = std::min<unsigned>(first + 32, threads.size());
    for (unsigned i = first; i < last; ++i)
      if (threads[i].status == Status::Ready)
        return kSuccess;
    for (unsigned i = first; i < last; ++i) {
      Thread &leader = threads[i];
      if (leader.status != Status::AtWarpOp)
        continue;
      uint32_t group = 0;
      for (unsigned j = i; j < last; ++j)
        if (threads[j].status == Status::AtWarpOp && threads[j].pc == leader.pc)
          group |= 1u << (j - first);
      const Inst &inst = f.code[leader.pc];
      int e = inst.op == Op::Mma ? mma(inst, first, group)
                                 : shfl(inst, first, last, group);
      if (e)
        return e;
      for (unsigned j = i; j < last; ++j)
        if (group & (1u << (j - first))) {
          threads[j].status = Status::Ready;
          ++threads[j].pc;
        }
      progress = true;
    }
    return kSuccess;
  }

  int shfl(const Inst &inst, unsigned first, unsigned last, uint32_t group) {
    // Member mask: every lane in it must be here; values are read before
    // any is written.
    uint64_t values[32];
    for (unsigned j = first; j < last; ++j)
      if (group & (1u << (j - first))) {
        Thread &t = threads[j];
        uint32_t members = static_cast<uint32_t>(value(t, inst.ops[4], 32));
        if ((members & group) != members)
          return fault(t, kIllegalInstruction,
                       "shfl.sync with member mask 0x%08x reached by lanes "
                       "0x%08x only",
                       members, group);
        values[j - first] = value(t, inst.ops[1], 32);
      }
    for (unsigned j = first; j < last; ++j) {
      if (!(group & (1u << (j - first))))
        continue;
      Thread &t = threads[j];
      unsigned lane = j - first;
      unsigned b = static_cast<unsigned>(value(t, inst.ops[2], 32)) & 31;
      unsigned c = static_cast<unsigned>(value(t, inst.ops[3], 32));
      unsigned clamp = c & 31, segmask = (c >> 8) & 31;
      unsigned minLane = lane & segmask;
      unsigned maxLane = minLane | (clamp & ~segmask);
      int source;
      bool in;
      switch (inst.mode) {
      case 0:
        source = static_cast<int>(lane) - static_cast<int>(b);
        in = source >= static_cast<int>(maxLane);
        break;
      case 1:
        source = static_cast<int>(lane + b);
        in = source <= static_cast<int>(maxLane);
        break;
      case 2:
        source = static_cast<int>(lane ^ b);
        in = source <= static_cast<int>(maxLane);
        break;
      default:
        source = static_cast<int>(minLane | (b & ~segmask));
        in = source <= static_cast<int>(maxLane);
        break;
      }
      if (!in)
        source = static_cast<int>(lane);
      if (!(group & (1u << source)))
        return fault(t, kIllegalInstruction,
                     "shfl.sync reads lane %d, which is not at this "
                     "instruction",
                     source);
      write(t, inst.ops[0], values[source], 32);
      if (inst.secondDest >= 0)
        t.r[inst.secondDest] = in;
    }
    return kSuccess;
  }

  int mma(const Inst &inst, unsigned first, uint32_t group) {
    if (group != 0xffffffffu || threads.size() < first + 32)
      return fault(threads[first], kIllegalInstruction,
                   "mma.sync reached by lanes 0x%08x of the warp, not all 32",
                   group);
    ++stats.mmas;
    // Gather the warp's fragments into A (16 x 16), B (16 x 8), C (16 x 8)
    // by the m16n8k16 layouts of the PTX ISA.
    float a[16][16], b[16][8], c[16][8];
    for (unsigned lane = 0; lane < 32; ++lane) {
      Thread &t = threads[first + lane];
      unsigned g = lane >> 2, k = lane & 3;
      for (unsigned i = 0; i < 8; ++i) {
        uint64_t word = t.r[inst.ops[1].regs[i / 2]];
        float v = fromBf16(word >> (16 * (i & 1)));
        unsigned row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
        unsigned col = k * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        a[row][col] = v;
      }
      for (unsigned i = 0; i < 4; ++i) {
        uint64_t word = t.r[inst.ops[2].regs[i / 2]];
        float v = fromBf16(word >> (16 * (i & 1)));
        unsigned row = k * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        b[row][g] = v;
      }
      for (unsigned i = 0; i < 4; ++i) {
        unsigned row = i < 2 ? g : g + 8;
        c[row][k * 2 + (i & 1)] = asFloat(t.r[inst.ops[3].regs[i]]);
      }
    }
    for (unsigned lane = 0; lane < 32; ++lane) {
      Thread &t = threads[first + lane];
      unsigned g = lane >> 2, k = lane & 3;
      for (unsigned i = 0; i < 4; ++i) {
        unsigned row = i < 2 ? g : g + 8, col = k * 2 + (i & 1);
        float sum = 0;
        for (unsigned kk = 0; kk < 16; ++kk)
          sum += a[row][kk] * b[kk][col];
        t.r[inst.ops[0].regs[i]] = bitsOf(sum + c[row][col]);
      }
    }
    return kSuccess;
  }

  uint64_t special(const Thread &t, Special s) const {
    switch (s) {
    case Special::TidX:
      return t.tid[0];
    case Special::TidY:
      return t.tid[1];
    case Special::TidZ:
      return t.tid[2];
    case Special::NtidX:
      return block[0];
    case Special::NtidY:
      return block[1];
    case Special::NtidZ:
      return block[2];
    case Special::CtaidX:
      return ctaid[0];
    case Special::CtaidY:
      return ctaid[1];
    case Special::CtaidZ:
      return ctaid[2];
    case Special::NctaidX:
      return grid[0];
    case Special::NctaidY:
      return grid[1];
    case Special::NctaidZ:
      return grid[2];
    case Special::LaneId:
      return t.lane;
    case Special::WarpId:
      return t.warp;
    }
    return 0;
  }

  uint64_t value(const Thread &t, const Operand &o, unsigned bits) const {
    uint64_t v = 0;
    switch (o.kind) {
    case Operand::Reg:
      v = t.r[o.reg];
      break;
    case Operand::Imm:
      v = static_cast<uint64_t>(o.imm);
      break;
    case Operand::Spec:
      v = special(t, static_cast<Special>(o.imm));
      break;
    default:
      break;
    }
    if (o.negate)
      v = !v;
    return mask(v, bits);
  }

  void write(Thread &t, const Operand &o, uint64_t v, unsigned bits) {
    if (o.kind == Operand::Reg)
      t.r[o.reg] = mask(v, bits);
  }

  /// The host address of `bytes` at `address` in `space`, or null after a
  /// fault.
  uint8_t *locate(Thread &t, Space space, uint64_t address, unsigned bytes,
                  bool store) {
    if (address % bytes != 0) {
      fault(t, kMisalignedAddress,
            "%s of %u bytes at misaligned address 0x%llx",
            store ? "store" : "load", bytes,
            static_cast<unsigned long long>(address));
      return nullptr;
    }
    switch (space) {
    case Space::Global:
      (store ? stats.globalWritten : stats.globalRead) += bytes;
      stats.vectorAccesses += bytes > 8;
      if (address - lastBase + bytes <= lastSize && address >= lastBase)
        return reinterpret_cast<uint8_t *>(address);
      if (const auto *hit = memory.find(address, bytes)) {
        lastBase = hit->first;
        lastSize = hit->second;
        return reinterpret_cast<uint8_t *>(address);
      }
      fault(t, kIllegalAddress,
            "global %s of %u bytes at 0x%llx, outside every allocation",
            store ? "store" : "load", bytes,
            static_cast<unsigned long long>(address));
      return nullptr;
    case Space::Shared:
      if (address + bytes <= shared.size())
        return checkRace(t, address, bytes, store) ? shared.data() + address
                                                   : nullptr;
      fault(t, kIllegalAddress,
            "shared %s of %u bytes at offset %llu, outside the block's %zu "
            "bytes",
            store ? "store" : "load", bytes,
            static_cast<unsigned long long>(address), shared.size());
      return nullptr;
    case Space::Local:
      if (address + bytes <= t.local.size())
        return t.local.data() + address;
      fault(t, kIllegalAddress,
            "local %s of %u bytes at offset %llu, outside the thread's %zu "
            "bytes",
            store ? "store" : "load", bytes,
            static_cast<unsigned long long>(address), t.local.size());
      return nullptr;
    case Space::Param:
      if (!store && address + bytes <= params.size())
        return params.data() + address;
      fault(t, kIllegalAddress, "parameter access at offset %llu",
            static_cast<unsigned long long>(address));
      return nullptr;
    }
    return nullptr;
  }

  /// Records an access to shared memory; false (a fault) when another
  /// thread wrote the bytes since the last barrier, or this one writes bytes
  /// another read or wrote since then.
  bool checkRace(Thread &t, uint64_t address, unsigned bytes, bool store) {
    int32_t me = static_cast<int32_t>(t.index);
    for (uint64_t word = address / 4; word <= (address + bytes - 1) / 4;
         ++word) {
      SharedShadow &s = shadow[word];
      int32_t other = -1;
      const char *kind = nullptr;
      if (s.writeEpoch == epoch && s.writer != me) {
        other = s.writer;
        kind = store ? "writes" : "reads";
      } else if (store && s.readEpoch == epoch && s.reader != me) {
        other = s.reader;
        kind = "writes after a read of";
      }
      if (kind) {
        char by[48] = "several threads";
        if (other >= 0)
          snprintf(by, sizeof by, "thread %d", other);
        fault(t, kLaunchFailed,
              "shared-memory race: this thread %s offset %llu, which %s %s "
              "since the last barrier",
              kind, static_cast<unsigned long long>(word * 4), by,
              s.writeEpoch == epoch && s.writer != me ? "wrote" : "read");
        return false;
      }
      if (store) {
        s.writeEpoch = epoch;
        s.writer = me;
      } else if (s.readEpoch != epoch) {
        s.readEpoch = epoch;
        s.reader = me;
      } else if (s.reader != me) {
        s.reader = -2;
      }
    }
    return true;
  }

  static bool compareInt(Cmp c, int64_t a, int64_t b, uint64_t ua, uint64_t ub,
                         bool isSigned) {
    switch (c) {
    case Cmp::Eq:
      return ua == ub;
    case Cmp::Ne:
      return ua != ub;
    case Cmp::Lt:
      return isSigned ? a < b : ua < ub;
    case Cmp::Le:
      return isSigned ? a <= b : ua <= ub;
    case Cmp::Gt:
      return isSigned ? a > b : ua > ub;
    case Cmp::Ge:
      return isSigned ? a >= b : ua >= ub;
    case Cmp::Lo:
      return ua < ub;
    case Cmp::Ls:
      return ua <= ub;
    case Cmp::Hi:
      return ua > ub;
    case Cmp::Hs:
      return ua >= ub;
    default:
      return false;
    }
  }

  static bool compareFloat(Cmp c, float a, float b) {
    bool unordered = std::isnan(a) || std::isnan(b);
    switch (c) {
    case Cmp::Eq:
      return !unordered && a == b;
    case Cmp::Ne:
      return !unordered && a != b;
    case Cmp::Lt:
      return !unordered && a < b;
    case Cmp::Le:
      return !unordered && a <= b;
    case Cmp::Gt:
      return !unordered && a > b;
    case Cmp::Ge:
      return !unordered && a >= b;
    case Cmp::Equ:
      return unordered || a == b;
    case Cmp::Neu:
      return unordered || a != b;
    case Cmp::Ltu:
      return unordered || a < b;
    case Cmp::Leu:
      return unordered || a <= b;
    case Cmp::Gtu:
      return unordered || a > b;
    case Cmp::Geu:
      return unordered || a >= b;
    case Cmp::Num:
      return !unordered;
    case Cmp::Nan:
      return unordered;
    default:
      return false;
    }
  }

  uint64_t convert(const Inst &in, uint64_t v) {
    Type d = in.type, s = in.srcType;
    if (s.kind == 'h') {
      float f = fromBf16(v);
      if (d.isFloat())
        return bitsOf(f);
      s = {'f', 32};
      v = bitsOf(f);
    }
    if (d.kind == 'h') {
      float f = s.isFloat()    ? asFloat(v)
                : s.isSigned() ? static_cast<float>(signExtend(v, s.bits))
                               : static_cast<float>(mask(v, s.bits));
      return toBf16(f);
    }
    if (!d.isFloat() && !s.isFloat()) {
      // Integer to integer: sign or zero extension from the source.
      uint64_t x = s.isSigned() ? static_cast<uint64_t>(signExtend(v, s.bits))
                                : mask(v, s.bits);
      if (in.sat && d.bits < 64) {
        int64_t lo = d.isSigned() ? -(int64_t(1) << (d.bits - 1)) : 0;
        int64_t hi = d.isSigned() ? (int64_t(1) << (d.bits - 1)) - 1
                                  : (int64_t(1) << d.bits) - 1;
        int64_t sx = static_cast<int64_t>(x);
        if (s.isSigned())
          x = static_cast<uint64_t>(sx < lo ? lo : sx > hi ? hi : sx);
        else if (x > static_cast<uint64_t>(hi))
          x = static_cast<uint64_t>(hi);
      }
      return mask(x, d.bits);
    }
    if (d.isFloat() && s.isFloat()) {
      float f = flush(asFloat(v), in.ftz);
      if (in.round != Round::Nearest || in.approx) {
        f = in.round == Round::Down   ? std::floor(f)
            : in.round == Round::Up   ? std::ceil(f)
            : in.round == Round::Zero ? std::trunc(f)
                                      : f;
      }
      if (in.sat)
        f = std::isnan(f) ? 0.0f : f < 0 ? 0.0f : f > 1 ? 1.0f : f;
      return bitsOf(flush(f, in.ftz));
    }
    if (d.isFloat()) {
      ScopedRounding rounding(in.round);
      volatile float f = s.isSigned()
                             ? static_cast<float>(signExtend(v, s.bits))
                             : static_cast<float>(mask(v, s.bits));
      return bitsOf(f);
    }
    // Float to integer: round as asked, saturate, NaN -> 0.
    float f = asFloat(v);
    if (std::isnan(f))
      return 0;
    double x = in.round == Round::Down   ? std::floor(f)
               : in.round == Round::Up   ? std::ceil(f)
               : in.round == Round::Zero ? std::trunc(f)
                                         : std::nearbyint(f);
    // Saturate to the destination's range; limits are powers of two, exact
    // in a double, so compare against them before converting.
    double top = std::ldexp(1.0, d.isSigned() ? d.bits - 1 : d.bits);
    if (d.isSigned()) {
      if (x >= top)
        return mask((uint64_t(1) << (d.bits - 1)) - 1, d.bits);
      if (x < -top)
        return mask(uint64_t(1) << (d.bits - 1), d.bits);
      return mask(static_cast<uint64_t>(static_cast<int64_t>(x)), d.bits);
    }
    if (x <= 0)
      return 0;
    if (x >= top)
      return mask(~uint64_t(0), d.bits);
    return static_cast<uint64_t>(x);
  }

  /// Runs thread `t` until it exits or waits; returns true on a fault.
  bool step(Thread &t) {
    const std::vector<Inst> &code = f.code;
    for (;;) {
      if (t.pc >= code.size()) {
        t.status = Status::Exited;
        return false;
      }
      if (++steps > maxSteps) {
        fault(t, kLaunchTimeout, "more than %llu instructions executed",
              static_cast<unsigned long long>(maxSteps));
        return true;
      }
      const Inst &in = code[t.pc];
      if (in.guard >= 0 && (t.r[in.guard] != 0) == in.guardNegated) {
        ++t.pc;
        continue;
      }
      unsigned bits = in.type.bits;
      const std::vector<Operand> &o = in.ops;
      switch (in.op) {
      case Op::Bra:
        t.pc = static_cast<size_t>(o[0].imm);
        continue;
      case Op::Ret:
        t.status = Status::Exited;
        return false;
      case Op::Bar:
        t.status = Status::AtBarrier;
        return false;
      case Op::Shfl:
      case Op::Mma:
        t.status = Status::AtWarpOp;
        return false;
      case Op::Mov:
        if (o[0].kind == Operand::Vec) {
          // Unpack: the source's pieces, lowest first.
          uint64_t v = value(t, o[1], bits);
          unsigned piece = bits / static_cast<unsigned>(o[0].regs.size());
          for (size_t i = 0; i < o[0].regs.size(); ++i)
            if (o[0].regs[i] >= 0)
              t.r[o[0].regs[i]] = mask(v >> (piece * i), piece);
        } else if (o[1].kind == Operand::Vec) {
          unsigned piece = bits / static_cast<unsigned>(o[1].regs.size());
          uint64_t v = 0;
          for (size_t i = 0; i < o[1].regs.size(); ++i)
            v |= mask(t.r[o[1].regs[i]], piece) << (piece * i);
          write(t, o[0], v, bits);
        } else {
          write(t, o[0], value(t, o[1], bits), bits);
        }
        break;
      case Op::Ld:
      case Op::St: {
        bool store = in.op == Op::St;
        const Operand &address = o[store ? 0 : 1];
        const Operand &data = o[store ? 1 : 0];
        uint64_t base = address.reg >= 0 ? t.r[address.reg] : 0;
        uint64_t at = base + static_cast<uint64_t>(address.imm);
        unsigned size = bits / 8;
        uint8_t *p = locate(t, in.space, at, size * in.vec, store);
        if (!p)
          return true;
        for (unsigned i = 0; i < in.vec; ++i) {
          int reg = data.kind == Operand::Vec ? data.regs[i] : data.reg;
          if (store) {
            uint64_t v = data.kind == Operand::Imm
                             ? static_cast<uint64_t>(data.imm)
                         : reg >= 0 ? t.r[reg]
                                    : 0;
            memcpy(p + i * size, &v, size); // little-endian host
          } else if (reg >= 0) {
            uint64_t v = 0;
            memcpy(&v, p + i * size, size);
            t.r[reg] = in.type.isSigned()
                           ? static_cast<uint64_t>(signExtend(v, bits))
                           : v;
          }
        }
        break;
      }
      case Op::Cvta:
        write(t, o[0], value(t, o[1], 64), 64);
        break;
      case Op::Cvt:
        write(t, o[0], convert(in, value(t, o[1], in.srcType.bits)),
              in.type.kind == 'h' ? 16 : bits);
        break;
      case Op::Setp: {
        unsigned b = in.type.bits;
        uint64_t x = value(t, o[1], b), y = value(t, o[2], b);
        bool r = in.type.isFloat()
                     ? compareFloat(in.cmp, asFloat(x), asFloat(y))
                     : compareInt(in.cmp, signExtend(x, b), signExtend(y, b), x,
                                  y, in.type.isSigned());
        bool q = !r;
        if (in.combine) {
          bool c = value(t, o[3], 1) != 0;
          auto apply = [&](bool v) {
            return in.combine == 1 ? v && c : in.combine == 2 ? v || c : v != c;
          };
          r = apply(r);
          q = apply(q);
        }
        write(t, o[0], r, 1);
        if (in.secondDest >= 0)
          t.r[in.secondDest] = q;
        break;
      }
      case Op::Selp:
        write(t, o[0],
              value(t, o[3], 1) ? value(t, o[1], bits) : value(t, o[2], bits),
              bits);
        break;
      case Op::Not:
        write(t, o[0],
              in.type.kind == 'p' ? !value(t, o[1], 1) : ~value(t, o[1], bits),
              bits);
        break;
      case Op::And:
      case Op::Or:
      case Op::Xor: {
        uint64_t x = value(t, o[1], bits), y = value(t, o[2], bits);
        write(t, o[0],
              in.op == Op::And  ? x & y
              : in.op == Op::Or ? x | y
                                : x ^ y,
              bits);
        break;
      }
      case Op::Shl:
      case Op::Shr: {
        uint64_t x = value(t, o[1], bits);
        unsigned n = static_cast<unsigned>(value(t, o[2], 32));
        uint64_t r;
        if (in.op == Op::Shl)
          r = n >= bits ? 0 : x << n;
        else if (in.type.isSigned())
          r = static_cast<uint64_t>(signExtend(x, bits) >>
                                    (n >= bits ? bits - 1 : n));
        else
          r = n >= bits ? 0 : x >> n;
        write(t, o[0], r, bits);
        break;
      }
      default:
        if (in.type.isFloat())
          floatOp(t, in);
        else
          intOp(t, in);
        break;
      }
      ++t.pc;
    }
  }

  void intOp(Thread &t, const Inst &in) {
    const std::vector<Operand> &o = in.ops;
    unsigned bits = in.type.bits;
    bool s = in.type.isSigned();
    uint64_t x = value(t, o[1], bits);
    uint64_t y = o.size() > 2 ? value(t, o[2], bits) : 0;
    int64_t sx = signExtend(x, bits), sy = signExtend(y, bits);
    unsigned outBits = bits;
    uint64_t r = 0;
    auto multiply = [&]() -> uint64_t {
      if (in.mode == 2) { // wide: the full product of two `bits` values
        outBits = bits * 2;
        return s ? static_cast<uint64_t>(sx * sy) : x * y;
      }
      if (in.mode == 1) { // hi
        if (bits == 64) {
          __int128 p =
              s ? static_cast<__int128>(sx) * sy
                : static_cast<__int128>(static_cast<unsigned __int128>(x) * y);
          return static_cast<uint64_t>(p >> 64);
        }
        return s ? static_cast<uint64_t>((sx * sy) >> bits) : (x * y) >> bits;
      }
      return x * y;
    };
    switch (in.op) {
    case Op::Add:
      r = x + y;
      break;
    case Op::Sub:
      r = x - y;
      break;
    case Op::Mul:
      r = multiply();
      break;
    case Op::Mad: {
      uint64_t p = multiply();
      r = p + value(t, o[3], outBits);
      break;
    }
    case Op::Div:
    case Op::Rem:
      // Division by zero does not trap on the GPU: all ones for the
      // quotient, the dividend for the remainder (documented).
      if (y == 0)
        r = in.op == Op::Div ? ~uint64_t(0) : x;
      else if (s && sy == -1 &&
               sx == signExtend(uint64_t(1) << (bits - 1), bits))
        r = in.op == Op::Div ? x : 0;
      else if (s)
        r = static_cast<uint64_t>(in.op == Op::Div ? sx / sy : sx % sy);
      else
        r = in.op == Op::Div ? x / y : x % y;
      break;
    case Op::Min:
      r = s ? static_cast<uint64_t>(sx < sy ? sx : sy) : (x < y ? x : y);
      break;
    case Op::Max:
      r = s ? static_cast<uint64_t>(sx > sy ? sx : sy) : (x > y ? x : y);
      break;
    default:
      break;
    }
    if (in.relu && s && signExtend(r, bits) < 0)
      r = 0;
    switch (in.op) {
    case Op::Neg:
      r = 0 - x;
      break;
    case Op::Abs:
      r = sx < 0 ? 0 - x : x;
      break;
    default:
      break;
    }
    write(t, o[0], r, outBits);
  }

  void floatOp(Thread &t, const Inst &in) {
    const std::vector<Operand> &o = in.ops;
    auto arg = [&](size_t i) {
      return flush(asFloat(value(t, o[i], 32)), in.ftz);
    };
    float r = 0;
    {
      ScopedRounding rounding(in.round);
      switch (in.op) {
      case Op::Add:
        r = arg(1) + arg(2);
        break;
      case Op::Sub:
        r = arg(1) - arg(2);
        break;
      case Op::Mul:
        r = arg(1) * arg(2);
        break;
      case Op::Fma:
      case Op::Mad:
        r = std::fma(arg(1), arg(2), arg(3));
        break;
      case Op::Div:
        r = arg(1) / arg(2);
        break;
      case Op::Min:
        r = std::fmin(arg(1), arg(2));
        break;
      case Op::Max:
        r = std::fmax(arg(1), arg(2));
        break;
      case Op::Neg:
        r = -arg(1);
        break;
      case Op::Abs:
        r = std::fabs(arg(1));
        break;
      case Op::Ex2:
        r = std::exp2(arg(1));
        break;
      case Op::Lg2:
        r = std::log2(arg(1));
        break;
      case Op::Rcp:
        r = 1.0f / arg(1);
        break;
      case Op::Sqrt:
        r = std::sqrt(arg(1));
        break;
      case Op::Rsqrt:
        r = 1.0f / std::sqrt(arg(1));
        break;
      case Op::Copysign: // copysign d, a, b: b's magnitude, a's sign
        r = std::copysign(arg(2), arg(1));
        break;
      default:
        break;
      }
    }
    if (in.sat)
      r = std::isnan(r) ? 0.0f : r < 0 ? 0.0f : r > 1 ? 1.0f : r;
    if (in.relu && r < 0)
      r = 0.0f;
    write(t, o[0], bitsOf(flush(r, in.ftz)), 32);
  }
};

//===----------------------------------------------------------------------===//
// The driver
//===----------------------------------------------------------------------===//

struct Driver {
  std::mutex lock;
  Memory memory;
  std::map<std::string, KernelStats> stats; // with MOE_PTX_EMU_STATS=1
  // Loaded modules, owned here: a program that exits without unloading
  // (a tool failing mid-run) leaves them reachable, not leaked.
  std::vector<std::unique_ptr<Module>> modules;
  int sticky = kSuccess; // a kernel fault poisons the context
  bool initialized = false;
  uint64_t maxSteps = uint64_t(1) << 32;
};

bool statsEnabled() {
  static bool enabled = [] {
    const char *v = getenv("MOE_PTX_EMU_STATS");
    return v && *v && strcmp(v, "0") != 0;
  }();
  return enabled;
}

void printStats();

Driver &driver() {
  static Driver *d = [] {
    auto *d = new Driver;
    if (const char *v = getenv("MOE_PTX_EMU_MAX_STEPS"))
      if (uint64_t n = strtoull(v, nullptr, 10))
        d->maxSteps = n;
    if (statsEnabled())
      atexit(printStats);
    return d;
  }();
  return *d;
}

/// One line per kernel, in name order: what it executed and moved.
void printStats() {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  fprintf(stderr, "moe-ptx-emu stats: %zu kernels\n", d.stats.size());
  fprintf(stderr, "  %8s %10s %14s %12s %12s %10s %8s  %s\n", "launches",
          "threads", "instructions", "read B", "written B", "16B acc", "mma",
          "kernel");
  for (auto &[name, s] : d.stats)
    fprintf(stderr, "  %8llu %10llu %14llu %12llu %12llu %10llu %8llu  %s\n",
            (unsigned long long)s.launches, (unsigned long long)s.threads,
            (unsigned long long)s.instructions,
            (unsigned long long)s.globalRead,
            (unsigned long long)s.globalWritten,
            (unsigned long long)s.vectorAccesses, (unsigned long long)s.mmas,
            name.c_str());
}

struct Event {
  std::chrono::steady_clock::time_point time;
};

int loadModule(Module **out, const void *image) {
  const auto *bytes = static_cast<const unsigned char *>(image);
  if (!image)
    return kInvalidValue;
  if (bytes[0] == 0x7f && bytes[1] == 'E' && bytes[2] == 'L' &&
      bytes[3] == 'F') {
    report("cannot run a cubin; compile with --device-code ptx");
    return kInvalidImage;
  }
  if (bytes[0] == 0x50 && bytes[1] == 0xed && bytes[2] == 0x55 &&
      bytes[3] == 0xba) {
    report("cannot run a fatbin (its PTX is compressed); compile with "
           "--device-code ptx");
    return kInvalidImage;
  }
  const char *text = static_cast<const char *>(image);
  Parser parser(tokenize(text));
  auto module = std::make_unique<Module>();
  if (!parser.parseModule(*module)) {
    report("PTX line %d: %s", parser.errorLine, parser.error.c_str());
    return kInvalidPtx;
  }
  *out = module.release();
  return kSuccess;
}

} // namespace

//===----------------------------------------------------------------------===//
// The exported driver API (the subset MoECudaRuntime.cpp binds)
//===----------------------------------------------------------------------===//

#define EXPORT extern "C" __attribute__((visibility("default")))

using CUdeviceptr = unsigned long long;

EXPORT int cuInit(unsigned) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  d.initialized = true;
  return kSuccess;
}

EXPORT int cuGetErrorString(int code, const char **text) {
  const char *name = errorName(code);
  if (!text || !name)
    return kInvalidValue;
  *text = name;
  return kSuccess;
}

EXPORT int cuDeviceGetCount(int *count) {
  if (!count)
    return kInvalidValue;
  *count = 1;
  return kSuccess;
}

EXPORT int cuDeviceGet(int *device, int ordinal) {
  if (!device || ordinal != 0)
    return kInvalidValue;
  *device = 0;
  return kSuccess;
}

EXPORT int cuDeviceGetName(char *name, int size, int) {
  if (!name || size <= 0)
    return kInvalidValue;
  snprintf(name, static_cast<size_t>(size), "moe-mlir PTX emulator (CPU)");
  return kSuccess;
}

EXPORT int cuDeviceGetAttribute(int *value, int attribute, int) {
  if (!value)
    return kInvalidValue;
  switch (attribute) {
  case 75: // compute capability major
    *value = 9;
    break;
  case 76: // minor
    *value = 0;
    break;
  case 1: // max threads per block
    *value = 1024;
    break;
  case 16: // multiprocessors
    *value = 1;
    break;
  case 10: // warp size
    *value = 32;
    break;
  default:
    *value = 0;
    break;
  }
  return kSuccess;
}

EXPORT int cuDevicePrimaryCtxRetain(void **context, int) {
  if (!context)
    return kInvalidValue;
  static int theContext;
  *context = &theContext;
  return kSuccess;
}

EXPORT int cuCtxSetCurrent(void *) { return kSuccess; }

EXPORT int cuCtxSynchronize() {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  return d.sticky;
}

EXPORT int cuModuleLoadData(void **module, const void *image) {
  if (!module)
    return kInvalidValue;
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  Module *m = nullptr;
  int r = loadModule(&m, image);
  if (m)
    d.modules.emplace_back(m);
  *module = m;
  return r;
}

EXPORT int cuModuleLoadDataEx(void **module, const void *image, unsigned, int *,
                              void **) {
  return cuModuleLoadData(module, image);
}

EXPORT int cuModuleUnload(void *module) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  for (auto it = d.modules.begin(); it != d.modules.end(); ++it)
    if (it->get() == module) {
      d.modules.erase(it);
      return kSuccess;
    }
  return kInvalidValue;
}

EXPORT int cuModuleGetFunction(void **function, void *module,
                               const char *name) {
  if (!function || !module || !name)
    return kInvalidValue;
  for (auto &f : static_cast<Module *>(module)->functions)
    if (f->name == name) {
      *function = f.get();
      return kSuccess;
    }
  report("no kernel named '%s' in the module", name);
  return kNotFound;
}

EXPORT int cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz,
                          unsigned bx, unsigned by, unsigned bz,
                          unsigned sharedBytes, void * /*stream*/,
                          void **kernelParams, void **extra) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  const auto *f = static_cast<const Function *>(function);
  if (!f || extra || (!kernelParams && !f->params.empty()))
    return kInvalidValue;
  if (sharedBytes != 0) {
    report("%s: dynamic shared memory is not emulated", f->name.c_str());
    return kInvalidValue;
  }
  const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
  uint64_t threads = uint64_t(bx) * by * bz;
  if (gx == 0 || gy == 0 || gz == 0 || threads == 0 || threads > 1024) {
    // As the driver: an empty grid or block is an error, not a no-op.
    report("%s: launch of grid (%u, %u, %u), block (%u, %u, %u)",
           f->name.c_str(), gx, gy, gz, bx, by, bz);
    return kInvalidValue;
  }
  if (f->maxThreads[0] && (bx > f->maxThreads[0] || by > f->maxThreads[1] ||
                           bz > f->maxThreads[2] ||
                           threads > uint64_t(f->maxThreads[0]) *
                                         f->maxThreads[1] * f->maxThreads[2])) {
    report("%s: block (%u, %u, %u) exceeds .maxntid %u, %u, %u",
           f->name.c_str(), bx, by, bz, f->maxThreads[0], f->maxThreads[1],
           f->maxThreads[2]);
    return kLaunchOutOfResources;
  }
  std::vector<uint8_t> params(f->paramBytes);
  for (size_t i = 0; i < f->params.size(); ++i)
    memcpy(params.data() + f->params[i].offset, kernelParams[i],
           f->params[i].size);
  Launch launch(*f, d.memory, grid, block, std::move(params), d.maxSteps);
  int r = launch.run();
  if (statsEnabled())
    d.stats[f->name] += launch.stats;
  if (r)
    d.sticky = r;
  return r;
}

EXPORT int cuStreamCreate(void **stream, unsigned) {
  if (!stream)
    return kInvalidValue;
  static int theStream;
  *stream = &theStream; // launches run to completion: one stream suffices
  return kSuccess;
}

EXPORT int cuStreamDestroy_v2(void *) { return kSuccess; }

EXPORT int cuStreamSynchronize(void *) { return cuCtxSynchronize(); }

EXPORT int cuStreamWaitEvent(void *, void *, unsigned) { return kSuccess; }

EXPORT int cuEventCreate(void **event, unsigned) {
  if (!event)
    return kInvalidValue;
  *event = new Event{std::chrono::steady_clock::now()};
  return kSuccess;
}

EXPORT int cuEventDestroy_v2(void *event) {
  delete static_cast<Event *>(event);
  return kSuccess;
}

EXPORT int cuEventRecord(void *event, void *) {
  if (!event)
    return kInvalidValue;
  static_cast<Event *>(event)->time = std::chrono::steady_clock::now();
  return kSuccess;
}

EXPORT int cuEventSynchronize(void *) { return cuCtxSynchronize(); }

EXPORT int cuEventElapsedTime(float *ms, void *start, void *end) {
  if (!ms || !start || !end)
    return kInvalidValue;
  *ms = std::chrono::duration<float, std::milli>(
            static_cast<Event *>(end)->time - static_cast<Event *>(start)->time)
            .count();
  return kSuccess;
}

EXPORT int cuMemAlloc_v2(CUdeviceptr *out, size_t bytes) {
  if (!out)
    return kInvalidValue;
  if (bytes == 0) {
    report("allocation of 0 bytes");
    return kInvalidValue;
  }
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  size_t rounded = (bytes + 255) / 256 * 256;
  void *p = aligned_alloc(256, rounded);
  if (!p)
    return kOutOfMemory;
  memset(p, 0xff, rounded);
  // Only the bytes asked for are addressable, not the rounding.
  d.memory.allocations[reinterpret_cast<uint64_t>(p)] = bytes;
  *out = reinterpret_cast<CUdeviceptr>(p);
  return kSuccess;
}

EXPORT int cuMemFree_v2(CUdeviceptr p) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  auto it = d.memory.allocations.find(p);
  if (it == d.memory.allocations.end())
    return kInvalidValue;
  d.memory.allocations.erase(it);
  free(reinterpret_cast<void *>(p));
  return kSuccess;
}

EXPORT int cuMemAllocAsync(CUdeviceptr *out, size_t bytes, void *) {
  return cuMemAlloc_v2(out, bytes);
}

EXPORT int cuMemFreeAsync(CUdeviceptr p, void *) { return cuMemFree_v2(p); }

EXPORT int cuDeviceGetDefaultMemPool(void **pool, int) {
  if (!pool)
    return kInvalidValue;
  static int thePool;
  *pool = &thePool;
  return kSuccess;
}

EXPORT int cuMemPoolSetAttribute(void *, int, void *) { return kSuccess; }

namespace {
/// Checks that a copy's device side lies in one allocation; host pointers
/// (outside every allocation) are the caller's business, as with unified
/// addressing.
int checkCopy(Driver &d, uint64_t p, size_t bytes, bool mustBeDevice,
              const char *what) {
  if (d.memory.contains(p, bytes))
    return kSuccess;
  if (!mustBeDevice && !d.memory.isDevice(p) &&
      !d.memory.isDevice(p + bytes - 1))
    return kSuccess;
  report("%s of %zu bytes at 0x%llx overruns its device allocation", what,
         bytes, static_cast<unsigned long long>(p));
  return kInvalidValue;
}
} // namespace

EXPORT int cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes,
                         void *) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  if (int r = checkCopy(d, dst, bytes, false, "copy destination"))
    return r;
  if (int r = checkCopy(d, src, bytes, false, "copy source"))
    return r;
  memmove(reinterpret_cast<void *>(dst), reinterpret_cast<void *>(src), bytes);
  return kSuccess;
}

EXPORT int cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t bytes) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  if (int r = checkCopy(d, dst, bytes, true, "host-to-device copy"))
    return r;
  memcpy(reinterpret_cast<void *>(dst), src, bytes);
  return kSuccess;
}

EXPORT int cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t bytes) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  if (int r = checkCopy(d, src, bytes, true, "device-to-host copy"))
    return r;
  memcpy(dst, reinterpret_cast<void *>(src), bytes);
  return kSuccess;
}

namespace {
template <typename T> int memsetN(CUdeviceptr dst, T value, size_t count) {
  Driver &d = driver();
  std::lock_guard<std::mutex> g(d.lock);
  if (d.sticky)
    return d.sticky;
  if (dst % sizeof(T) != 0) {
    report("memset of %zu-byte values at misaligned address 0x%llx", sizeof(T),
           dst);
    return kInvalidValue;
  }
  if (int r = checkCopy(d, dst, count * sizeof(T), true, "memset"))
    return r;
  T *p = reinterpret_cast<T *>(dst);
  for (size_t i = 0; i < count; ++i)
    p[i] = value;
  return kSuccess;
}
} // namespace

EXPORT int cuMemsetD32Async(CUdeviceptr dst, unsigned value, size_t count,
                            void *) {
  return memsetN<uint32_t>(dst, value, count);
}

EXPORT int cuMemsetD16Async(CUdeviceptr dst, unsigned short value, size_t count,
                            void *) {
  return memsetN<uint16_t>(dst, value, count);
}
