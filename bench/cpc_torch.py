#!/usr/bin/python3
"""models/cpc_audio.gim written op for op in PyTorch (CPU), to time against `gimc bench`.

    x  [B, 1, 20480]   1.28 s of 16 kHz audio (synthetic here, as in `gimc bench`)
    h1 = relu(conv1d(x,  512, k=10, stride=5, pad=2))          [B, 512, 4095]   module 1
    h2 = relu(conv1d(h1, 512, k=8,  stride=4, pad=2))          [B, 512, 1023]   module 2
    h3 = relu(conv1d(h2, 512, k=4,  stride=2, pad=2))          [B, 512, 512]    module 3
    h4 = relu(conv1d(h3, 512, k=4,  stride=2, pad=2))          [B, 512, 257]    module 4
    h5 = relu(conv1d(h4, 512, k=4,  stride=2, pad=1))          [B, 512, 128]    module 5
    modules 1-5: infonce(frames(h_m), steps=12, negatives=10)  (frames = transpose to [B, T, C])
    module 6:    z = frames(h5), c = gru(z, 256), infonce(z, steps=12, negatives=10, context=c)

Greedy: a gradient block (detach) before every module but the first; one Adam (lr 2e-4)
per module; batch 8. InfoNCE as docs/internals.md: for step k = 1..12 the context c_t
predicts z_{t+k}; score z^T W_k c; 10 negatives per position drawn uniformly with
replacement from all B*T frames (a seeded torch.Generator, not gim's stream); cross-entropy
of the positive among the 11; mean over positions, then over k. W [12, Cz, Cc] is
U(+-1/sqrt(Cc)); conv and GRU keep PyTorch's default initialisation, which is gim's.

The 11 candidate scores of a position are a gather and a dot product. Written as
`z[idx] * pred` autograd would keep the gathered candidates for the backward pass:
12 steps x [B*T, 11, 512] floats, 8.8 GB for module 1 at batch 8. CandidateScores
below is the same arithmetic as an autograd Function that gathers in chunks and
keeps only the indices (its backward gathers again and scatters with index_add_).

    /usr/bin/python3 bench/cpc_torch.py --bench --steps 3     # one JSON line on stdout
    /usr/bin/python3 bench/cpc_torch.py --check               # self-test, seconds

Threads: torch.set_num_threads(os.cpu_count()) unless --threads.
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLES = 20480
CHANNELS = 512
LAYERS = ((10, 5, 2), (8, 4, 2), (4, 2, 2), (4, 2, 2), (4, 2, 1))   # kernel, stride, pad
HIDDEN = 256
STEPS_K = 12
NEGATIVES = 10
LR = 2e-4
CHUNK = 4096                       # candidate rows gathered at once (CandidateScores)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb():
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class CandidateScores(torch.autograd.Function):
    """scores[p, i] = z[idx[p, i]] . pred[p]  for pred [P, C], z [M, C], idx [P, J]."""

    @staticmethod
    def forward(ctx, pred, z, idx):
        ctx.save_for_backward(pred, z, idx)
        out = torch.empty(idx.shape, dtype=pred.dtype)
        for a in range(0, idx.shape[0], CHUNK):
            b = min(a + CHUNK, idx.shape[0])
            out[a:b] = torch.bmm(z[idx[a:b]], pred[a:b].unsqueeze(2)).squeeze(2)
        return out

    @staticmethod
    def backward(ctx, g):
        pred, z, idx = ctx.saved_tensors
        dpred = torch.empty_like(pred)
        dz = torch.zeros_like(z)
        for a in range(0, idx.shape[0], CHUNK):
            b = min(a + CHUNK, idx.shape[0])
            ga = g[a:b]
            dpred[a:b] = torch.bmm(ga.unsqueeze(1), z[idx[a:b]]).squeeze(1)
            dz.index_add_(0, idx[a:b].reshape(-1), (ga.unsqueeze(2) * pred[a:b].unsqueeze(1)).reshape(-1, z.shape[1]))
        return dpred, dz, None


def infonce_seq(z, c, W, gen, negatives=NEGATIVES):
    """Sequence InfoNCE: z [N, T, Cz], c [N, T, Cc], W [K, Cz, Cc]."""
    n, t, cz = z.shape
    flat = z.reshape(n * t, cz)
    terms = []
    for k in range(1, W.shape[0] + 1):
        if k >= t:
            continue
        pred = c[:, :t - k].reshape(-1, c.shape[2]) @ W[k - 1].t()            # [N(T-k), Cz]
        pos = (torch.arange(n).unsqueeze(1) * t + torch.arange(k, t).unsqueeze(0)).reshape(-1, 1)
        neg = torch.randint(n * t, (pred.shape[0], negatives), generator=gen)
        idx = torch.cat([pos, neg], dim=1)                                       # positive first
        scores = CandidateScores.apply(pred, flat, idx)
        target = torch.zeros(scores.shape[0], dtype=torch.long)
        terms.append(F.cross_entropy(scores, target))                           # max subtracted
    return torch.stack(terms).mean()


class CpcAudio(nn.Module):
    def __init__(self):
        super().__init__()
        cins = (1,) + (CHANNELS,) * (len(LAYERS) - 1)
        self.convs = nn.ModuleList(nn.Conv1d(ci, CHANNELS, k, stride=s, padding=p)
                                   for ci, (k, s, p) in zip(cins, LAYERS))
        self.gru = nn.GRU(CHANNELS, HIDDEN, batch_first=True)
        self.W = nn.ParameterList()
        for cc in (CHANNELS,) * len(LAYERS) + (HIDDEN,):
            b = 1 / math.sqrt(cc)
            self.W.append(nn.Parameter(torch.empty(STEPS_K, CHANNELS, cc).uniform_(-b, b)))

    def module_params(self, m):
        if m < len(LAYERS):
            return list(self.convs[m].parameters()) + [self.W[m]]
        return list(self.gru.parameters()) + [self.W[m]]

    def losses(self, x, gen):
        """Every module's loss, a gradient block before each module but the first."""
        out, h = [], x
        for m, conv in enumerate(self.convs):
            if m > 0:
                h = h.detach()
            h = F.relu(conv(h))
            z = h.transpose(1, 2)
            out.append(infonce_seq(z, z, self.W[m], gen))
        z = h.detach().transpose(1, 2)
        c, _ = self.gru(z)
        out.append(infonce_seq(z, c, self.W[-1], gen))
        return out


