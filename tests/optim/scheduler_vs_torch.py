# tessera's learning-rate schedulers against torch.optim.lr_scheduler (PyTorch 1.13): the program
# (tests/optim/scheduler_sequences.cpp, the first argument) prints tessera's sequences; this script builds the same
# schedulers in torch, steps them the same number of times and compares every value within 1e-6 relative.
# Exit 77 (skipped) when torch is missing.
import math
import subprocess
import sys
import warnings

try:
    import torch
except ImportError as e:
    print(f"SKIPPED: torch is not importable by {sys.executable}: {e} (Debian: apt-get install python3-torch)")
    sys.exit(77)

warnings.filterwarnings("ignore")
S = torch.optim.lr_scheduler


def param():
    return torch.nn.Parameter(torch.zeros(3))


def sgd(lr, **kw):
    return torch.optim.SGD([param()], lr=lr, **kw)


def run(opt, sched, steps, step_arg=None):
    out = [opt.param_groups[0]["lr"]]
    for k in range(steps):
        opt.step()
        if step_arg is None:
            sched.step()
        else:
            sched.step(step_arg(k))
        out.append(opt.param_groups[0]["lr"] if isinstance(sched, S.ReduceLROnPlateau) else sched.get_last_lr()[0])
    return out


def one_cycle(opt, steps, key, **kw):
    sched = S.OneCycleLR(opt, **kw)
    lr, mom = [sched.get_last_lr()[0]], [key(opt)]
    for _ in range(steps):
        opt.step()
        sched.step()
        lr.append(sched.get_last_lr()[0])
        mom.append(key(opt))
    return lr, mom


def metric(k):
    return 1.0 / (1.0 + 0.3 * k) + 0.08 * math.sin(1.7 * k) + (0.2 if k % 7 == 3 else 0.0)


def torch_sequences():
    r = {}
    o = sgd(0.1); r["step"] = run(o, S.StepLR(o, step_size=3, gamma=0.5), 40)
    o = sgd(0.37); r["step_b"] = run(o, S.StepLR(o, step_size=7, gamma=0.33), 50)
    o = sgd(0.2); r["multistep"] = run(o, S.MultiStepLR(o, milestones=[11, 2, 5, 5, 30], gamma=0.3), 40)
    o = sgd(0.5); r["exp"] = run(o, S.ExponentialLR(o, gamma=0.93), 60)
    o = sgd(0.1); r["cos"] = run(o, S.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 45)
    o = sgd(0.05); r["cos_b"] = run(o, S.CosineAnnealingLR(o, T_max=17), 60)
    o = sgd(0.1); r["linear"] = run(o, S.LinearLR(o, start_factor=0.25, total_iters=8), 20)
    o = sgd(0.3); r["linear_decay"] = run(o, S.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=13), 25)
    mom = lambda o: o.param_groups[0]["momentum"]
    beta1 = lambda o: o.param_groups[0]["betas"][0]
    r["onecycle_cos"], r["onecycle_cos.momentum"] = one_cycle(sgd(0.01, momentum=0.9), 50, mom, max_lr=0.8, total_steps=50)
    r["onecycle_linear3"], r["onecycle_linear3.momentum"] = one_cycle(
        sgd(0.01, momentum=0.9), 37, mom, max_lr=0.5, total_steps=37, pct_start=0.25, anneal_strategy="linear",
        div_factor=10.0, final_div_factor=100.0, three_phase=True)
    r["onecycle_adam"], r["onecycle_adam.momentum"] = one_cycle(
        torch.optim.Adam([param()], lr=0.01), 36, beta1, max_lr=0.03, epochs=4, steps_per_epoch=9, pct_start=0.4,
        base_momentum=0.8, max_momentum=0.97, three_phase=True)
    o = sgd(0.1)
    a = S.LinearLR(o, start_factor=0.1, total_iters=5)
    b = S.CosineAnnealingLR(o, T_max=20, eta_min=0.002)
    r["sequential"] = run(o, S.SequentialLR(o, [a, b], milestones=[5]), 40)
    o = sgd(0.4)
    a = S.StepLR(o, step_size=2, gamma=0.5)
    b = S.ExponentialLR(o, gamma=0.9)
    c = S.MultiStepLR(o, milestones=[3, 6], gamma=0.7)
    r["sequential3"] = run(o, S.SequentialLR(o, [a, b, c], milestones=[4, 10]), 25)
    o = sgd(0.1)
    r["chained"] = run(o, S.ChainedScheduler([S.LinearLR(o, start_factor=0.2, total_iters=6), S.ExponentialLR(o, gamma=0.95)]), 30)
    o = sgd(0.2)
    r["chained_cos"] = run(o, S.ChainedScheduler([S.CosineAnnealingLR(o, T_max=9), S.StepLR(o, step_size=4, gamma=0.5)]), 30)
    o = sgd(0.1)
    s = S.ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1, min_lr=0.004)
    r["plateau"] = [0.1] + run(o, s, 40, metric)[1:]
    o = sgd(0.05)
    s = S.ReduceLROnPlateau(o, mode="max", factor=0.7, patience=0, threshold=0.01, threshold_mode="abs", cooldown=2)
    r["plateau_max_abs"] = [0.05] + run(o, s, 40, lambda k: -metric(k))[1:]
    return r


def main():
    if len(sys.argv) < 2:
        print("usage: scheduler_vs_torch.py <scheduler_sequences program>")
        return 2
    out = subprocess.run([sys.argv[1]], check=True, capture_output=True, text=True).stdout
    mine = {}
    for line in out.strip().splitlines():
        name, *vals = line.split()
        mine[name] = [float(v) for v in vals]
    ref = torch_sequences()
    failures = 0
    if set(mine) != set(ref):
        print(f"FAIL: configurations differ: tessera {sorted(mine)} torch {sorted(ref)}")
        return 1
    for name in sorted(ref):
        a, b = mine[name], ref[name]
        if len(a) != len(b):
            print(f"FAIL {name}: {len(a)} values from tessera, {len(b)} from torch")
            failures += 1
            continue
        worst = 0.0
        for k, (x, y) in enumerate(zip(a, b)):
            err = abs(x - y) / max(abs(x), abs(y), 1e-300) if x != y else 0.0
            worst = max(worst, err)
            if err > 1e-6:
                print(f"FAIL {name}: value {k}: tessera {x!r} torch {y!r} (relative {err:.3g})")
                failures += 1
                break
        print(f"{name}: {len(a)} values, largest relative difference {worst:.3g}")
    print(f"torch {torch.__version__}: {len(ref)} sequences, {failures} failing")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
