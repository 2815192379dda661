// What the bf16 kernel tests share (test_gemm_bf16, test_conv_bf16): the run-time paths to test and a scope that caps
// the path. Reads tessera's path choice only; no kernel is called here.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include <tessera/kernels/cpu/gemm_bf16_pack.hpp>

namespace bf16_test {

/// The paths to test: every one up to what the CPU offers; the others are named once on stdout as skipped
/// ("<test>: SKIPPED path <name>: not on this CPU<note>").
inline std::vector<tessera::bf16_isa> paths(const char* test, const char* note = "") {
  std::vector<tessera::bf16_isa> v;
  for (int i = 0; i <= int(tessera::bf16_isa::amx_bf16); ++i) {
    if (i <= int(tessera::bf16_isa_supported())) {
      v.push_back(tessera::bf16_isa(i));
    } else {
      static bool told[4] = {};
      if (!told[i]) {
        told[i] = true;
        std::printf("%s: SKIPPED path %s: not on this CPU%s\n", test, std::string(tessera::bf16_isa_name(tessera::bf16_isa(i))).c_str(),
                    note);
      }
    }
  }
  return v;
}

/// Sets the cap, and puts back the one before (TESSERA_BF16_ISA's) afterwards.
struct isa_scope {
  int before = tessera::detail::bf16::limit().load();
  explicit isa_scope(tessera::bf16_isa i) { tessera::set_bf16_isa_limit(i); }
  ~isa_scope() { tessera::set_bf16_isa_limit(tessera::bf16_isa(before)); }
};

}  // namespace bf16_test
