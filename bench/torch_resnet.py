# The PyTorch peer of examples/fashion_mnist_resnet.cpp: the same small ResNet (stem 3x3 conv 1->32 + BatchNorm + ReLU +
# 2x2 max-pool; basic block at 32 channels; stride-2 block 32->64 with a 1x1 conv + BatchNorm projection shortcut;
# basic block at 64; global average pool over 7x7; Linear 64->10), batch 64, cross-entropy with label smoothing 0.1,
# SGD momentum 0.9 weight decay 5e-4 on OneCycleLR (max_lr 0.1, pct_start 0.2, no momentum cycling, stepped every
# batch over all epochs) as the example, pixels standardised with the example's mean 0.28604 and standard deviation
# 0.35302, on the same Debian
# Fashion-MNIST files ($TESSERA_FASHION_MNIST_DIR when set). Prints, per epoch, the training time, the mean loss, the
# inference time over the test images and the accuracy (the resnet_epoch figure is the training time). Run with
# Debian's interpreter (python3-torch):
#   /usr/bin/python3 bench/torch_resnet.py THREADS EPOCHS [DEVICE = cpu] [BATCH = 64]
# The parameter names match tessera's (print(ResNet().state_dict().keys()): "4.main.0.weight", "5.shortcut.0.weight").
import gzip, os, struct, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F


class Residual(nn.Module):
    """y = post(main(x) + shortcut(x)), as tessera::nn::Residual."""
    def __init__(s, main, shortcut=None, post=None):
        super().__init__()
        s.main = main
        s.shortcut = shortcut if shortcut is not None else nn.Identity()
        s.post = post if post is not None else nn.ReLU()
    def forward(s, x):
        return s.post(s.main(x) + s.shortcut(x))


def basic(c):
    return Residual(nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, 1, 1), nn.BatchNorm2d(c)))


def down(c):
    return Residual(nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                  nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.BatchNorm2d(2 * c)),
                    nn.Sequential(nn.Conv2d(c, 2 * c, 1, 2), nn.BatchNorm2d(2 * c)))


def ResNet():
    # the convolutions keep their bias, as tessera's Conv2d (bias=True by default) does
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 14 x 14
                         basic(32),                                                              # 32 x 14 x 14
                         down(32),                                                               # 64 x 7 x 7
                         basic(64),                                                              # 64 x 7 x 7
                         nn.AvgPool2d(7), nn.Flatten(), nn.Linear(64, 10))


def idx(path):
    with gzip.open(path) as f:
        nd = struct.unpack(">I", f.read(4))[0] & 0xff
        dims = struct.unpack(">" + "I" * nd, f.read(4 * nd))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


def main():
    D = os.environ.get("TESSERA_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist") + "/"
    dev = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
    B = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    mean, std = 0.28604, 0.35302
    def images(name):
        return ((torch.tensor(idx(D + name), dtype=torch.float32).unsqueeze(1) / 255.0 - mean) / std).to(dev)
    xtr, xte = images("train-images-idx3-ubyte.gz"), images("t10k-images-idx3-ubyte.gz")
    ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64).to(dev)
    yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0); torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    m = ResNet().to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    steps = (len(xtr) + B - 1) // B
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, epochs=max(1, epochs), steps_per_epoch=steps, pct_start=0.2,
                                                cycle_momentum=False)
    print(f"ResNet: {sum(p.numel() for p in m.parameters())} parameters; batch {B}", flush=True)
    for ep in range(epochs):
        perm = torch.randperm(len(xtr), device=dev); sync(); t = time.time(); m.train()
        loss_sum, n = 0.0, 0
        for i in range(0, len(xtr), B):
            idb = perm[i:i + B]; opt.zero_grad()
            loss = F.cross_entropy(m(xtr[idb]), ytr[idb], label_smoothing=0.1); loss.backward(); opt.step(); sched.step()
            loss_sum += loss.item(); n += 1
        sync(); tt = time.time() - t
        m.eval(); t = time.time()
        with torch.no_grad():
            correct = sum((m(xte[i:i + 500]).argmax(1) == yte[i:i + 500]).sum().item() for i in range(0, len(xte), 500))
        print(f"epoch {ep+1}: train {tt:.1f} s  mean loss {loss_sum / n:.4f}  inference {time.time() - t:.2f} s  "
              f"accuracy {correct / len(xte) * 100:.2f}%", flush=True)


if __name__ == "__main__":
    main()
