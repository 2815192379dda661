# bench/compare.d/machine.py: what the run ran on. The CPU kind (named from the first processor of /proc/cpuinfo,
# or the copy bench/compare keeps in the results folder: "AMD Zen 3", "Intel Sapphire Rapids", else a fallback
# naming vendor, family, model and vector ISA), which decides the block of docs/performance.md a run writes and its
# plot folder (kind_slug); and the Machine table of that block (CPU, caches, vector flags, memory, OS, compiler, the
# kernel paths that ran: int8 GEMM path, bf16, the build's -march, the thread settings; the peers' versions, the
# measured FMA peak, the triad bandwidth, the GPU). Reads the system (lscpu, dpkg-query, the compiler of the build's
# CMake cache, include/tessera/kernels) and the results folder, never writes. Standard library only.
import os, re, subprocess

from tables import table

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")  # the repository (git, include/)


# ---- the CPU kind ---------------------------------------------------------------------------------------------------
# Figures from different CPU kinds are not comparable (cores, vector units, the kernel paths that run), so every kind
# has its own block in the document. The kind comes from the first processor of /proc/cpuinfo as the run saw it
# (bench/compare copies it to the results folder as `cpuinfo`): vendor, family and model, named after Linux's tables
# (arch/x86/kernel/cpu/amd.c for the Zen generations, intel-family.h for Intel's family 6); anything else is
# "<vendor> family F model M (<vector ISA>)".
AMD_ZEN = {  # family: [(first model, last model, name)]
    0x17: [(0x00, 0x2f, "Zen"), (0x50, 0x5f, "Zen"), (0x30, 0x4f, "Zen 2"), (0x60, 0x7f, "Zen 2"), (0x90, 0x91, "Zen 2"),
           (0xa0, 0xaf, "Zen 2")],
    0x19: [(0x00, 0x0f, "Zen 3"), (0x20, 0x5f, "Zen 3"), (0x10, 0x1f, "Zen 4"), (0x60, 0xaf, "Zen 4")],
    0x1a: [(0x00, 0x0f, "Zen 5"), (0x20, 0x2f, "Zen 5"), (0x40, 0x4f, "Zen 5"), (0x70, 0x7f, "Zen 5")],
}
INTEL_FAM6 = {0x3c: "Haswell", 0x45: "Haswell", 0x46: "Haswell", 0x3f: "Haswell-EP", 0x3d: "Broadwell", 0x47: "Broadwell",
              0x4f: "Broadwell-EP", 0x56: "Broadwell-DE", 0x4e: "Skylake", 0x5e: "Skylake", 0x8e: "Kaby Lake",
              0x9e: "Coffee Lake", 0xa5: "Comet Lake", 0xa6: "Comet Lake", 0x7d: "Ice Lake", 0x7e: "Ice Lake",
              0x6a: "Ice Lake-SP", 0x6c: "Ice Lake-SP", 0x8c: "Tiger Lake", 0x8d: "Tiger Lake", 0xa7: "Rocket Lake",
              0x97: "Alder Lake", 0x9a: "Alder Lake", 0xb7: "Raptor Lake", 0xba: "Raptor Lake", 0xbf: "Raptor Lake",
              0xaa: "Meteor Lake", 0xac: "Meteor Lake", 0xc5: "Arrow Lake", 0xc6: "Arrow Lake", 0xbd: "Lunar Lake",
              0x8f: "Sapphire Rapids", 0xcf: "Emerald Rapids", 0xad: "Granite Rapids", 0xae: "Granite Rapids",
              0xaf: "Sierra Forest"}


def cpuinfo_fields(text):
    """The first processor's fields of a /proc/cpuinfo text (the lines up to the first blank one)."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        k, sep, v = line.partition(":")
        if sep:
            out.setdefault(k.strip(), v.strip())
    return out


def vector_isa(flags):
    """The widest vector instruction set in a flags set, in words ("AVX-512 + AMX", "AVX2", ...)."""
    if "avx512f" in flags:
        return "AVX-512" + (" + AMX" if "amx_tile" in flags else "")
    for flag, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"), ("sve", "SVE"), ("asimd", "NEON")):
        if flag in flags:
            return name
    return "no vector flags"


def cpu_kind(fields):
    """The CPU kind's name ("AMD Zen 3", "Intel Sapphire Rapids", or the fallback) from cpuinfo_fields()."""
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vendor_id = fields.get("vendor_id", "")
    try:
        fam, model = int(fields.get("cpu family", "")), int(fields.get("model", ""))
    except ValueError:
        fam = model = None
    if vendor_id in ("AuthenticAMD", "HygonGenuine") or vendor_id == "GenuineIntel":
        vendor = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel", "HygonGenuine": "Hygon"}[vendor_id]
        if vendor == "AMD" and fam is not None:
            for lo, hi, name in AMD_ZEN.get(fam, []):
                if lo <= model <= hi:
                    return f"AMD {name}"
        if vendor == "Intel" and fam == 6 and model in INTEL_FAM6:
            return f"Intel {INTEL_FAM6[model]}"
        if vendor == "Intel" and fam == 6 and model == 0x55:
            return "Intel " + ("Cooper Lake" if "avx512_bf16" in flags else "Cascade Lake" if "avx512_vnni" in flags
                               else "Skylake-SP")
        return f"{vendor} family {fam} model {model} ({vector_isa(flags)})"
    if "CPU implementer" in fields:  # Arm: no family/model, an implementer and a part number
        return f"Arm implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')} ({vector_isa(flags)})"
    return f"{vendor_id or os.uname().machine} family {fam if fam is not None else '?'} model " \
           f"{model if model is not None else '?'} ({vector_isa(flags)})"


