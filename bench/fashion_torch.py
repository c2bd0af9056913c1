#!/usr/bin/python3
"""The canonical gim model, models/fashion_gim.gim, written op for op in PyTorch.

This is the comparison gim's benchmark numbers are read against (spec/benchmarks.md):

    x  [B, 1, 28, 28]   Fashion-MNIST, (x/255 - 0.2860) / 0.3530
    p  = patches(x, size=8, stride=4)                    [B, 6, 6, 1, 8, 8]
    h1 = conv_pair(p, 32)                                module 1
    h2 = conv_pair(gradient_block(h1), 64, stride=2)     module 2
    h3 = conv_pair(gradient_block(h2), 128, stride=2)    module 3
    each module: infonce(spatial_mean(h), steps=3, negatives=16)

conv_pair(x, C, stride) = relu(conv3x3(relu(conv3x3(x, C, stride, pad 1)), C, pad 1)), with
biases. Convolutions see the 6x6 grid as batch: [B*36, C, H, W]. One Adam (lr 1e-3) per
module, batch 32. Greedy (default): each module's input is detached, each module learns
from its own loss. End to end (--e2e): no detach, only the last module's loss.

Modes (results are printed as one JSON line on stdout, progress on stderr):
    --bench --steps N [--e2e]        median ms/step over N steps after warm-up, examples/s,
                                     GFLOP/s, peak RSS
    --train [--epochs 1] [--e2e]     train; loss per module every --log-every steps
            [--save F] [--probe]     then (with --probe) the linear probe per module
    --probe --load F                 linear probe of saved weights
    --random-init                    linear probe of the untrained encoder
    --check                          self-test of the InfoNCE loss and the gradient blocks

Run with Debian's Python (/usr/bin/python3), which has python3-torch (bench/setup.sh).
"""

import argparse
import gzip
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530          # Fashion-MNIST pixel statistics, pixels in [0, 1]
PATCH, STRIDE = 8, 4                # 8x8 patches, stride 4: a 6x6 grid on 28x28
GRID = (28 - PATCH) // STRIDE + 1   # 6
CHANNELS = (32, 64, 128)            # one conv_pair per module
STRIDES = (1, 2, 2)                 # stride of each conv_pair's first convolution
STEPS_K = 3                         # InfoNCE prediction steps
NEGATIVES = 16                      # negatives per positive
LR = 1e-3


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb():
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------------------
# Data: IDX files (gzip), parsed here; images kept as uint8, normalised per batch.
# ----------------------------------------------------------------------------------------

def read_idx(path):
    """An IDX file: magic 0x0000 <type> <ndim>, ndim big-endian uint32 sizes, then data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def load_split(data_dir, split):
    """split is "train" or "t10k": images uint8 [N, 1, 28, 28] and labels int64 [N]."""
    images = read_idx(os.path.join(data_dir, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{split}-labels-idx1-ubyte.gz"))
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


def normalise(images_u8):
    return (images_u8.float() / 255.0 - MEAN) / STD


def patches(x):
    """[B, C, 28, 28] -> [B, 6, 6, C, 8, 8]: row-major grid, patch (i, j) at (4i, 4j)."""
    return x.unfold(2, PATCH, STRIDE).unfold(3, PATCH, STRIDE).permute(0, 2, 3, 1, 4, 5)


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------

class ConvPair(nn.Module):
    """stdlib/conv.gim: two 3x3 convolutions with ReLU; the first may downsample."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


