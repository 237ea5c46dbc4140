"""Train the embedded offline models from a seed: an EDM teacher on the 8x8 digits, then a one-step
DMD2 student distilled from it. `make digits-model` runs this on CPU in well under an hour.

Phases (each with a progress bar):
1. teacher: EDM denoising score matching (Karras et al. 2022) with an EMA of the weights;
2. pairs: the teacher's deterministic Heun sampler turns noise into digits;
3. warm-up: the student (initialised from the teacher) regresses those noise -> digit pairs in one
   step, as DMD2 did for one-step SDXL;
4. DMD: distribution matching: the generator follows the difference between the teacher's denoiser
   and an online "fake" denoiser trained on the generator's own samples, which is updated several
   times per generator update (DMD2's two time-scale rule).

Then both models are evaluated (classifier agreement, diversity) and written as fp16 safetensors with
their configs, a JSON summary and a model card.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ingest.digits import NUM_CLASSES, load_digits_dataset, quality
from ingest.models.edm import EDMConfig, EDMPrecond
from ingest.samplers import SamplerConfig, karras_sigmas, sample

DIGITS_CONFIG = EDMConfig(
    img_resolution=8,
    img_channels=1,
    label_dim=NUM_CLASSES,
    model_channels=32,
    channel_mult=(1, 2, 2),
    channel_mult_emb=2,
    num_blocks=1,
    attn_resolutions=(4,),
)
TEACHER_SAMPLER = SamplerConfig(kind="heun", steps=8)
STUDENT_SAMPLER = SamplerConfig(kind="one-step")
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclasses.dataclass
class TrainingConfig:
    seed: int = 0
    batch: int = 128
    teacher_iters: int = 6000
    teacher_lr: float = 1e-3
    ema_decay: float = 0.999
    pairs: int = 16384
    warmup_iters: int = 1000
    warmup_lr: float = 2e-4
    dmd_iters: int = 600
    fake_updates: int = 5
    generator_lr: float = 2e-5
    fake_lr: float = 1e-4
    eval_samples: int = 1000
    threads: int = 2


# --- phase 1: the teacher -------------------------------------------------------------------------


def edm_loss(model: EDMPrecond, images: torch.Tensor, labels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """EDM's weighted denoising loss at the given per-sample noise levels."""
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    noisy = images + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(images)
    denoised = model(noisy, sigma, labels)
    return (weight.reshape(-1, 1, 1, 1) * (denoised - images) ** 2).mean()