def kind_slug(kind):
    """A folder name for the kind's plots: "AMD Zen 3" -> "amd-zen-3"."""
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "cpu"


def run_cpuinfo(results):
    """The cpuinfo fields of the run: the copy bench/compare made in the results folder, else this machine's."""
    for p in ((os.path.join(results, "cpuinfo"),) if results else ()) + ("/proc/cpuinfo",):
        try:
            f = cpuinfo_fields(open(p).read())
        except OSError:
            continue
        if f:
            return f
    return {}



# ---- machine ----------------------------------------------------------------------------------------------------------
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pkg(name):
    v = sh("dpkg-query", "-W", "-f=${Version}", name)
    return v.split("+")[0].split("-")[0] if v else ""


def compiler(build_dir):
    cache = os.path.join(build_dir, "CMakeCache.txt")
    m = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.+)$", open(cache).read(), re.M) if os.path.exists(cache) else None
    return m.group(1) if m else ""


def int8_path(db, flags):
    """The int8 GEMM path that ran, and who said so: bench_gemm_s8's context, else the line an example printed
    ("int8 (kernels: X)"), else what the CPU flags imply (the rule of tessera's int8_isa_supported())."""
    ctx = db.contexts.get("gemm_s8", {}).get("int8_path")
    if ctx:
        return f"{ctx} (bench_gemm_s8's default path)"
    said = db.text("int8_kernels").split()
    if said:
        return f"{said[0]} (printed by {said[1] if len(said) > 1 else 'an example'})"
    guess = ("amx" if {"amx_tile", "amx_int8", "avx512bw", "avx512_vnni"} <= flags else
             "avx512_vnni" if {"avx512f", "avx512bw", "avx512_vnni"} <= flags else "avx2_u7" if "avx2" in flags else "portable")
    return f"{guess} (what the CPU flags imply; no int8 program ran)"


def build_isa(build_dir):
    """What -march the build used and the vector extensions it enables, from the build's compiler and cache."""
    cache = os.path.join(build_dir, "CMakeCache.txt")
    text = open(cache).read() if os.path.exists(cache) else ""
    native = re.search(r"^TESSERA_NATIVE:\w+=(\w+)", text, re.M)
    if native and native.group(1).upper() in ("OFF", "0", "FALSE", "NO"):
        return "the compiler's default target (TESSERA_NATIVE=OFF: no -march)"
    cxx = compiler(build_dir)
    if not cxx:
        return "-march=native (no CMake cache to ask the compiler)"
    march = re.search(r"^\s*-march=\s*(\S+)", sh(cxx, "-march=native", "-Q", "--help=target"), re.M)
    macros = set(re.findall(r"#define (__\w+__) 1", sh(cxx, "-march=native", "-dM", "-E", "-x", "c++", "/dev/null")))
    names = [n for m, n in (("__AVX2__", "AVX2"), ("__FMA__", "FMA"), ("__AVX512F__", "AVX-512F"), ("__AVX512BW__", "BW"),
                            ("__AVX512VNNI__", "VNNI"), ("__AVXVNNI__", "AVX-VNNI"), ("__AVX512BF16__", "AVX-512 BF16"),
                            ("__AVX512FP16__", "AVX-512 FP16"), ("__AMX_INT8__", "AMX-INT8"), ("__AMX_BF16__", "AMX-BF16"))
             if m in macros]
    isa = ", ".join(names) + ("" if "AVX-512F" in names else "; no AVX-512") if names else "no AVX2"
    return f"-march=native ({march.group(1) if march else '?'} to this compiler): {isa}"


def bf16_path(db, flags):
    """The bf16 GEMM's path: the one bench_gemm_bf16 ran (its context field bf16_isa), else what the CPU flags imply."""
    ran = db.contexts.get("gemm_bf16", {}).get("bf16_isa")
    if ran:
        return f"{ran} (bench_gemm_bf16)"
    best = ("amx_bf16" if {"amx_bf16", "amx_tile"} <= flags else "avx512_bf16" if "avx512_bf16" in flags
            else "avx2" if "avx2" in flags else "portable")
    return f"{best} (what the CPU flags imply; no bf16 program ran)"


