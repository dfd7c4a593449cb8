# moe-mlir: the user's entry point.
#   make run   set up, build, and run the main job on the default example
#   make test  set up, build, and run every test suite
#   make docs  refresh the committed reference docs from ODS

BUILD ?= build
LLVM_PREFIX ?= /usr/lib/llvm-22
EXAMPLE ?= examples/mixtral_layer.mlir
CMAKE_FLAGS ?=

.PHONY: all setup configure build run test docs clean

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
	$(BUILD)/bin/moe-opt --moe-expand-layer $(EXAMPLE)

test: build
	@scripts/run-tests.sh $(BUILD)

docs: build
	cp $(BUILD)/docs/MoE/*.md docs/reference/

clean:
	rm -rf $(BUILD)