def flops_per_step(batch):
    """Nominal FLOPs of one step, counted as `gimc check` counts them (compiler/cost.c):
    ops with weights (conv1d, gru, infonce) 3x their forward, relu 2x, a multiply-add 2."""
    total, t, cin = 0.0, SAMPLES, 1

    def nce(tt, cz, cc):
        return sum(batch * (tt - k) * (2 * cz * cc + (1 + NEGATIVES) * (2 * cz + 3))
                   for k in range(1, STEPS_K + 1) if k < tt)

    for k, s, p in LAYERS:
        t = (t + 2 * p - k) // s + 1
        out = batch * CHANNELS * t
        total += 3 * out * (2 * cin * k + 1) + 2 * out + 3 * nce(t, CHANNELS, CHANNELS)
        cin = CHANNELS
    h = HIDDEN
    total += 3 * batch * t * (2 * 3 * h * (CHANNELS + h) + 12 * h) + 3 * nce(t, CHANNELS, h)
    return total


def make_model(seed):
    torch.manual_seed(seed)
    model = CpcAudio()
    opts = [torch.optim.Adam(model.module_params(m), lr=LR) for m in range(len(LAYERS) + 1)]
    return model, opts


def train_step(model, opts, x, gen):
    losses = model.losses(x, gen)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()     # the detaches make it each module's own
    for opt in opts:
        opt.step()
    return [l.item() for l in losses]