def threads_setting(db):
    """The OpenMP wait policy and the adaptive team of the run (bench/compare's copy of its environment)."""
    env = dict(l.split("=", 1) for l in db.text("env").splitlines() if "=" in l)
    wp = env.get("OMP_WAIT_POLICY")
    out = [f"OMP_WAIT_POLICY={wp}" if wp else "OMP_WAIT_POLICY unset (libgomp: spin about 300k iterations, then sleep)"]
    if env.get("GOMP_SPINCOUNT"):
        out.append(f"GOMP_SPINCOUNT={env['GOMP_SPINCOUNT']}")
    at = env.get("TESSERA_ADAPTIVE_THREADS")
    out.append(f"TESSERA_ADAPTIVE_THREADS={at} (adaptive team {'off' if at == '0' else 'on'})" if at is not None
               else "TESSERA_ADAPTIVE_THREADS unset (adaptive team on)")
    if env.get("OMP_NUM_THREADS"):
        out.append(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    if "contended" in db.text("workloads").split():
        out.append("the contended workload sets its own per case")
    return ", ".join(out)


def kernel_paths(db, build_dir, flags):
    env = dict(l.split("=", 1) for l in db.text("env").splitlines() if "=" in l)
    cap = f", capped by TESSERA_INT8_ISA={env['TESSERA_INT8_ISA']}" if env.get("TESSERA_INT8_ISA") else ""
    cap16 = f", capped by TESSERA_BF16_ISA={env['TESSERA_BF16_ISA']}" if env.get("TESSERA_BF16_ISA") else ""
    return (f"int8 GEMM: {int8_path(db, flags)}{cap}; bf16 GEMM: {bf16_path(db, flags)}{cap16}; build: {build_isa(build_dir)}; "
            f"threads: {threads_setting(db)}")


def machine(db, build_dir, peak):
    lscpu = {}
    for line in sh("lscpu").splitlines():
        k, _, v = line.partition(":")
        lscpu[k.strip()] = v.strip()
    flags = set(run_cpuinfo(db.results).get("flags", "").split())
    wanted = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"]
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f"{kb / 1048576:.1f} GiB"
    except (OSError, AttributeError):
        pass
    osname = ""
    try:
        osname = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read()).group(1)
    except (OSError, AttributeError):
        pass
    cxx, cxx_path = "", compiler(build_dir)
    if cxx_path:
        cxx = sh(cxx_path, "--version").splitlines()[0] if sh(cxx_path, "--version") else ""
    cpus = lscpu.get("CPU(s)", str(os.cpu_count()))
    topo = f"{lscpu.get('Socket(s)', '?')} socket × {lscpu.get('Core(s) per socket', '?')} cores × " \
           f"{lscpu.get('Thread(s) per core', '?')} thread(s) per core"
    hv = f" ({lscpu['Hypervisor vendor']} guest)" if lscpu.get("Hypervisor vendor") else ""
    rows = [("CPU", f"{lscpu.get('Model name', '?')}{hv}: {cpus} logical CPUs ({topo})"),
            ("caches", ", ".join(f"{k} {lscpu[k]}" for k in ("L1d cache", "L2 cache", "L3 cache") if k in lscpu)),
            ("vector flags", " ".join(f for f in wanted if f in flags) or "—"),
            ("memory", mem), ("OS", f"{osname}, Linux {os.uname().release}"),
            ("compiler", f"{cxx}; benchmarks -O3 -march=native, examples -O2 -march=native, Release")]
    peers = []
    for label, p in (("OpenBLAS", "libopenblas0"), ("oneDNN", "libdnnl2"), ("Eigen", "libeigen3-dev"),
                     ("Google Benchmark", "libbenchmark-dev")):
        v = pkg(p)
        if v:
            peers.append(f"{label} {v}")
    tv = db.text("have_torch")
    if tv:
        peers.append(f"PyTorch {tv} (Debian's python3-torch, /usr/bin/python3)")
    rows.append(("kernel paths", kernel_paths(db, build_dir, flags)))
    rows.append(("peers", ", ".join(peers)))
    if peak:
        rows.append(("measured FMA peak (bench_peak)", ", ".join(f"{v / 1e9:.0f} GFLOP/s on {t} thread{'s' if t > 1 else ''}"
                                                          for t, v in sorted(peak.items()))))
    tri = db.get("BM_triad", n=16777216, threads=2)
    if tri:
        rows.append(("triad bandwidth (bench_elementwise)", f"{tri.rate('bytes_per_second') / 1e9:.1f} GB/s at 16M floats, 2 threads"))
    gpu = db.text("gpu.txt")
    rows.append(("GPU", gpu if gpu else "none (nvidia-smi lists no GPU)"))
    return table(["", ""], rows)
