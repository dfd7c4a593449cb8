# moe-mlir: the user's entry point.
#   make run   set up, build, then import, compile, run and check the default
#              example model (EXAMPLE_MODEL), printing the expert load
#   make test  set up, build, and run every test suite
#   make docs  refresh the committed reference docs from ODS
#   make test-sanitizers
#              the same suite on an ASan + UBSan build (SANITIZE_BUILD)

BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
LLVM_PREFIX ?= /usr/lib/llvm-22
# The default example: a two-layer Mixtral-style model (Hugging Face layout)
# with its expected outputs.
EXAMPLE_MODEL ?= testdata/golden/mixtral_t33_2layers
CMAKE_FLAGS ?=

.PHONY: all setup configure build run test test-sanitizers docs clean

all: build

setup:
	@scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -G Ninja -S . -B $(BUILD) \
	  -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
	  -DLLVM_USE_LINKER=lld \
	  -DMLIR_DIR=$(LLVM_PREFIX)/lib/cmake/mlir \
	  -DLLVM_EXTERNAL_LIT=$(LLVM_PREFIX)/bin/lit \
	  $(CMAKE_FLAGS)

configure: setup $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD)

run: build
	$(BUILD)/bin/moe-run --model $(EXAMPLE_MODEL) --check $(EXAMPLE_MODEL)/io.safetensors

test: build
	@scripts/run-tests.sh $(BUILD)

test-sanitizers: setup
	@$(MAKE) --no-print-directory BUILD=$(SANITIZE_BUILD) \
	  CMAKE_FLAGS="-DMOE_SANITIZE=ON $(CMAKE_FLAGS)" build
	@scripts/run-tests.sh $(SANITIZE_BUILD)

docs: build
	cp $(BUILD)/docs/MoE/*.md docs/reference/

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD)
