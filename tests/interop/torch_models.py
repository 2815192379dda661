# Weights that travel between PyTorch and tessera through safetensors files (tests/interop/python_tests.cmake):
#   /usr/bin/python3 torch_models.py <interop_models program>
# (a) the SimpleCNN and the row LSTM built in PyTorch (torch.nn.Sequential of the same layers; the LSTM also as a
#     module with attributes lstm and fc), initialised by PyTorch, written as safetensors by hand (torch 1.13 has no
#     safetensors package), loaded by tessera, whose logits on the same inputs (.npy) must be within 1e-5 of
#     PyTorch's (eval mode); a file with a wrong shape must be refused naming the tensor and both shapes;
# (b) a SimpleCNN trained by tessera on a small synthetic separable set, written as safetensors, loaded into PyTorch
#     with strict=True: the same predictions and accuracy on a test set, logits within a small tolerance.
# Exit code 0 on success, 1 on a failed check, 77 (skipped) when torch or numpy is missing.
import json, struct, subprocess, sys

try:
    import numpy as np
except ImportError:
    print("torch_models.py: skipped: numpy is not installed for", sys.executable)
    sys.exit(77)
try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch_models.py: skipped: torch is not installed for", sys.executable, "(Debian: python3-torch)")
    sys.exit(77)

PROG = sys.argv[1]
DTYPES = {np.float32: "F32", np.float64: "F64", np.int64: "I64", np.int32: "I32", np.int8: "I8", np.uint8: "U8",
          np.bool_: "BOOL"}
failures = []


def check(ok, what):
    print(("ok:   " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures.append(what)


def write_safetensors(path, tensors, metadata=None):
    """The safetensors format, by hand: u64 header length, JSON header, the data (row-major, little-endian)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[a.dtype.type], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    inverse = {v: k for k, v in DTYPES.items()}
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        a = np.frombuffer(data[8 + n + b:8 + n + end], dtype=np.dtype(inverse[e["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(a.reshape(e["shape"]).copy())
    return out, meta


def run(*args, expect_ok=True):
    r = subprocess.run([PROG, *args], capture_output=True, text=True)
    print(r.stdout.strip())
    if expect_ok and r.returncode != 0:
        print(r.stderr)
        check(False, "interop_models " + " ".join(args[:1]) + " exit code " + str(r.returncode))
    return r


class LastStep(nn.Module):  # tessera's nn::LastStep: nn.LSTM's output [N, T, H] -> out[:, -1]
    def forward(self, x):
        return x[0][:, -1]


def simple_cnn():
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def row_lstm():
    return nn.Sequential(nn.LSTM(28, 128, 2, dropout=0.2, batch_first=True), LastStep(), nn.Linear(128, 10))


class RowLSTMNamed(nn.Module):  # as bench/torch_row_lstm.py writes it: names lstm.* and fc.*
    def __init__(s):
        super().__init__()
        s.lstm = nn.LSTM(28, 128, 2, dropout=0.2, batch_first=True)
        s.fc = nn.Linear(128, 10)

    def forward(s, x):
        out, _ = s.lstm(x)
        return s.fc(out[:, -1])


def compare_logits(label, model, x, mode, extra=()):
    model.eval()
    write_safetensors(label + ".safetensors", model.state_dict(), {"framework": "pytorch " + torch.__version__})
    np.save(label + "_x.npy", x.numpy())
    run(mode, label + ".safetensors", label + "_x.npy", label + "_logits.npy", *extra)
    with torch.no_grad():
        want = model(x).numpy()
    got = np.load(label + "_logits.npy")
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    check(got.shape == want.shape and diff <= 1e-5,
          f"{label}: tessera's logits {got.shape} vs PyTorch's {want.shape}, max |difference| {diff:.3g} (<= 1e-5)")
    check(got.shape == want.shape and (got.argmax(1) == want.argmax(1)).all(), f"{label}: the same predictions")


torch.manual_seed(0)
torch.set_num_threads(2)

# ---- (a) PyTorch -> tessera ----
cnn = simple_cnn()
print("SimpleCNN names:", list(cnn.state_dict().keys()))
compare_logits("cnn", cnn, torch.randn(37, 1, 28, 28), "cnn_logits")
lstm = row_lstm()
print("row LSTM names:", list(lstm.state_dict().keys()))
compare_logits("lstm", lstm, torch.randn(29, 28, 28), "lstm_logits")
named = RowLSTMNamed()
compare_logits("lstm_named", named, torch.rand(13, 28, 28), "lstm_logits", ("named",))

# a shape that differs is refused, naming the tensor and both shapes
bad = dict(cnn.state_dict())
bad["9.weight"] = torch.zeros(11, 128)
bad["9.bias"] = torch.zeros(11)
write_safetensors("bad.safetensors", bad)
r = run("cnn_logits", "bad.safetensors", "cnn_x.npy", "bad_logits.npy", expect_ok=False)
print(r.stderr.strip())
check(r.returncode == 1 and "9.weight" in r.stderr and "[11, 128]" in r.stderr and "[10, 128]" in r.stderr,
      "a wrong shape is refused naming 9.weight, [11, 128] and [10, 128]")

# ---- (b) tessera -> PyTorch: a SimpleCNN trained by tessera on a synthetic separable set ----
rng = np.random.default_rng(1)
templates = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)


def synthetic(n):
    y = rng.integers(0, 10, n).astype(np.int32)
    x = templates[y] + 2.0 * rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    return x.astype(np.float32), y


train_x, train_y = synthetic(960)
test_x, test_y = synthetic(300)
np.save("train_x.npy", train_x)
np.save("train_y.npy", train_y)
np.save("test_x.npy", test_x)
run("cnn_train", "train_x.npy", "train_y.npy", "test_x.npy", "trained.safetensors", "trained_logits.npy", "3")
tensors, meta = read_safetensors("trained.safetensors")
check(meta.get("trained_by") == "tessera", "the metadata came along: " + json.dumps(meta))
model = simple_cnn()
model.load_state_dict(tensors, strict=True)  # every name and shape of torch.nn.Sequential's, nothing left over
model.eval()
with torch.no_grad():
    torch_logits = model(torch.from_numpy(test_x)).numpy()
tessera_logits = np.load("trained_logits.npy")
acc_tessera = float((tessera_logits.argmax(1) == test_y).mean())
acc_torch = float((torch_logits.argmax(1) == test_y).mean())
scale = max(1.0, float(np.abs(torch_logits).max()))
diff = float(np.abs(torch_logits - tessera_logits).max())
check(acc_tessera >= 0.6, f"tessera learnt the synthetic set: test accuracy {acc_tessera:.3f} (>= 0.6)")
check((torch_logits.argmax(1) == tessera_logits.argmax(1)).all() and acc_torch == acc_tessera,
      f"PyTorch with tessera's weights: the same predictions, accuracy {acc_torch:.3f} = {acc_tessera:.3f}")
check(diff <= 1e-5 * scale, f"logits within 1e-5 x {scale:.3g}: max |difference| {diff:.3g}")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("all checks passed")
