"""DeSKPro training throughput and peak memory, against its own baseline in the same run.

Each configuration trains a few steps of eq. 7 on one P x K batch of random tensors (the
data loader is not what is measured) in a fresh subprocess, so that every peak RSS is its
own: the full two-stream DeSKPro (global stream with CSA and L_att, face student, frozen
teacher for L_fkp) against the LightMBN baseline G (global stream alone, Table 3 model 1).
Run: python benchmarks/reid_train_throughput.py [--steps 10 --height 64 --width 32 --device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = ("baseline", "deskpro")


def measure(config: str, args: argparse.Namespace) -> dict:
    import torch

    from lightning_modules.deskpro import DeSKProModule, DeSKProWeights, ReidStream

    torch.manual_seed(0)
    device = torch.device(args.device)
    batch_size, classes = args.p * args.k, 100
    stream = lambda csa=False: ReidStream(classes, args.backbone, args.embedding_dim, csa=csa)  # noqa: E731
    if config == "baseline":
        module = DeSKProModule(classes, stream(), None, None, DeSKProWeights(alpha=0.0), attention_loss=False)
    else:
        module = DeSKProModule(classes, stream(True), stream(), stream(), DeSKProWeights(), attention_loss=True)
    module = module.to(device).train()
    batch = {
        "image": torch.rand(batch_size, 3, args.height, args.width),
        "cloth_mask": (torch.rand(batch_size, args.height, args.width) > 0.5).float(),
        "has_parsing": torch.ones(batch_size, dtype=torch.bool), "face": torch.rand(batch_size, 3, args.face, args.face),
        "restored_face": torch.rand(batch_size, 3, args.face, args.face),
        "has_face": torch.rand(batch_size) < 0.8, "label": torch.arange(batch_size) // args.k,
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def step() -> None:
        with autocast:
            loss, _ = module.compute_loss(batch)  # eq. 7 exactly as training_step computes it
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"config": config, "images_per_s": args.steps * batch_size / seconds,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--p", type=int, default=16, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="images per identity")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--face", type=int, default=32)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--backbone", default="osnet_x0_25")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    results = {}
    for config in CONFIGS:
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", config], capture_output=True,
                               text=True, check=True)
        results[config] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"batch {args.p} x {args.k}, body {args.height}x{args.width}, face {args.face}, {args.backbone}, "
          f"{args.device}{' bf16' if args.bf16 else ''}")
    for config, r in results.items():
        gpu = f"  peak GPU {r['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in r else ""
        print(f"{config:>10}: {r['images_per_s']:8.1f} images/s  peak RSS {r['peak_rss_mib']:.0f} MiB{gpu}")
    ratio = results["deskpro"]["images_per_s"] / results["baseline"]["images_per_s"]
    print(f"DeSKPro / baseline throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
