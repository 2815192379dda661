# The PyTorch peer of examples/fashion_mnist.cpp: the same SimpleCNN, batch 64, SGD lr 0.05 momentum 0.9, on the
# same Debian Fashion-MNIST files ($TESSERA_FASHION_MNIST_DIR when set, as the example). Prints seconds per training
# epoch, the inference time over the test images and the accuracy. Run with Debian's interpreter (python3-torch):
#   /usr/bin/python3 bench/torch_simplecnn.py THREADS EPOCHS [DEVICE = cpu]
# bench/torch_peers.py imports SimpleCNN from here (the inference batch sweep).
import gzip, os, struct, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

class SimpleCNN(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv2d(1, 32, 3, 1, 1); s.conv2 = nn.Conv2d(32, 64, 3, 1, 1)
        s.fc1 = nn.Linear(64 * 7 * 7, 128); s.fc2 = nn.Linear(128, 10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.conv1(x)), 2); x = F.max_pool2d(F.relu(s.conv2(x)), 2)
        return s.fc2(F.relu(s.fc1(x.view(-1, 64 * 7 * 7))))

def idx(path):
    with gzip.open(path) as f:
        nd = struct.unpack(">I", f.read(4))[0] & 0xff
        dims = struct.unpack(">" + "I" * nd, f.read(4 * nd))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)

def main():
    D = os.environ.get("TESSERA_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist") + "/"
    dev = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    xtr = (torch.tensor(idx(D + "train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255.0).to(dev)
    ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64).to(dev)
    xte = (torch.tensor(idx(D + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255.0).to(dev)
    yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    m = SimpleCNN().to(dev); opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9); B = 64
    for ep in range(epochs):
        perm = torch.randperm(len(xtr), device=dev); sync(); t = time.time(); m.train()
        for i in range(0, len(xtr), B):
            idb = perm[i:i + B]; opt.zero_grad()
            F.cross_entropy(m(xtr[idb]), ytr[idb]).backward(); opt.step()
        sync(); tt = time.time() - t
        m.eval(); t = time.time()
        with torch.no_grad(): acc = (m(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {ep+1}: train {tt:.1f} s  inference {time.time() - t:.2f} s  accuracy {acc*100:.2f}%", flush=True)

if __name__ == "__main__":
    main()
