#!/usr/bin/env python
"""Our training step against an independent PyTorch reference on the same CPU, side by side.

The reference is written here from docs/sharpness-aware.md, not from our code: the CIFAR ResNet-18
of `looksam.models.resnet18` (kuangliu/pytorch-cifar: 3x3 stem, BasicBlocks (2, 2, 2, 2),
projection shortcuts; parameter count checked equal), torch.optim.SGD-style momentum with
coupled weight decay on every parameter, SAM as exactly its two passes (g at w, g_s at w + eps,
BatchNorm statistics of the clean pass kept), and ESAM(beta, gamma) with SWP's per-tensor keep mask
and SDS's no-grad forward at w + eps and backward on the ceil(gamma n) sharpest examples.

Ours is the trainer's own step (`looksam.train.make_train_step`, compiled as the trainer compiles
it) on the device count a user gets by default (`looksam.host_devices`). Each round times
`--steps` steps of ours and of PyTorch's for every method, alternating which goes first; the table
gives per method the median ms/step of each, the median of the per-round ratios ours / PyTorch,
and each implementation's ratio to its own SGD step.

    pip install -e '.[bench]'            # torch, for this script and tests/test_torch_reference.py
    python scripts/bench_torch.py        # ResNet-18 width 64, batch 128, 5 rounds x 2 steps
    python scripts/bench_torch.py --width 16 --rounds 3 --out docs/bench/torch_cpu_w16.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

METHODS = ("sgd", "sam", "esam")


# ---- the PyTorch reference ------------------------------------------------------------------------

def torch_resnet18(width: int = 64, num_classes: int = 10):
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            y = nn.functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return nn.functional.relu(y + self.shortcut(x))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            blocks, cin = [], width
            for stage in range(4):
                for j in range(2):
                    cout = width * 2**stage
                    blocks.append(Block(cin, cout, 2 if stage > 0 and j == 0 else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(cin, num_classes)

        def forward(self, x):
            x = nn.functional.relu(self.bn1(self.conv1(x)))
            x = self.blocks(x)
            return self.linear(x.mean(dim=(2, 3)))

    return ResNet18()


def load_flax_params(model, params) -> None:
    """Copies a looksam resnet18 parameter tree into the reference (HWIO -> OIHW kernels)."""
    import numpy as np
    import torch

    def conv(module, kernel):
        module.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))

    def bn(module, p):
        module.weight.data = torch.from_numpy(np.array(p["scale"]))
        module.bias.data = torch.from_numpy(np.array(p["bias"]))

    conv(model.conv1, params["Conv_0"]["kernel"])
    bn(model.bn1, params["BatchNorm_0"])
    for i, block in enumerate(model.blocks):
        p = params[f"BasicBlock_{i}"]
        conv(block.conv1, p["Conv_0"]["kernel"])
        bn(block.bn1, p["BatchNorm_0"])
        conv(block.conv2, p["Conv_1"]["kernel"])
        bn(block.bn2, p["BatchNorm_1"])
        if len(block.shortcut):
            conv(block.shortcut[0], p["Conv_2"]["kernel"])
            bn(block.shortcut[1], p["BatchNorm_2"])
    model.linear.weight.data = torch.from_numpy(np.array(params["Dense_0"]["kernel"]).T.copy())
    model.linear.bias.data = torch.from_numpy(np.array(params["Dense_0"]["bias"]))


def flax_params_of(model, like):
    """The reference's parameters as a looksam resnet18 tree shaped like `like` (for comparing)."""
    out = {}

    def conv(module):
        return {"kernel": module.weight.detach().numpy().transpose(2, 3, 1, 0)}

    def bn(module):
        return {"scale": module.weight.detach().numpy(), "bias": module.bias.detach().numpy()}

    out["Conv_0"], out["BatchNorm_0"] = conv(model.conv1), bn(model.bn1)
    for i, block in enumerate(model.blocks):
        p = {"Conv_0": conv(block.conv1), "BatchNorm_0": bn(block.bn1), "Conv_1": conv(block.conv2),
             "BatchNorm_1": bn(block.bn2)}
        if len(block.shortcut):
            p["Conv_2"], p["BatchNorm_2"] = conv(block.shortcut[0]), bn(block.shortcut[1])
        out[f"BasicBlock_{i}"] = p
    out["Dense_0"] = {"kernel": model.linear.weight.detach().numpy().T,
                      "bias": model.linear.bias.detach().numpy()}
    assert set(out) == set(like)
    return out


