// onednn_gemm: the practical compute limit for an expert GEMM on this CPU.
//
//   onednn_gemm [--preset NAME|all] [--tokens 1,16,128,1024]
//               [--dtype f32|bf16] [--json]
//
// Times oneDNN's matmul at M = T*k, K = d, N = ffn for each preset, with the
// weights (given in the checkpoint's [N, K] layout) reordered once into the
// blocked layout oneDNN picks ("prepacked"); activations are f32 (bf16 for
// --dtype bf16, converted outside the timed region), the output f32. Prints
// the median over repeated calls. Threads come from OMP_NUM_THREADS.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct Preset {
  const char *name;
  long d, ffn, k;
};
const Preset kPresets[] = {{"mixtral-small", 1024, 3584, 2},
                           {"olmoe-like", 2048, 1024, 8},
                           {"deepseek-like", 2048, 1408, 6},
                           {"switch-like", 768, 3072, 1}};

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

double timeGemm(long M, long K, long N, dt type, double minSeconds) {
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  dnnl::memory::desc srcDesc({M, K}, type, tag::ab);
  dnnl::memory::desc weiAny({K, N}, type, tag::any);
  dnnl::memory::desc dstDesc({M, N}, dt::f32, tag::ab);
  dnnl::matmul::desc opDesc(srcDesc, weiAny, dstDesc);
  dnnl::matmul::primitive_desc pd(opDesc, eng);

  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // Checkpoint layout: W is [N, K] row-major, i.e. K x N with tag ba.
  dnnl::memory weiF32({{K, N}, dt::f32, tag::ba}, eng);
  dnnl::memory srcF32({{M, K}, dt::f32, tag::ab}, eng);
  for (float *p : {static_cast<float *>(weiF32.get_data_handle()),
                   static_cast<float *>(srcF32.get_data_handle())}) {
    size_t n = p == weiF32.get_data_handle() ? size_t(K) * N : size_t(M) * K;
    for (size_t i = 0; i < n; ++i)
      p[i] = uni(rng);
  }
  dnnl::memory wei(pd.weights_desc(), eng);
  dnnl::reorder(weiF32, wei).execute(stream, weiF32, wei);
  dnnl::memory src(pd.src_desc(), eng);
  dnnl::reorder(srcF32, src).execute(stream, srcF32, src);
  dnnl::memory dst(pd.dst_desc(), eng);
  dnnl::matmul matmul(pd);
  auto run = [&] {
    matmul.execute(stream, {{DNNL_ARG_SRC, src},
                            {DNNL_ARG_WEIGHTS, wei},
                            {DNNL_ARG_DST, dst}});
    stream.wait();
  };
  run();
  std::vector<double> times;
  double total = 0;
  while (times.size() < 7 || total < minSeconds) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    double s = std::chrono::duration<double>(
                   std::chrono::steady_clock::now() - t0)
                   .count();
    times.push_back(s);
    total += s;
    if (times.size() > 5000)
      break;
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  std::string preset = "all", tokens = "1,16,128,1024", dtype = "f32";
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--preset" && i + 1 < argc)
      preset = argv[++i];
    else if (a == "--tokens" && i + 1 < argc)
      tokens = argv[++i];
    else if (a == "--dtype" && i + 1 < argc)
      dtype = argv[++i];
    else if (a == "--json")
      json = true;
    else {
      std::fprintf(stderr, "usage: onednn_gemm [--preset NAME|all] "
                           "[--tokens LIST] [--dtype f32|bf16] [--json]\n");
      return 2;
    }
  }
  if (dtype != "f32" && dtype != "bf16") {
    std::fprintf(stderr, "onednn_gemm: --dtype must be f32 or bf16\n");
    return 2;
  }
  std::vector<long> counts;
  for (char *t = std::strtok(tokens.data(), ","); t; t = std::strtok(nullptr, ","))
    counts.push_back(std::atol(t));
  const char *env = std::getenv("OMP_NUM_THREADS");
  int threads = env ? std::atoi(env) : 0;
  bool any = false;
  for (const Preset &p : kPresets) {
    if (preset != "all" && preset != p.name)
      continue;
    any = true;
    for (long T : counts) {
      if (T < 1)
        continue;
      long M = T * p.k;
      double s = timeGemm(M, p.d, p.ffn, dtype == "f32" ? dt::f32 : dt::bf16,
                          0.5);
      double gflops = 2.0 * M * p.d * p.ffn / s / 1e9;
      if (json)
        std::printf("{\"baseline\": \"onednn_gemm\", \"preset\": \"%s\", "
                    "\"tokens\": %ld, \"dtype\": \"%s\", \"threads\": %d, "
                    "\"m\": %ld, \"k\": %ld, \"n\": %ld, \"ms_median\": %.4f, "
                    "\"gflops\": %.1f}\n",
                    p.name, T, dtype.c_str(), threads, M, p.d, p.ffn, s * 1e3,
                    gflops);
      else
        std::printf("%-14s T %5ld  M %5ld K %5ld N %5ld  %s  %9.3f ms  "
                    "%7.1f GFLOP/s\n",
                    p.name, T, M, p.d, p.ffn, dtype.c_str(), s * 1e3, gflops);
      std::fflush(stdout);
    }
  }
  if (!any) {
    std::fprintf(stderr, "onednn_gemm: unknown preset '%s'\n", preset.c_str());
    return 2;
  }
  return 0;
}