def train_teacher(cfg: TrainingConfig, images: torch.Tensor, labels: torch.Tensor) -> EDMPrecond:
    model = EDMPrecond(DIGITS_CONFIG)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.teacher_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.teacher_lr, total_steps=cfg.teacher_iters,
                                                   pct_start=0.05)
    bar = tqdm(range(cfg.teacher_iters), desc="teacher", unit="it")
    for step in bar:
        idx = torch.randint(0, len(images), (cfg.batch,))
        sigma = (torch.randn(cfg.batch) * 1.2 - 1.2).exp()  # EDM's log-normal training noise
        loss = edm_loss(model, images[idx], F.one_hot(labels[idx], NUM_CLASSES).float(), sigma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema.eval()


# --- phase 2: teacher noise -> image pairs ---------------------------------------------------------


def random_labels(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, NUM_CLASSES, (n,), generator=generator)


def generate(model: EDMPrecond, sampler: SamplerConfig, noise: torch.Tensor, labels: torch.Tensor,
             batch: int = 1024, desc: str | None = None) -> torch.Tensor:
    """Images in [-1, 1] for the given noise and class ids, in batches."""
    outputs = []
    for start in tqdm(range(0, len(noise), batch), desc=desc, unit="batch", disable=desc is None):
        end = start + batch
        one_hot = F.one_hot(labels[start:end], NUM_CLASSES).float()
        outputs.append(sample(model, noise[start:end], one_hot, sampler))
    return torch.cat(outputs)


# --- phase 3: regression warm-up of the student ----------------------------------------------------


def one_step(generator: EDMPrecond, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    sigma = STUDENT_SAMPLER.sigma_max
    return generator(noise * sigma, torch.full((len(noise),), sigma), F.one_hot(labels, NUM_CLASSES).float())


def warm_up(cfg: TrainingConfig, teacher: EDMPrecond, noise: torch.Tensor, labels: torch.Tensor,
            targets: torch.Tensor) -> EDMPrecond:
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.warmup_lr)
    bar = tqdm(range(cfg.warmup_iters), desc="warm-up", unit="it")
    for step in bar:
        idx = torch.randint(0, len(noise), (cfg.batch,))
        loss = F.mse_loss(one_step(student, noise[idx], labels[idx]), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return student


# --- phase 4: distribution matching ----------------------------------------------------------------


def dmd_sigmas(count: int = 1000) -> torch.Tensor:
    """Noise levels the distribution-matching loss probes: EDM's schedule, trimmed at both ends as DMD2 does."""
    levels = torch.tensor(karras_sigmas(count, 0.002, 80.0)[:-1], dtype=torch.float32)
    return levels[int(0.02 * count): int(0.98 * count)]


def distill(cfg: TrainingConfig, teacher: EDMPrecond, student: EDMPrecond) -> EDMPrecond:
    teacher = teacher.eval().requires_grad_(False)
    fake = copy.deepcopy(teacher).train().requires_grad_(True)
    student = student.train()
    gen_opt = torch.optim.Adam(student.parameters(), lr=cfg.generator_lr, betas=(0.0, 0.99))
    fake_opt = torch.optim.Adam(fake.parameters(), lr=cfg.fake_lr, betas=(0.0, 0.99))
    levels = dmd_sigmas()

    def fresh_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(cfg.batch, 1, 8, 8), torch.randint(0, NUM_CLASSES, (cfg.batch,))

    bar = tqdm(range(cfg.dmd_iters), desc="DMD", unit="it")
    for step in bar:
        # The fake denoiser tracks the generator's current distribution (several updates per step).
        for _ in range(cfg.fake_updates):
            noise, labels = fresh_batch()
            with torch.no_grad():
                images = one_step(student, noise, labels)
            sigma = levels[torch.randint(0, len(levels), (cfg.batch,))]
            fake_loss = edm_loss(fake, images, F.one_hot(labels, NUM_CLASSES).float(), sigma)
            fake_opt.zero_grad(set_to_none=True)
            fake_loss.backward()
            fake_opt.step()

        # Generator: move samples along (fake - real) denoiser difference, normalised per sample.
        noise, labels = fresh_batch()
        images = one_step(student, noise, labels)
        one_hot = F.one_hot(labels, NUM_CLASSES).float()
        with torch.no_grad():
            sigma = levels[torch.randint(0, len(levels), (cfg.batch,))]
            noisy = images + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(images)
            real_pred = teacher(noisy, sigma, one_hot)
            fake_pred = fake(noisy, sigma, one_hot)
            normaliser = (images - real_pred).abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            gradient = torch.nan_to_num((fake_pred - real_pred) / normaliser)
        dmd_loss = 0.5 * F.mse_loss(images, (images - gradient).detach(), reduction="sum") / cfg.batch
        gen_opt.zero_grad(set_to_none=True)
        dmd_loss.backward()
        gen_opt.step()
        if step % 10 == 0:
            bar.set_postfix(dmd=f"{dmd_loss.item():.4f}", fake=f"{fake_loss.item():.4f}")
    return student.eval()


# --- evaluation and files --------------------------------------------------------------------------


def evaluate(model: EDMPrecond, sampler: SamplerConfig, n: int, seed: int) -> dict[str, float]:
    """Quality figures for `n` samples with balanced labels from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    noise = torch.randn(n, 1, 8, 8, generator=gen)
    images = generate(model.eval(), sampler, noise, labels)
    return quality(images.numpy(), labels.numpy())


def save_model(model: EDMPrecond, name: str, sampler: SamplerConfig, out_dir: Path, extra: dict) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = out_dir / f"{name}.safetensors"
    save_file(weights, str(path))
    config = {"model_type": "DhariwalUNet", **DIGITS_CONFIG.to_dict(), "sampler": dataclasses.asdict(sampler), **extra}
    (out_dir / f"{name}.json").write_text(json.dumps(config, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.train_digits", description=__doc__.split("\n\n")[0])
    defaults = TrainingConfig()
    for field in dataclasses.fields(TrainingConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write weights and the card")
    args = parser.parse_args(argv)
    out_dir: Path = args.out
    cfg = TrainingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)})

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    images_np, labels_np = load_digits_dataset()
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a):
        start = time.perf_counter()
        result = fn(*a)
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    teacher = timed("teacher", train_teacher, cfg, images, labels)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    pair_noise = torch.randn(cfg.pairs, 1, 8, 8, generator=gen)
    pair_labels = random_labels(cfg.pairs, gen)
    targets = timed("pairs", lambda: generate(teacher, TEACHER_SAMPLER, pair_noise, pair_labels, desc="pairs"))
    student = timed("warm_up", warm_up, cfg, teacher, pair_noise, pair_labels, targets)
    warm_quality = evaluate(student, STUDENT_SAMPLER, cfg.eval_samples, seed=12345)
    student = timed("dmd", distill, cfg, teacher, student)

    # Figures are measured on the weights as shipped (rounded to fp16).
    paths = {
        "digits-edm": save_model(teacher, "digits-edm", TEACHER_SAMPLER, out_dir, {}),
        "digits-dmd2": save_model(student, "digits-dmd2", STUDENT_SAMPLER, out_dir, {}),
    }
    from ingest.checkpoints import load_checkpoint

    shipped = {name: load_checkpoint(EDMPrecond(DIGITS_CONFIG), path).eval() for name, path in paths.items()}
    summary = {
        "training": dataclasses.asdict(cfg),
        "seconds": timings,
        "total_minutes": round(sum(timings.values()) / 60, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "quality": {
            "digits-edm": evaluate(shipped["digits-edm"], TEACHER_SAMPLER, cfg.eval_samples, seed=12345),
            "digits-dmd2": evaluate(shipped["digits-dmd2"], STUDENT_SAMPLER, cfg.eval_samples, seed=12345),
            "student after warm-up only": warm_quality,
        },
    }
    (out_dir / "training_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out_dir / "MODEL_CARD.md").write_text(model_card(summary))
    print(json.dumps(summary["quality"], indent=1))
    print(f"wrote {', '.join(str(p) for p in paths.values())} and the model card in {out_dir}")
    return 0


def model_card(summary: dict) -> str:
    q = summary["quality"]
    rows = "\n".join(
        f"| {name} | {fig['agreement']:.3f} | {fig['diversity_ratio']:.3f} |" for name, fig in q.items()
    )
    cfg = summary["training"]
    return f"""# Embedded digits models: `digits-edm` (teacher) and `digits-dmd2` (one-step student)

Tiny class-conditional EDM generators (`EDMPrecond` + `DhariwalUNet`, {summary['parameters']:,} parameters
each, 8x8 grayscale, 10 labels) trained from scratch on scikit-learn's 1,797 handwritten digits by
`make digits-model` (`python -m ingest.train_digits --seed {cfg['seed']}`), so the whole pipeline runs
offline through the same code path as DMD2's ImageNet generator. Weights are stored in fp16.

- `digits-edm`: EDM denoiser trained {cfg['teacher_iters']} iterations (batch {cfg['batch']}, EMA
  {cfg['ema_decay']}); sampled with the deterministic Heun sampler, {TEACHER_SAMPLER.steps} steps from
  sigma 80 ({2 * TEACHER_SAMPLER.steps - 1} denoiser calls), each step captured.
- `digits-dmd2`: initialised from the teacher, warmed up {cfg['warmup_iters']} iterations on
  {cfg['pairs']} teacher noise -> digit pairs, then {cfg['dmd_iters']} DMD iterations (distribution
  matching against an online fake denoiser updated {cfg['fake_updates']}x per generator step). One step:
  D(80 z, sigma=80, label), exactly as DMD2 samples.

Training took {summary['total_minutes']} minutes on {summary['machine']}
({', '.join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in summary['seconds'].items())}).

![samples of the one-step student, one row per class](digits-dmd2-samples.png)
![samples of the teacher](digits-edm-samples.png)

## Quality ({q['digits-dmd2']['samples']} samples, 100 per class, seed 12345)

Agreement: share of samples that a logistic-regression classifier trained on the real digits assigns
to the conditioning label. Diversity ratio: mean pairwise L2 distance within a class, over the same
figure for the real digits. Reproduce with `make digits-report` (`python -m ingest.digits_report`).

| model | agreement | diversity ratio |
|---|---|---|
{rows}
"""


if __name__ == "__main__":
    raise SystemExit(main())
