"""Train the digits feature network (`make digits-features-model`): a small CNN classifier of scikit-learn's
real 8x8 digits whose penultimate layer is the `digits` extractor's feature space (`ingest.extractors`).

Deterministic from a seed, on the CPU, in seconds. The real digits are split by index: every fifth digit
(index % 5 == 0, 360 of 1,797) is held out, the rest is trained on, with random one-pixel shifts so the
features tolerate the small offsets of generated digits. Writes, in `ingest/weights/` by default:

- `digits-features.safetensors`: the fp32 weights (about 90 KB);
- `digits-features.json`: the network's config (what `ingest.extractors.load_digits_net` builds);
- `digits-features-training.json`: the training settings, time and the held-out accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ingest.digits import load_digits_dataset
from ingest.extractors import WEIGHTS_DIR, DigitsFeatureNet, DigitsNetConfig, load_digits_net

NAME = "digits-features"
HELD_OUT_EVERY = 5  # digits with index % 5 == 0 are held out


@dataclasses.dataclass
class FeatureTrainingConfig:
    seed: int = 0
    epochs: int = 40
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    threads: int = 2


def split() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, labels), (held-out images, labels)) of the real digits, images (n, 1, 8, 8) in [-1, 1]."""
    images, labels = load_digits_dataset()
    held_out = np.arange(len(labels)) % HELD_OUT_EVERY == 0
    as_tensors = lambda keep: (torch.from_numpy(images[keep]), torch.from_numpy(labels[keep]))  # noqa: E731
    return as_tensors(~held_out), as_tensors(held_out)


def shifted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction; the border filled with background (-1)."""
    padded = F.pad(images, (1, 1, 1, 1), value=-1.0)
    offsets = torch.randint(0, 3, (len(images), 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + 8, dx:dx + 8] for i, (dy, dx) in enumerate(offsets.tolist())])


def train(cfg: FeatureTrainingConfig, images: torch.Tensor, labels: torch.Tensor,
          progress: bool = True) -> DigitsFeatureNet:
    """The classifier trained from `cfg.seed` (same seed, same machine: the same weights)."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    net = DigitsFeatureNet(DigitsNetConfig()).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(images) // cfg.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    bar = tqdm(range(cfg.epochs), desc="digits features", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), cfg.batch):
            idx = order[start:start + cfg.batch]
            loss = F.cross_entropy(net(shifted(images[idx], generator)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return net.eval().requires_grad_(False)


@torch.inference_mode()
def accuracy(net: DigitsFeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` the classifier labels right."""
    return int((net(images).argmax(1) == labels).sum()) / len(labels)


def save(net: DigitsFeatureNet, out_dir: Path) -> Path:
    """The weights (fp32 safetensors) and the config JSON beside them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path))
    (out_dir / f"{NAME}.json").write_text(json.dumps(DigitsNetConfig().to_dict(), indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.train_digits_features",
                                     description=__doc__.split("\n\n")[0])
    defaults = FeatureTrainingConfig()
    for field in dataclasses.fields(FeatureTrainingConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write the weights and summary")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    cfg = FeatureTrainingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FeatureTrainingConfig)})

    torch.set_num_threads(cfg.threads)
    (train_images, train_labels), (test_images, test_labels) = split()
    started = time.perf_counter()
    net = train(cfg, train_images, train_labels, progress=not args.quiet)
    seconds = round(time.perf_counter() - started, 1)
    shipped = load_digits_net(save(net, args.out))  # figures of the file as written
    summary = {
        "training": dataclasses.asdict(cfg),
        "split": f"scikit-learn digits; held out: index % {HELD_OUT_EVERY} == 0 "
                 f"({len(test_labels)} digits), trained on the other {len(train_labels)}",
        "held_out_accuracy": accuracy(shipped, test_images, test_labels),
        "train_accuracy": accuracy(shipped, train_images, train_labels),
        "feature_dim": DigitsNetConfig().features,
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "seconds": seconds,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    (args.out / f"{NAME}-training.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"held-out accuracy {summary['held_out_accuracy']:.4f} ({len(test_labels)} digits); "
          f"wrote {args.out / f'{NAME}.safetensors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