def infonce_loss(z, W, neg_idx):
    """InfoNCE over a grid, as in docs/internals.md.

    z: [N, G, G, C], both context and target (Greedy InfoMax). W: [K, C, C].
    neg_idx[k-1]: [P_k, negatives] indices into the N*G*G vectors of z, one row per
    context position (n, i, j) with i + k < G, in row-major order.
    Score f_k(a, c) = a^T W_k c. For each k, the mean over positions of
    -f(pos) + log sum_{pos and negatives} exp f; the loss is the mean over k.
    """
    n, g, _, c = z.shape
    flat = z.reshape(n * g * g, c)
    terms = []
    for k in range(1, W.shape[0] + 1):
        context = z[:, :g - k].reshape(-1, c)          # (n, i, j), i + k < G
        positive = z[:, k:].reshape(-1, c)             # (n, i + k, j)
        pred = context @ W[k - 1].t()                  # rows (W_k c)^T
        candidates = torch.cat([positive.unsqueeze(1), flat[neg_idx[k - 1]]], dim=1)
        # [P_k, 1 + neg]; a multiply and a sum beat bmm's tiny per-position products here
        scores = (candidates * pred.unsqueeze(1)).sum(dim=2)
        target = torch.zeros(scores.shape[0], dtype=torch.long)        # positive first
        terms.append(F.cross_entropy(scores, target))  # log-sum-exp with max subtracted
    return torch.stack(terms).mean()


def draw_negatives(z, steps, negatives, gen):
    """Uniform, with replacement, from all N*G*G vectors of z (the positive may be drawn)."""
    n, g = z.shape[0], z.shape[1]
    return [torch.randint(n * g * g, ((g - k) * n * g, negatives), generator=gen)
            for k in range(1, steps + 1)]


class InfoNCE(nn.Module):
    """One C x C map W_k per prediction step, no bias, U(-1/sqrt(C), 1/sqrt(C)) as in gim."""

    def __init__(self, c, steps=STEPS_K, negatives=NEGATIVES):
        super().__init__()
        self.negatives = negatives
        self.W = nn.Parameter(torch.empty(steps, c, c).uniform_(-1 / math.sqrt(c),
                                                                 1 / math.sqrt(c)))

    def forward(self, z, gen):
        return infonce_loss(z, self.W, draw_negatives(z, self.W.shape[0], self.negatives, gen))


class FashionGim(nn.Module):
    def __init__(self):
        super().__init__()
        cins = (1,) + CHANNELS[:-1]
        self.encoders = nn.ModuleList(ConvPair(ci, co, s)
                                      for ci, co, s in zip(cins, CHANNELS, STRIDES))
        self.losses = nn.ModuleList(InfoNCE(c) for c in CHANNELS)

    def module_params(self, m):
        return list(self.encoders[m].parameters()) + list(self.losses[m].parameters())

    def grids(self, images_u8, detach=True):
        """The representation of every module: a list of [B, 6, 6, C] (spatial_mean).
        With detach, a gradient_block sits before modules 2 and 3."""
        b = images_u8.shape[0]
        h = patches(normalise(images_u8)).reshape(b * GRID * GRID, 1, PATCH, PATCH)
        out = []
        for m, enc in enumerate(self.encoders):
            if detach and m > 0:
                h = h.detach()                         # gradient_block
            h = enc(h)
            out.append(h.mean(dim=(2, 3)).reshape(b, GRID, GRID, -1))
        return out


def make_model(seed):
    torch.manual_seed(seed)
    model = FashionGim()
    opts = [torch.optim.Adam(model.module_params(m), lr=LR) for m in range(len(CHANNELS))]
    return model, opts


def train_step(model, opts, images_u8, gen, e2e):
    """One step: every module's forward, loss, backward and update. Returns the losses
    (greedy: one per module; e2e: the last module's only)."""
    z = model.grids(images_u8, detach=not e2e)
    if e2e:
        losses = [model.losses[-1](z[-1], gen)]
    else:
        losses = [model.losses[m](z[m], gen) for m in range(len(z))]
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    # Greedy: the modules are disconnected by the detaches, so backward of the sum is
    # each module's own backward. e2e: Adam skips the unused W of modules 1 and 2.
    torch.stack(losses).sum().backward()
    for opt in opts:
        opt.step()
    return [l.item() for l in losses]


