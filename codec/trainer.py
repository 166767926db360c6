"""The training loop: one CPU, one GPU, or many through torchrun (DDP), same recipe.

    codec train recipes/speech16k_rvq.toml --out runs/speech16k [--resume]

Determinism. Batch b of step s is drawn from a generator seeded by (seed, s), and the crops
and gains of its items by (seed, s, index); every other random choice (k-means, dead codes,
quantizer dropout, VAE noise) comes from torch's global RNG, which checkpoints save and
restore. So a run stopped at step N and resumed reaches the same weights as a straight run
(on the same machine, thread count and library versions).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from codec import distributed as dist
from codec.checkpoint import CheckpointError
from codec.data import EVAL_SPLITS, AudioDataset, DataConfig, DatasetError
from codec.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from codec.entropy import count_symbols
from codec.fileio import atomic_write_bytes
from codec.losses import MultiScaleMel, ReconstructionLoss, si_sdr
from codec.model import Codec
from codec.recipe import Recipe, load_recipe
from codec.rvq import ResidualVQ
from codec.train_state import list_checkpoints, load_train_state, remove_partial, save_checkpoint


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, a bad recipe, no data)."""


@dataclass
class TrainResult:
    step: int
    model_dir: Path | None        # final model (None when the run was interrupted)
    interrupted: bool


# ----------------------------------------------------------------------------- pieces
def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay from 1 to min_ratio at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_indices(seed: int, step: int, dataset_len: int, batch: int, rank: int, world: int,
                  weights: torch.Tensor | None = None) -> list[int]:
    """The items of this rank's share of step ``step``: the same on every run, disjoint across ranks.
    Every item alike, or drawn with ``weights`` (dataset_len,) (AudioDataset.sampling_weights)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if weights is None:
        picks = torch.randint(0, dataset_len, (batch * world,), generator=g)
    else:
        picks = torch.multinomial(weights, batch * world, replacement=True, generator=g)
    return picks[rank::world].tolist()


def load_batch(dataset: AudioDataset, seed_step: int, indices: list[int]) -> torch.Tensor:
    dataset.set_epoch(seed_step)
    return torch.stack([dataset[i] for i in indices])                    # (B, 1, T)


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checkpoints and leaves at the end of the step."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, device) -> bool:
        """True on every rank as soon as any rank was signalled."""
        if not dist.is_distributed():
            return self.raised                    # no device tensor: no wait for the GPU
        flag = torch.tensor(float(self.raised), device=device)
        return bool(dist.all_reduce_sum_(flag) > 0)


def health_metrics(model: Codec) -> dict[str, float]:
    if not model.is_quantized:
        return {}
    stages = model.bottleneck.health()
    return {"perplexity": sum(s["perplexity"] for s in stages) / len(stages),
            "dead_codes": float(sum(s["dead_codes"] for s in stages))}


def validation_batch(config: DataConfig, split: str, items: int) -> torch.Tensor | None:
    """Up to ``items`` fixed crops of ``split``, spread evenly over its items (so over its files
    and speakers in manifest order); None when the data has no such split.

    "valid" holds out prompts of the voices the recipe trains on, so it keeps the recipe's
    selection (kinds, languages, sources, speakers). The EVAL_SPLITS (voices and people that no
    recipe trains on) keep only its kinds: a recipe trained on some languages is still scored on
    every unseen voice.
    """
    if split != "valid":
        config = dataclasses.replace(config, languages=(), sources=(), speakers=(), weights={}, sampling="file",
                                     max_synthetic_share=1.0)
    try:
        dataset = AudioDataset(config, split)
    except DatasetError:
        return None
    n = min(items, len(dataset))
    if n == 0:
        return None
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int) if n > 1 else [0]
    return torch.stack([dataset[int(i)] for i in picks])


@torch.no_grad()
def validate(model: Codec, batch: torch.Tensor, mel: MultiScaleMel, split: str = "valid") -> dict[str, float]:
    """Log-mel distance and SI-SDR at 1, n_q / 2 and n_q codebooks (once for AE/VAE), logged as
    ``<split>/mel@<n_q>`` and ``<split>/si_sdr@<n_q>``."""
    was_training = model.training
    model.eval()
    levels = sorted({1, max(1, model.n_q // 2), model.n_q}) if model.is_quantized else [None]
    out = {}
    for n_q in levels:
        audio = model(batch, n_q).audio if n_q else model(batch).audio
        tag = f"@{n_q}" if n_q else ""
        out[f"{split}/mel{tag}"] = float(mel(batch, audio))
        out[f"{split}/si_sdr{tag}"] = float(si_sdr(batch, audio).mean())
    model.train(was_training)
    return out


@torch.no_grad()
def gather_symbol_counts(model: Codec, dataset: AudioDataset, items: int, batch: int) -> torch.Tensor:
    """Per-codebook symbol counts (n_q, K) over the first ``items`` crops of the dataset."""
    model.eval()
    counts = np.zeros((model.n_q, model.codebook_size), dtype=np.int64)
    device = next(model.parameters()).device
    dataset.set_epoch(0)
    idx = list(range(min(items, len(dataset))))
    for start in range(0, len(idx), batch):
        codes = model.encode(torch.stack([dataset[i] for i in idx[start:start + batch]]).to(device))
        counts += count_symbols(codes.cpu().numpy(), model.codebook_size)
    return torch.from_numpy(counts)


MODEL_PARTS = ("encoder", "bottleneck", "decoder")


def check_parts(parts, what: str) -> tuple[str, ...]:
    unknown = sorted(set(parts) - set(MODEL_PARTS))
    if unknown:
        raise TrainingError(f"train.{what} names unknown parts {unknown}; the parts are {list(MODEL_PARTS)}")
    return tuple(parts)


def freeze_parts(model: Codec, parts: tuple[str, ...]) -> None:
    """Keep ``parts`` of the model as they are: no gradients, and the layers in eval mode.

    The RVQ container of a frozen bottleneck stays in training mode, so quantizer dropout (and
    bypass) still draw per batch, while its codebooks, in eval mode, neither learn nor reset.
    Call after every ``model.train()``.
    """
    for name in parts:
        module = getattr(model, name)
        module.requires_grad_(False)
        module.eval()
        if isinstance(module, ResidualVQ) and model.training:
            module.training = True


# ----------------------------------------------------------------------------- the trainer
@contextmanager
def frozen(module: torch.nn.Module):
    """Within: ``module``'s parameters record no gradient (inputs still do); restored after."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


