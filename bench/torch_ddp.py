# (bench/compare's dist workload: the peer program of ../shared/peers/fmnist_ddp_torch.py, printing "train X s")
# Peer baseline for data-parallel training: the SimpleCNN on Fashion-MNIST with PyTorch's
# DistributedDataParallel, gloo backend, RANKS processes x THREADS threads each, batch PER_RANK per process
# (global batch RANKS * PER_RANK), SGD momentum 0.9, lr 0.05. Rank 0 prints seconds per epoch and test accuracy.
#   /usr/bin/python3 fmnist_ddp_torch.py RANKS THREADS EPOCHS PER_RANK      (defaults: 2 1 1 32)
import gzip, os, struct, sys, time
import numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp
import torch.nn as nn, torch.nn.functional as F

D = "/usr/share/datasets/fashion-mnist/"
def idx(path):
    with gzip.open(path) as f:
        magic = struct.unpack(">I", f.read(4))[0]
        nd = magic & 0xff
        dims = struct.unpack(">" + "I" * nd, f.read(4 * nd))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)

class SimpleCNN(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv2d(1, 32, 3, 1, 1); s.pool1 = nn.MaxPool2d(2, 2)
        s.conv2 = nn.Conv2d(32, 64, 3, 1, 1); s.pool2 = nn.MaxPool2d(2, 2)
        s.fc1 = nn.Linear(64 * 7 * 7, 128); s.fc2 = nn.Linear(128, 10)
    def forward(s, x):
        x = s.pool1(F.relu(s.conv1(x))); x = s.pool2(F.relu(s.conv2(x)))
        x = x.view(-1, 64 * 7 * 7); x = F.relu(s.fc1(x)); return s.fc2(x)

def worker(rank, world, threads, epochs, per_rank):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1"); os.environ.setdefault("MASTER_PORT", "29531")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(threads); torch.manual_seed(0)
    xtr = torch.tensor(idx(D + "train-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255.0
    ytr = torch.tensor(idx(D + "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
    xte = torch.tensor(idx(D + "t10k-images-idx3-ubyte.gz"), dtype=torch.float32).unsqueeze(1) / 255.0
    yte = torch.tensor(idx(D + "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
    m = nn.parallel.DistributedDataParallel(SimpleCNN())
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    ds = torch.utils.data.TensorDataset(xtr, ytr)
    sampler = torch.utils.data.distributed.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
    for ep in range(epochs):
        sampler.set_epoch(ep); ids = list(iter(sampler)); m.train()
        dist.barrier(); t = time.time()
        for i in range(0, len(ids), per_rank):
            b = ids[i:i + per_rank]; opt.zero_grad()
            loss = F.cross_entropy(m(xtr[b]), ytr[b]); loss.backward(); opt.step()
        dist.barrier(); tt = time.time() - t
        if rank == 0:
            m.eval()
            with torch.no_grad(): acc = (m.module(xte).argmax(1) == yte).float().mean().item()
            print(f"epoch {ep+1}: train {tt:.1f} s  ranks {world} x {threads} threads, batch {per_rank} per rank  test accuracy {acc*100:.2f}%", flush=True)
    dist.destroy_process_group()

if __name__ == "__main__":
    a = [int(v) for v in sys.argv[1:]] + [None] * 4
    ranks, threads, epochs, per_rank = a[0] or 2, a[1] or 1, a[2] or 1, a[3] or 32
    mp.spawn(worker, args=(ranks, threads, epochs, per_rank), nprocs=ranks, join=True)