class TorchStep:
    """One training step of SGD-M, SAM or ESAM on the reference model, as the spec writes it."""

    def __init__(self, model, method, lr, momentum=0.9, weight_decay=5e-4, rho=0.05, beta=0.6,
                 gamma=0.5, seed=0):
        import torch

        self.model, self.method = model, method
        self.lr, self.momentum, self.wd = lr, momentum, weight_decay
        self.rho, self.beta, self.gamma = rho, beta, gamma
        self.params = [p for p in model.parameters()]
        self.buffers = [None] * len(self.params)
        self.generator = torch.Generator().manual_seed(seed)

    def _grads(self, images, labels, keep_stats: bool = True):
        """Mean cross-entropy gradient at the current weights (train-mode BatchNorm)."""
        import torch

        saved = None if keep_stats else [(m.running_mean.clone(), m.running_var.clone(),
                                          m.num_batches_tracked.clone())
                                         for m in self._bns()]
        for p in self.params:
            p.grad = None
        loss = torch.nn.functional.cross_entropy(self.model(images), labels, reduction="none")
        loss.mean().backward()
        if saved is not None:  # a second pass: the clean pass's statistics stay
            for m, (mean, var, n) in zip(self._bns(), saved, strict=True):
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(n)
        return [p.grad.detach().clone() for p in self.params], loss.detach()

    def _bns(self):
        import torch

        return [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    def _perturb(self, eps, sign):
        import torch

        with torch.no_grad():
            for p, e in zip(self.params, eps, strict=True):
                p.add_(sign * e)

    def __call__(self, images, labels):
        import torch

        self.model.train()
        g, losses = self._grads(images, labels)
        if self.method == "sgd":
            grads = g
        elif self.method == "sam":
            norm = torch.sqrt(sum((x * x).sum() for x in g))
            eps = [self.rho * x / (norm + 1e-12) for x in g]
            self._perturb(eps, +1)
            grads, _ = self._grads(images, labels, keep_stats=False)
            self._perturb(eps, -1)
        else:  # esam: SWP keeps each tensor with probability beta; SDS picks the sharpest examples
            keep = (torch.rand(len(g), generator=self.generator) < self.beta).float()
            masked = [k * x for k, x in zip(keep, g, strict=True)]
            norm = torch.sqrt(sum((x * x).sum() for x in masked))
            eps = [(self.rho / self.beta) * x / (norm + 1e-12) for x in masked]
            self._perturb(eps, +1)
            saved = [(m.running_mean.clone(), m.running_var.clone()) for m in self._bns()]
            with torch.no_grad():
                perturbed = torch.nn.functional.cross_entropy(self.model(images), labels,
                                                              reduction="none")
            for m, (mean, var) in zip(self._bns(), saved, strict=True):
                m.running_mean.copy_(mean), m.running_var.copy_(var)
            count = math.ceil(round(self.gamma * len(labels), 6))
            chosen = torch.argsort(perturbed - losses, descending=True, stable=True)[:count]
            grads, _ = self._grads(images[chosen], labels[chosen], keep_stats=False)
            self._perturb(eps, -1)
        with torch.no_grad():  # torch.optim.SGD: d = g + wd w; buf = m buf + d; w -= lr buf
            for i, (p, d) in enumerate(zip(self.params, grads, strict=True)):
                d = d + self.wd * p
                self.buffers[i] = d.clone() if self.buffers[i] is None else (
                    self.momentum * self.buffers[i] + d)
                p.sub_(self.lr * self.buffers[i])
        return losses.mean()


# ---- ours ---------------------------------------------------------------------------------------------

def our_step(method, width, batch, lr, weight_decay, rho=0.05, beta=0.6, gamma=0.5, seed=0):
    """(params of the initial state, a function running one step on (images, labels)) built with
    the trainer's own pieces: models.create, train.make_train_step, train.compile_steps."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from looksam import models, optim, sam, train

    model = models.create("resnet18", width=width, num_classes=10)
    tx = optim.optimizer("sgd", lr, momentum=0.9, weight_decay=weight_decay)
    kw = {"sgd": ("none", {}), "sam": ("sam", dict(rho=rho)),
          "esam": ("esam", dict(rho=rho, beta=beta, gamma=gamma))}[method]
    est = sam.make(kw[0], **kw[1])
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    import dataclasses

    est = dataclasses.replace(est, batch_sharding=sharded)
    root = jax.random.key(seed)
    state = jax.device_put(train.initial_state(model, tx, est, 32, root), replicated)
    shapes = {"image": jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.float32, sharding=sharded),
              "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharded)}
    steps = train.compile_steps(train.make_train_step(model, tx, est, lambda s: lr, root), est,
                                state, shapes)
    holder = {"state": state, "steps": steps}  # steps: the compiled programs (for profiles)

    def run(images, labels):
        b = {"image": jax.device_put(images, sharded), "label": jax.device_put(labels, sharded)}
        holder["state"], metrics = steps[est.is_sam_step(0)](holder["state"], b)
        return metrics

    return holder, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=2, help="timed steps per block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None, help="write the results as JSON")
    args = p.parse_args(argv)
    if args.rounds < 5:
        print("note: fewer than 5 rounds is a smoke check, not a measurement", file=sys.stderr)

    from looksam import host_devices

    host_devices.configure(argparse.Namespace(batch_size=args.batch, eval_batch_size=args.batch,
                                              microbatch=None, num_devices=None))
    try:
        import torch
    except ImportError:
        raise SystemExit("error: PyTorch is not installed: pip install -e '.[bench]'") from None
    import jax
    import numpy as np

    torch.set_num_threads(host_devices.available_cores())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 10, args.batch).astype(np.int32)
    t_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    t_labels = torch.from_numpy(labels.astype(np.int64))
    runners = {}
    for method in args.methods:
        holder, ours = our_step(method, args.width, args.batch, 0.05,
                                5e-4 if method == "sgd" else 1e-3)
        model = torch_resnet18(args.width)
        load_flax_params(model, holder["state"].params)
        n_ours = sum(x.size for x in jax.tree.leaves(holder["state"].params))
        n_torch = sum(p.numel() for p in model.parameters())
        if n_ours != n_torch:
            raise SystemExit(f"error: parameter counts differ: ours {n_ours:,}, torch {n_torch:,}")
        theirs = TorchStep(model, method, 0.05, weight_decay=5e-4 if method == "sgd" else 1e-3)
        jax.block_until_ready(ours(images, labels))  # warm-up (compiled already; first dispatch)
        theirs(t_images, t_labels)
        runners[method] = (ours, theirs)
    print(f"ResNet-18 width {args.width} ({n_ours:,} parameters), batch {args.batch}; ours on "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), torch {torch.__version__} "
          f"on {torch.get_num_threads()} thread(s); {args.rounds} rounds x {args.steps} steps",
          flush=True)

    times = {m: {"ours": [], "torch": []} for m in args.methods}
    for r in range(args.rounds):
        for method in args.methods:
            ours, theirs = runners[method]
            order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
            for who in order:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    if who == "ours":
                        jax.block_until_ready(ours(images, labels))
                    else:
                        theirs(t_images, t_labels)
                times[method][who].append((time.perf_counter() - t0) / args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{m} {times[m]['ours'][-1] * 1e3:.0f}/{times[m]['torch'][-1] * 1e3:.0f} ms"
            for m in args.methods), flush=True)

    rows = {}
    for m in args.methods:
        ratio = statistics.median(o / t for o, t in zip(times[m]["ours"], times[m]["torch"], strict=True))
        rows[m] = {"ours_ms": 1e3 * statistics.median(times[m]["ours"]),
                   "torch_ms": 1e3 * statistics.median(times[m]["torch"]), "ours_over_torch": ratio}
    print("\n| step | PyTorch ms | ours ms | ours / PyTorch (median of rounds) | PyTorch / its SGD | "
          "ours / its SGD |\n|---|---:|---:|---:|---:|---:|")
    for m, row in rows.items():
        own = {k: row[f"{k}_ms"] / rows["sgd"][f"{k}_ms"] if "sgd" in rows else float("nan")
               for k in ("torch", "ours")}
        row.update(torch_over_sgd=own["torch"], ours_over_sgd=own["ours"])
        print(f"| {m} | {row['torch_ms']:.0f} | {row['ours_ms']:.0f} | {row['ours_over_torch']:.2f} | "
              f"{own['torch']:.2f} | {own['ours']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "times_s": times,
                       "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch": torch.__version__,
                       "devices": jax.device_count()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