class Trainer:
    def __init__(self, recipe: Recipe, out_dir: Path, progress: bool = True) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.out_dir, self.ckpt_dir = Path(out_dir), Path(out_dir) / "checkpoints"
        if recipe.data.sample_rate != recipe.model.sample_rate:
            raise TrainingError(f"data.sample_rate ({recipe.data.sample_rate}) must equal "
                                f"model.sample_rate ({recipe.model.sample_rate})")
        self.device = self._setup_distributed()
        if self.cfg.threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(self.cfg.threads)
        torch.manual_seed(self.cfg.seed)
        self.model = Codec(recipe.model)
        self.frozen_parts = check_parts(self.cfg.freeze, "freeze")
        if self.cfg.init_from:
            self._warm_start(self.cfg.init_from, check_parts(self.cfg.init_parts, "init_parts"))
        elif self.cfg.init_parts:
            raise TrainingError("train.init_parts needs train.init_from")
        self.model = self.model.to(self.device).train()
        freeze_parts(self.model, self.frozen_parts)
        self.ddp = (DistributedDataParallel(self.model, broadcast_buffers=False,
                                            device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if dist.is_distributed() else self.model)
        self.loss = ReconstructionLoss(recipe.model.sample_rate, recipe.loss).to(self.device)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=self.cfg.lr, betas=tuple(self.cfg.betas),
                                     weight_decay=self.cfg.weight_decay)
        self.optimizers, self.extra = {"model": self.opt}, {}
        self.disc = None
        if self.cfg.adversarial:
            self.disc = MultiScaleSTFTDiscriminator().to(self.device)
            self.disc_ddp = (DistributedDataParallel(self.disc, device_ids=[self.device.index]
                                                     if self.device.type == "cuda" else None)
                             if dist.is_distributed() else self.disc)
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=self.cfg.disc_lr, betas=tuple(self.cfg.betas))
            self.optimizers["disc"], self.extra["disc"] = self.opt_d, self.disc
        try:
            self.train_set = AudioDataset(recipe.data, "train")
        except (DatasetError, OSError) as e:
            raise TrainingError(f"no training data: {e}") from None
        self.valid_batches = {split: batch.to(self.device) for split in ("valid", *EVAL_SPLITS)
                              if (batch := validation_batch(recipe.data, split, self.cfg.valid_items)) is not None}
        self.valid_mel = MultiScaleMel(recipe.model.sample_rate).to(self.device)
        self.step = 0
        self.progress = progress and dist.rank() == 0

    def _warm_start(self, source: str, parts: tuple[str, ...] = ()) -> None:
        """Start from another model's weights and codebooks (its config must build the same tensors).

        With ``parts``, only those modules are taken (e.g. a new decoder over a trained encoder
        and quantizer); the rest keep this recipe's initialisation.
        """
        import codec
        start = codec.load(source)
        try:
            if not parts:
                self.model.load_state_dict(start.state_dict())
            for name in parts:
                getattr(self.model, name).load_state_dict(getattr(start, name).state_dict())
        except RuntimeError as e:
            raise TrainingError(f"cannot start from {source}: its weights do not fit this recipe's model ({e})") from None

    def _setup_distributed(self) -> torch.device:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch_dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch_dist.init_process_group(backend)
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            torch.backends.cudnn.benchmark = True      # fixed crop shapes: let cuDNN pick its fastest kernels
            return torch.device("cuda", local)
        return torch.device("cpu")

    # -- checkpoints ------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load the newest complete checkpoint, if any. Every rank loads the same files."""
        if dist.rank() == 0:
            remove_partial(self.ckpt_dir)
        found = list_checkpoints(self.ckpt_dir)
        if not found:
            return False
        failures = []
        for path in reversed(found):             # newest first; a damaged one falls back to the one before
            try:
                self.step = load_train_state(path, self.model, self.optimizers, self.extra)
            except (CheckpointError, ValueError, KeyError, RuntimeError, OSError) as err:
                failures.append(f"{path.name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                warnings.warn(f"checkpoint {path} does not load ({failures[-1]}); trying the one before", stacklevel=2)
                continue
            if dist.rank() == 0:
                truncate_log(self.out_dir / "metrics.jsonl", self.step)
            return True
        raise TrainingError(f"no checkpoint in {self.ckpt_dir} loads: " + "; ".join(failures))

    def save(self) -> Path | None:
        return self._on_rank_zero(lambda: save_checkpoint(self.ckpt_dir, self.step, self.model, self.optimizers,
                                                          self.extra, self.recipe.to_json(),
                                                          self.cfg.keep_checkpoints))

    def _on_rank_zero(self, work):
        """Run work() on rank 0 while the others wait; if it fails, every rank raises (no rank hangs)."""
        result, error = None, None
        if dist.rank() == 0:
            try:
                result = work()
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                error = e
        failed = dist.all_reduce_sum_(torch.tensor(float(error is not None), device=self.device))
        if error is not None:
            raise error
        if failed > 0:
            raise TrainingError("rank 0 failed while writing; see its error")
        return result

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor) -> dict[str, float | torch.Tensor]:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(self.step, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        amp = torch.autocast("cuda", torch.bfloat16) if cfg.amp and self.device.type == "cuda" else nullcontext()
        with amp:
            out = self.ddp(batch)
            total, terms = self.loss(batch, out.audio, out.losses, self.step)
            adversarial = self.disc is not None and self.step >= cfg.adversarial_start
            if adversarial:
                # D sees the real batch once: its features are the generator's targets (detached
                # in generator_losses) and its logits enter D's own loss after the generator's
                # step, which leaves D's weights as they are (its graph on the real batch is kept
                # until then: one D forward fewer for the memory of its activations). For the
                # generator's output the generator needs D's gradient with respect to that input
                # only: the plain module with its weights frozen, so no gradient of D is recorded
                # or reduced.
                real = self.disc_ddp(batch)
                with frozen(self.disc):
                    fake = self.disc(out.audio)
                adv, fm = generator_losses(real, fake, cfg.adversarial_loss)
                terms.update(adversarial=adv, feature_matching=fm)
                total = total + self.recipe.loss.adversarial * adv + self.recipe.loss.feature_matching * fm
        self._check_finite(total)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        if adversarial:
            with amp:
                d_loss = discriminator_loss(real, self.disc_ddp(out.audio.detach()), cfg.adversarial_loss)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            terms["disc"] = d_loss
        # Tensors, not floats: reading a GPU value waits for the GPU, so fit() converts them
        # only on the steps it logs.
        metrics = {f"loss/{k}": v.detach() for k, v in terms.items()}
        metrics.update(loss=total.detach(), grad_norm=grad_norm.detach(), lr=self.opt.param_groups[0]["lr"],
                       kbps=out.bits_per_frame.detach() * self.model.frame_rate / 1000)
        metrics.update(out.metrics)
        return metrics

    def _check_finite(self, total: torch.Tensor) -> None:
        bad = torch.tensor(float(not torch.isfinite(total)), device=self.device)
        if dist.all_reduce_sum_(bad) > 0:
            last = list_checkpoints(self.ckpt_dir)
            where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
            raise TrainingError(f"the loss became {float(total.detach())} at step {self.step}; stopping ({where})")

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, until: int | None = None) -> TrainResult:
        """Train to ``cfg.steps``; with ``until``, stop after that step as if interrupted (checkpoint, no final model)."""
        cfg = self.cfg
        last = cfg.steps if until is None else min(until, cfg.steps)
        log = self.out_dir / "metrics.jsonl"
        if dist.rank() == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc="train")
        rank, world = dist.rank(), dist.world_size()
        with StopFlag() as stop:
            while self.step < last:
                t0 = time.perf_counter()
                idx = batch_indices(cfg.seed, self.step, len(self.train_set), cfg.batch_size, rank, world,
                                    self.train_set.sampling_weights)
                batch = load_batch(self.train_set, self.step, idx).to(self.device)
                metrics = self.train_step(batch)
                self.step += 1
                metrics["step_seconds"] = time.perf_counter() - t0
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    metrics = {k: float(v) for k, v in metrics.items()}
                    metrics.update(health_metrics(self.model))
                    self._log(log, metrics, bar)
                if self.valid_batches and self.step % cfg.valid_every == 0 and rank == 0:
                    for split, valid_batch in self.valid_batches.items():
                        self._log(log, validate(self.model, valid_batch, self.valid_mel, split), None)
                    freeze_parts(self.model, self.frozen_parts)
                bar.update(1)
                if stop.agreed(self.device) or self.step == last < cfg.steps:
                    self.save()
                    bar.close()
                    return TrainResult(self.step, None, interrupted=True)
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
        bar.close()
        if self.step < cfg.steps:                # resumed at or past ``until``: nothing to do, no final model
            return TrainResult(self.step, None, interrupted=True)
        return TrainResult(self.step, self.finish(), interrupted=False)

    def check_ranks_agree(self) -> list[str]:
        """Fingerprints of every rank's weights and buffers (EMA sums included; the discriminator's
        too, whose gradients its own DDP wrapper reduces); a TrainingError if they differ."""
        from codec.checkpoint import state_fingerprint
        state = self.model.state_dict()
        if self.disc is not None:
            state = {**{f"model.{k}": v for k, v in state.items()},
                     **{f"disc.{k}": v for k, v in self.disc.state_dict().items()}}
        fp = state_fingerprint(state)
        mine = torch.tensor([int(fp[:15], 16)], dtype=torch.int64, device=self.device)
        every = [mine]
        if dist.is_distributed():
            every = [torch.zeros_like(mine) for _ in range(dist.world_size())]
            torch_dist.all_gather(every, mine)
        prints = [f"{int(t):015x}" for t in every]
        if len(set(prints)) > 1:
            raise TrainingError(f"ranks disagree on the model state: {prints}")
        return prints

    def finish(self) -> Path | None:
        """Symbol statistics over training crops, a last checkpoint and the final model directory."""
        self._log(self.out_dir / "metrics.jsonl", {"rank_fingerprints": self.check_ranks_agree()}, None)

        def statistics_and_model() -> Path:
            if self.model.is_quantized:
                self.model.symbol_counts.copy_(gather_symbol_counts(self.model, self.train_set,
                                                                    self.cfg.stats_items, self.cfg.batch_size))
            return self.model.save(self.out_dir / "model")
        final = self._on_rank_zero(statistics_and_model)
        self.save()
        return final

    def _log(self, path: Path, metrics: dict, bar) -> None:
        if dist.rank() != 0:
            return
        with open(path, "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        if bar is not None:
            shown = {"loss": metrics["loss"], "kbps": metrics["kbps"]}
            shown.update({k: metrics[k] for k in ("perplexity", "dead_codes") if k in metrics})
            bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)


def truncate_log(path: Path, step: int) -> None:
    """Drop the lines of a metrics.jsonl logged after ``step`` (a resumed run logs them again);
    a torn last line (a kill mid-write) goes too. Rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            logged = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            continue
        if isinstance(logged, int) and logged <= step and line.endswith("\n"):
            kept.append(line)
    atomic_write_bytes(path, "".join(kept).encode())


def train_from_recipe(recipe_path, out_dir=None, resume: bool = False, overrides=(), progress: bool = True,
                      until: int | None = None) -> TrainResult:
    """Train the recipe at ``recipe_path`` into ``out_dir`` (default runs/<recipe name>).

    ``overrides`` are "table.key=value" strings; ``until`` stops early with a checkpoint.
    """
    recipe = load_recipe(recipe_path, overrides)
    out_dir = Path(out_dir) if out_dir else Path("runs") / Path(recipe_path).stem
    if not resume and list_checkpoints(out_dir / "checkpoints"):
        raise TrainingError(f"{out_dir} already holds checkpoints: pass --resume to continue, or another --out")
    trainer = Trainer(recipe, out_dir, progress)
    if resume:
        trainer.resume()
    try:
        return trainer.fit(until)
    finally:
        dist.shut_down()