def run_bench(args):
    model, opts = make_model(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(args.batch, 1, SAMPLES, generator=gen) * 2 - 1   # like gimc bench: U(-1, 1)
    times, cpu = [], 0.0
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        losses = train_step(model, opts, x, gen)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu += time.process_time() - c0
        log(f"step {i + 1}: {time.perf_counter() - t0:.2f} s, losses " + " ".join(f"{l:.4f}" for l in losses))
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    flops = flops_per_step(args.batch)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "mode": "greedy", "model": "cpc_audio",
        "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "ms_per_step": round(med * 1e3, 2),
        "ms_per_step_min": round(times[0] * 1e3, 2),
        "cpu_ms_per_step": round(cpu / args.steps * 1e3, 1),     # all threads
        "examples_per_s": round(args.batch / med, 2),
        "flops_per_step": flops,
        "gflops": round(flops / med * 1e-9, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }), flush=True)


def naive_infonce(z, c, W, gen):
    """The definition position by position in float64, drawing the same negatives."""
    n, t, _ = z.shape
    flat = z.reshape(n * t, -1)
    total = 0.0
    count = 0
    for k in range(1, W.shape[0] + 1):
        if k >= t:
            continue
        m = n * (t - k)
        neg = torch.randint(n * t, (m, NEGATIVES), generator=gen)
        s = 0.0
        for p in range(m):
            ni, ti = divmod(p, t - k)
            pred = W[k - 1] @ c[ni, ti]
            cand = [flat[ni * t + ti + k]] + [flat[j] for j in neg[p]]
            sc = torch.stack([v @ pred for v in cand])
            s += float(torch.logsumexp(sc, 0) - sc[0])
        total += s / m
        count += 1
    return total / count


def run_check(args):
    ok_all = True

    def report(ok, what):
        nonlocal ok_all
        ok_all &= ok
        log(("ok   " if ok else "FAIL ") + what)

    torch.manual_seed(0)
    n, t, cz, cc, k = 2, 9, 5, 3, 3
    z = torch.randn(n, t, cz, dtype=torch.float64)
    c = torch.randn(n, t, cc, dtype=torch.float64)
    W = torch.randn(k, cz, cc, dtype=torch.float64)
    got = infonce_seq(z, c, W, torch.Generator().manual_seed(5)).item()
    want = naive_infonce(z, c, W, torch.Generator().manual_seed(5))
    report(abs(got - want) < 1e-9, f"infonce equals the position-by-position definition ({got:.9f} vs {want:.9f})")
    zero = infonce_seq(z, c, torch.zeros_like(W), torch.Generator().manual_seed(5)).item()
    report(abs(zero - math.log(1 + NEGATIVES)) < 1e-12, "loss = log(1 + negatives) when W = 0")
    zr, cr, Wr = (v.clone().requires_grad_() for v in (z, c, W))
    f = lambda a, b, w: infonce_seq(a, b, w, torch.Generator().manual_seed(5))
    report(torch.autograd.gradcheck(f, (zr, cr, Wr)), "gradcheck of infonce (z, c, W) in float64")
    gru = nn.GRU(cz, cc, batch_first=True).double()
    g = lambda a, w: infonce_seq(a, gru(a)[0], w, torch.Generator().manual_seed(5))
    report(torch.autograd.gradcheck(g, (zr, Wr)), "gradcheck of infonce with a GRU context in float64")
    model, opts = make_model(0)
    x = torch.rand(2, 1, SAMPLES) * 2 - 1
    gen = torch.Generator().manual_seed(1)
    first = train_step(model, opts, x, gen)
    report(all(abs(l - math.log(1 + NEGATIVES)) < 0.5 for l in first),
           "untrained losses near log 11: " + " ".join(f"{l:.3f}" for l in first))
    return 0 if ok_all else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count())
    if args.check:
        return run_check(args)
    if args.bench:
        run_bench(args)
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
