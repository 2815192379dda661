# tessera's pruning masks against torch.nn.utils.prune (PyTorch 1.13): for several seeds and sequences of pruning calls
# (unstructured by count and fraction, repeated so that PruningContainer combines them, structured L1 / L2 / max along
# dims 0, 1 and -1, global over several parameters, mixed), this script runs the calls in torch and the program
# (tests/prune/prune_ops.cpp, the first argument) runs them in tessera on the same weights; every mask must be equal.
# The weights are random floats (no ties: torch's topk leaves the order of ties unspecified). Exit 77 (skipped) when
# torch is missing.
import math
import os
import subprocess
import sys

try:
    import torch
    import torch.nn.utils.prune as P
except ImportError as e:
    print(f"SKIPPED: torch is not importable by {sys.executable}: {e} (Debian: apt-get install python3-torch)")
    sys.exit(77)

SCENARIOS = [
    ["l1 lin.weight 0.3", "l1 lin.weight 0.5", "l1 lin.weight 4"],
    ["l1 conv.weight 0.3", "ln conv.weight 0.5 2 0", "ln conv.weight 0.5 1 1", "ln conv.weight 1 inf 0"],
    ["global lin2.weight,conv.bias 0.6", "global lin2.weight,conv.bias 0.25"],
    ["ln lin.weight 0.35 1 0", "l1 lin.weight 0.2", "global lin.weight,lin2.weight,conv.weight 0.5"],
    ["ln conv.weight 3 2 -1", "ln lin2.weight 0.5 1 1", "l1 lin.bias 0.5", "l1 lin.bias 0.5"],
    ["l1 conv.weight 0.0", "l1 lin2.weight 1.0", "ln lin.weight 0 2 0", "global conv.weight,lin.bias 7"],
]


def amount(s):
    return float(s) if "." in s else int(s)


def dump(f, name, t):
    f.write(name + " " + " ".join(str(d) for d in t.shape) + "\n")
    f.write(" ".join(repr(float(v)) for v in t.detach().reshape(-1)) + "\n")


def main():
    program = sys.argv[1]
    failures = 0
    cases = 0
    for seed in range(4):
        for k, ops in enumerate(SCENARIOS):
            torch.manual_seed(seed)
            mods = {"lin": torch.nn.Linear(5, 9), "conv": torch.nn.Conv2d(3, 6, 3), "lin2": torch.nn.Linear(7, 4)}
            with open("weights.txt", "w") as f:
                for m in ("lin", "conv", "lin2"):
                    for attr in ("weight", "bias"):
                        dump(f, f"{m}.{attr}", getattr(mods[m], attr))
            with open("ops.txt", "w") as f:
                f.write("\n".join(ops) + "\n")
            for op in ops:
                parts = op.split()
                if parts[0] == "l1":
                    m, attr = parts[1].split(".")
                    P.l1_unstructured(mods[m], attr, amount(parts[2]))
                elif parts[0] == "ln":
                    m, attr = parts[1].split(".")
                    n = math.inf if parts[3] == "inf" else float(parts[3])
                    P.ln_structured(mods[m], attr, amount(parts[2]), n=n, dim=int(parts[4]))
                else:
                    params = [(mods[p.split(".")[0]], p.split(".")[1]) for p in parts[1].split(",")]
                    P.global_unstructured(params, pruning_method=P.L1Unstructured, amount=amount(parts[2]))
            want = {}
            for m, mod in mods.items():
                for attr in ("weight", "bias"):
                    if hasattr(mod, attr + "_mask"):
                        want[f"{m}.{attr}"] = getattr(mod, attr + "_mask").reshape(-1).tolist()
            if os.path.exists("masks.txt"):
                os.remove("masks.txt")
            r = subprocess.run([program, "."], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"seed {seed}, scenario {k}: the program failed ({r.returncode}): {r.stderr.strip()}")
                failures += 1
                continue
            got = {}
            with open("masks.txt") as f:
                lines = f.read().splitlines()
            for i in range(0, len(lines), 2):
                got[lines[i].split()[0]] = [float(v) for v in lines[i + 1].split()]
            cases += 1
            if sorted(got) != sorted(want):
                print(f"seed {seed}, scenario {k}: masked parameters differ: tessera {sorted(got)}, torch {sorted(want)}")
                failures += 1
                continue
            for name in want:
                diff = sum(1 for a, b in zip(got[name], want[name]) if a != b)
                if diff or len(got[name]) != len(want[name]):
                    print(f"seed {seed}, scenario {k} ({'; '.join(ops)}): {name}: {diff} of {len(want[name])} mask entries differ")
                    failures += 1
    print(f"{cases} scenario runs compared with torch.nn.utils.prune {torch.__version__}: {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
