# The PyTorch peer of examples/fashion_mnist_lstm.cpp: Fashion-MNIST read row by row (28 steps x 28 features) by a
# 2-layer LSTM (hidden 128, dropout 0.2) + Linear(128, 10), Adam lr 2e-3, batch 64. Prints seconds per training
# epoch, the inference time and the test accuracy. /usr/bin/python3 bench/torch_row_lstm.py THREADS EPOCHS
import gzip, os, struct, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
D = os.environ.get("TESSERA_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist") + "/"
def idx(p):
    with gzip.open(p) as f:
        nd = struct.unpack(">I", f.read(4))[0] & 0xff
        dims = struct.unpack(">" + "I" * nd, f.read(4 * nd))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)
xtr = torch.tensor(idx(D + "train-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
xte = torch.tensor(idx(D + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
class RowLSTM(nn.Module):
    def __init__(s):
        super().__init__(); s.lstm = nn.LSTM(28, 128, 2, dropout=0.2, batch_first=True); s.fc = nn.Linear(128, 10)
    def forward(s, x):
        out, _ = s.lstm(x); return s.fc(out[:, -1])
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
m = RowLSTM(); opt = torch.optim.Adam(m.parameters(), lr=2e-3); B = 64
for ep in range(epochs):
    perm = torch.randperm(len(xtr)); t = time.time(); m.train()
    for i in range(0, len(xtr), B):
        idb = perm[i:i + B]; opt.zero_grad()
        F.cross_entropy(m(xtr[idb]), ytr[idb]).backward(); opt.step()
    tt = time.time() - t; m.eval(); t = time.time()
    with torch.no_grad(): acc = (m(xte).argmax(1) == yte).float().mean().item()
    print(f"epoch {ep+1}: train {tt:.1f} s  inference {time.time() - t:.2f} s  accuracy {acc*100:.2f}%", flush=True)