def flops_per_step(batch, e2e):
    """Nominal FLOPs of one training step: 3 x the forward FLOPs (forward, gradient with
    respect to inputs, gradient with respect to weights) of the convolutions and of the
    InfoNCE products that run. A multiply-add counts 2."""
    n = batch * GRID * GRID
    fwd, size, cin = 0, PATCH, 1
    nce = []
    for c, s in zip(CHANNELS, STRIDES):
        out = (size + 2 - 3) // s + 1
        fwd += 2 * n * c * out * out * cin * 9         # conv1
        fwd += 2 * n * c * out * out * c * 9           # conv2
        size, cin = out, c
        # per step k: the prediction W_k c and the 1 + negatives scores
        nce.append(sum(2 * batch * (GRID - k) * GRID * c * (c + 1 + NEGATIVES)
                       for k in range(1, STEPS_K + 1)))
    fwd += nce[-1] if e2e else sum(nce)
    return 3 * fwd


# ----------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------

def batches(n_items, batch, rng):
    """Shuffled full batches of indices, one epoch."""
    perm = torch.from_numpy(rng.permutation(n_items))
    for i in range(n_items // batch):
        yield perm[i * batch:(i + 1) * batch]


def run_bench(args):
    images, _ = load_split(args.data, "train")
    base_rss = peak_rss_mb()
    model, opts = make_model(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    rng = np.random.default_rng(args.seed)
    order = batches(len(images), args.batch, rng)
    times = []
    for i in range(args.warmup + args.steps):
        idx = next(order, None)
        if idx is None:
            order = batches(len(images), args.batch, rng)
            idx = next(order)
        x = images[idx]
        t0 = time.perf_counter()
        train_step(model, opts, x, gen, args.e2e)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    flops = flops_per_step(args.batch, args.e2e)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__,
        "mode": "e2e" if args.e2e else "greedy",
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "ms_per_step": round(med * 1e3, 2),
        "ms_per_step_min": round(min(times) * 1e3, 2),
        "examples_per_s": round(args.batch / med, 1),
        "flops_per_step": flops,
        "gflops": round(flops / med * 1e-9, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_model_mb": round(base_rss, 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }), flush=True)


def run_train(args, model, opts):
    images, _ = load_split(args.data, "train")
    gen = torch.Generator().manual_seed(args.seed + 1)
    rng = np.random.default_rng(args.seed)
    names = ["m3"] if args.e2e else [f"m{m + 1}" for m in range(len(CHANNELS))]
    step, count, sums, t0 = 0, 0, np.zeros(len(names)), time.perf_counter()
    for epoch in range(args.epochs):
        for idx in batches(len(images), args.batch, rng):
            sums += train_step(model, opts, images[idx], gen, args.e2e)
            step, count = step + 1, count + 1
            if step % args.log_every == 0 or step == 1:
                rate = step * args.batch / (time.perf_counter() - t0)
                losses = " ".join(f"{n}={s / count:.4f}" for n, s in zip(names, sums))
                log(f"epoch {epoch + 1} step {step}: loss {losses}  ({rate:.0f} examples/s)")
                sums[:], count = 0, 0
            if args.max_steps and step >= args.max_steps:
                break
    elapsed = time.perf_counter() - t0
    log(f"trained {step} steps in {elapsed:.0f} s ({step * args.batch / elapsed:.0f} examples/s)")
    if args.save:
        torch.save(model.state_dict(), args.save)
        log(f"weights saved to {args.save}")


@torch.no_grad()
def extract_features(model, images_u8, chunk=256):
    """Per module, the 6x6 grid of patch vectors flattened: [N, 36*C]."""
    feats = [torch.empty(len(images_u8), GRID * GRID * c) for c in CHANNELS]
    for i in range(0, len(images_u8), chunk):
        for f, z in zip(feats, model.grids(images_u8[i:i + chunk])):
            f[i:i + chunk] = z.reshape(z.shape[0], -1)
    return feats


def linear_probe(train_x, train_y, test_x, test_y, seed, epochs=10, batch=256):
    """Softmax classifier on features standardised with the training set's mean and std
    (features constant over the training set are only centred). Adam, lr 1e-3.
    Standardises train_x and test_x in place. Returns (train accuracy, test accuracy)."""
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0, unbiased=False)
    std[std < 1e-6] = 1.0
    for x in (train_x, test_x):
        x.sub_(mean).div_(std)
    torch.manual_seed(seed)
    clf = nn.Linear(train_x.shape[1], 10)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.from_numpy(rng.permutation(len(train_x))).split(batch):
            loss = F.cross_entropy(clf(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"  probe epoch {epoch + 1}: loss {total / len(train_x):.4f}")

    @torch.no_grad()
    def accuracy(x, y):
        correct = sum((clf(x[i:i + 4096]).argmax(1) == y[i:i + 4096]).sum().item()
                      for i in range(0, len(x), 4096))
        return correct / len(x)

    return accuracy(train_x, train_y), accuracy(test_x, test_y)


def run_probe(args, model, label):
    model.eval()
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "t10k")
    if args.limit:                                     # smoke tests only
        train_images, train_labels = train_images[:args.limit], train_labels[:args.limit]
        test_images, test_labels = test_images[:args.limit], test_labels[:args.limit]
    t0 = time.perf_counter()
    train_feats = extract_features(model, train_images)
    test_feats = extract_features(model, test_images)
    log(f"features extracted in {time.perf_counter() - t0:.0f} s")
    result = {"impl": "pytorch", "probe": label, "seed": args.seed, "modules": []}
    for m in range(len(CHANNELS)):
        log(f"probe module {m + 1} ({train_feats[m].shape[1]} features)")
        tr, te = linear_probe(train_feats[m], train_labels, test_feats[m], test_labels,
                              args.seed)
        train_feats[m] = test_feats[m] = None          # free as we go
        log(f"module {m + 1}: train {100 * tr:.2f} %  test {100 * te:.2f} %")
        result["modules"].append({"module": m + 1, "train_acc": round(tr, 4),
                                  "test_acc": round(te, 4)})
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------
# Self-test
# ----------------------------------------------------------------------------------------

def naive_infonce(z, W, neg_idx):
    """The definition, position by position, in float64 numpy."""
    z, W = z.detach().double().numpy(), W.detach().double().numpy()
    n, g, _, c = z.shape
    flat = z.reshape(-1, c)
    means = []
    for k in range(1, W.shape[0] + 1):
        idx = neg_idx[k - 1].numpy()
        terms, p = [], 0
        for a in range(n):
            for i in range(g - k):
                for j in range(g):
                    ctx = z[a, i, j]
                    f = lambda v: v @ W[k - 1] @ ctx
                    scores = [f(z[a, i + k, j])] + [f(flat[q]) for q in idx[p]]
                    mx = max(scores)
                    terms.append(-scores[0] + mx + math.log(sum(math.exp(s - mx) for s in scores)))
                    p += 1
        means.append(sum(terms) / len(terms))
    return sum(means) / len(means)


def run_check(args):
    failures = 0

    def report(ok, what):
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}")

    gen = torch.Generator().manual_seed(1)
    # 1. All scores equal (W = 0): every term is log(1 + negatives) exactly.
    z = torch.randn(3, 6, 6, 8, generator=gen)
    loss = infonce_loss(z, torch.zeros(3, 8, 8), draw_negatives(z, 3, 16, gen)).item()
    report(abs(loss - math.log(17)) < 1e-5, f"W = 0: loss {loss:.6f} == log 17 = {math.log(17):.6f}")

    # 2. Against the definition, position by position (random z, W, 5 negatives).
    z = torch.randn(2, 5, 5, 4, generator=gen)
    W = torch.randn(3, 4, 4, generator=gen)
    idx = draw_negatives(z, 3, 5, gen)
    got, want = infonce_loss(z, W, idx).item(), naive_infonce(z, W, idx)
    report(abs(got - want) < 1e-4 * max(1.0, abs(want)),
           f"vectorised {got:.6f} == naive {want:.6f}")

    # 3. Gradients (z and W, float64) against central finite differences.
    zd = torch.randn(2, 4, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    Wd = torch.randn(2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    idx = draw_negatives(zd, 2, 4, gen)
    report(torch.autograd.gradcheck(lambda a, b: infonce_loss(a, b, idx), (zd, Wd)),
           "gradcheck of the loss w.r.t. z and W")

    # 4. The untrained model on real images: loss close to log 17 in every module.
    model, opts = make_model(args.seed)
    images, _ = load_split(args.data, "t10k")
    with torch.no_grad():
        zs = model.grids(images[:args.batch])
        losses = [model.losses[m](zs[m], gen).item() for m in range(3)]
    report(all(abs(l - math.log(17)) < 0.1 for l in losses),
           "losses at init " + ", ".join(f"{l:.4f}" for l in losses) + " ~ log 17 (+-0.1)")

    # 5. Gradient blocks: module 2's loss reaches module 2's parameters only (greedy),
    #    and module 1's parameters too without the block (e2e).
    for detach in (True, False):
        model.zero_grad(set_to_none=True)
        zs = model.grids(images[:4], detach=detach)
        model.losses[1](zs[1], gen).backward()
        m1 = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.module_params(0))
        m2 = all(p.grad is not None and p.grad.abs().sum() > 0
                 for p in model.encoders[1].parameters())
        want = "does not reach" if detach else "reaches"
        report(m2 and m1 == (not detach), f"{'greedy' if detach else 'e2e'}: module 2's loss "
               f"{want} module 1")

    # 6. Training lowers the loss (a few steps on one fixed batch).
    model, opts = make_model(args.seed)
    first = train_step(model, opts, images[:args.batch], gen, False)
    for _ in range(20):
        last = train_step(model, opts, images[:args.batch], gen, False)
    report(all(b < a for a, b in zip(first, last)),
           "20 steps on one batch lower every loss: " +
           ", ".join(f"{a:.3f} -> {b:.3f}" for a, b in zip(first, last)))
    print("all checks passed" if failures == 0 else f"{failures} check(s) FAILED")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_argument_group("modes")
    mode.add_argument("--bench", action="store_true", help="time training steps")
    mode.add_argument("--train", action="store_true", help="train (then --probe if given)")
    mode.add_argument("--probe", action="store_true", help="linear probe per module")
    mode.add_argument("--random-init", action="store_true", help="probe the untrained encoder")
    mode.add_argument("--check", action="store_true", help="self-test")
    ap.add_argument("--e2e", action="store_true", help="end to end: only the last loss, no detach")
    ap.add_argument("--steps", type=int, default=50, help="--bench: timed steps (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="--bench: untimed steps first (default 5)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0, help="--train: stop after this many steps")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data", default=DATA_DIR, help="directory with the Fashion-MNIST .gz files")
    ap.add_argument("--limit", type=int, default=0, help="--probe: use only the first N images "
                    "of each split (smoke tests)")
    ap.add_argument("--save", help="--train: write the weights (torch.save) here")
    ap.add_argument("--load", help="--probe: read the weights from here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.check:
        return run_check(args)
    if args.bench:
        run_bench(args)
        return 0
    if args.train or args.probe or args.random_init:
        model, opts = make_model(args.seed)
        if args.train:
            run_train(args, model, opts)
        elif args.load:
            model.load_state_dict(torch.load(args.load))
        elif args.probe and not args.random_init:
            ap.error("--probe needs --train or --load (or use --random-init)")
        if args.probe or args.random_init:
            if args.train:
                label = ("e2e" if args.e2e else "greedy") + f"-{args.epochs}epoch"
            else:
                label = f"weights:{args.load}" if args.load else "random-init"
            run_probe(args, model, label)
        return 0
    ap.error("choose a mode: --bench, --train, --probe, --random-init or --check")


if __name__ == "__main__":
    sys.exit(main())
