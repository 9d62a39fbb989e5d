"""Stage 1: train a VQ-f4 ``VQModel`` on infrared images.

A ``VQModel`` trained from scratch with its default codebook (tiny uniform values) collapses: the
encoder output drifts away from the codebook, a handful of codes take every vector, and the L1 loss
stalls. What working VQ trainers do, and this stage does:

1. train **unquantised** for ``--vq_warmup_steps`` (a plain autoencoder), so that the encoder's
   output distribution exists before any code is chosen;
2. **initialise the codebook** from encoder outputs by k-means;
3. **re-seed dead codes** every ``--vq_reseed_steps`` with encoder outputs of the current batch;
4. log **codebook usage** (fraction of codes used in the window, batch perplexity).

Loss: L1 + LPIPS + the quantiser's commitment/codebook loss.

``--keep_latent_space`` trains a new decoder for an existing latent space instead (the adapter and UNet
trained on it stay valid): a frozen copy of the pretrained model encodes each crop, the decoder learns
``decode(z_teacher) -> HR`` (L1 + LPIPS), and an encoder whose architecture changed (``--vqvae_mid_block_attention
drop``) learns to reproduce ``z_teacher`` (MSE, ``--latent_distill_weight``); the codebook stays frozen.
Dropping the mid-block self-attention makes decode time and memory linear in the pixels: the attention
runs over every latent pixel, so its cost grows with the square of the image area.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast
from diffusers import VQModel
from torch import nn

from difiisr_dwt.data import build_training_dataset
from difiisr_dwt.evaluation import image_metrics
from difiisr_dwt.presets import build_vqvae
from difiisr_dwt.training.stage import Stage, freeze, load_lpips_model, load_vqvae
from difiisr_dwt.training.validation import (
    load_validation_set,
    save_validation_grid,
    to_uint8,
    validation_metric_settings,
)

# k-means draws keys far above the training stream's so that its crops are its own
_INIT_KEY_OFFSET = 10**15


class VQTrainer(nn.Module):
    """What DDP wraps: the autoencoder's forward with or without quantisation."""

    def __init__(self, vqvae: VQModel):
        super().__init__()
        self.vqvae = vqvae

    def forward(self, images: torch.Tensor, quantize: bool):
        """Returns ``(reconstruction (B, 3, H, W), latents (B, c, H/4, W/4), quantiser loss, code indices)``."""
        latents = self.vqvae.encode(images).latents
        if quantize:
            quant, vq_loss, (_, _, indices) = self.vqvae.quantize(latents)
        else:
            # the codebook takes no part in the warm-up; the zero term keeps DDP's every-parameter-used check happy
            quant, vq_loss, indices = latents, 0.0 * self.vqvae.quantize.embedding.weight.sum(), None
        recon = self.vqvae.decode(quant, force_not_quantize=True).sample
        return recon, latents, vq_loss, indices


class LatentKeepingTrainer(nn.Module):
    """What DDP wraps with ``--keep_latent_space``: decode the teacher's latents, encode the images."""

    def __init__(self, vqvae: VQModel, train_encoder: bool):
        super().__init__()
        self.vqvae, self.train_encoder = vqvae, train_encoder

    def forward(self, images: torch.Tensor, teacher_latents: torch.Tensor):
        """Returns ``(reconstruction of the teacher latents (B, 3, H, W), own latents (B, c, H/4, W/4) or None)``."""
        recon = self.vqvae.decode(teacher_latents, force_not_quantize=True).sample
        latents = self.vqvae.encode(images).latents if self.train_encoder else None
        return recon, latents


def without_mid_block_attention(vqvae: VQModel) -> VQModel:
    """A copy of ``vqvae`` without the mid-block self-attention of its encoder and decoder (diffusers'
    ``mid_block_add_attention=False``); every other weight is copied (strictly: nothing left at random)."""
    student = VQModel.from_config({**vqvae.config, "mid_block_add_attention": False})
    target = student.state_dict().keys()
    student.load_state_dict({k: v for k, v in vqvae.state_dict().items() if k in target}, strict=True)
    return student


def kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means on `(N, D)` points from ``k`` random points; empty clusters take random points.

    Returns:
        `(k, D)` centroids.
    """
    if points.shape[0] < k:  # too few vectors: repeat them (jittered below by the empty-cluster rule)
        points = points.repeat(k // points.shape[0] + 1, 1)
    centroids = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(points, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            refill = torch.randint(points.shape[0], (int(empty.sum()),), generator=generator)
            centroids[empty] = points[refill]
    return centroids


class AutoencoderStage(Stage):
    name = "autoencoder"
    component_name = "vqvae"

    def __init__(self, args: argparse.Namespace, accelerator):
        super().__init__(args, accelerator)
        self.component = load_vqvae(args) if args.vqvae_model_name_or_path else build_vqvae(args.preset)
        self.teacher: VQModel | None = None
        if args.vqvae_mid_block_attention == "drop":
            teacher, self.component = self.component, without_mid_block_attention(self.component)
            if args.keep_latent_space:
                self.teacher = teacher.to(accelerator.device)
                freeze(self.teacher)
        self.component.train()
        if args.keep_latent_space:
            vq = self.component
            # unchanged encoder: it is its own teacher, frozen; changed: the unchanged copy teaches it
            freeze(vq.quantize, *(() if self.teacher is not None else (vq.encoder, vq.quant_conv)))
            if self.teacher is None:
                self.teacher = vq
            self.module = LatentKeepingTrainer(vq, train_encoder=self.teacher is not vq)
        else:
            self.module = VQTrainer(self.component)
        self.lpips = load_lpips_model(args, accelerator.device) if args.lpips_weight > 0 else None
        self.num_codes = self.component.config.num_vq_embeddings
        self.usage = torch.zeros(self.num_codes, dtype=torch.long)
        self.last_latents: torch.Tensor | None = None
        # a pretrained autoencoder already has a codebook: no warm-up, no re-initialisation
        self.warmup_steps = 0 if args.vqvae_model_name_or_path else args.vq_warmup_steps

    def quantizing(self, step: int) -> bool:
        return step >= self.warmup_steps

    def training_step(self, module, batch, generator, step):
        hr = batch["hr"]
        if self.args.keep_latent_space:
            return self._latent_keeping_step(module, hr)
        recon, latents, vq_loss, indices = module(hr, quantize=self.quantizing(step))
        losses = {"l1": F.l1_loss(recon.float(), hr.float())}
        if self.lpips is not None:
            losses["lpips"] = self.args.lpips_weight * self.lpips(recon.float(), hr.float()).mean()
        losses["vq"] = self.args.commitment_weight * vq_loss
        losses["loss"] = sum(losses.values())
        self.last_latents = latents.detach()
        if indices is not None:
            self.usage += torch.bincount(indices.reshape(-1).cpu(), minlength=self.num_codes)
        return losses

    def _latent_keeping_step(self, module, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher_latents = self.teacher.encode(hr).latents
        recon, latents = module(hr, teacher_latents)
        losses = {"l1": F.l1_loss(recon.float(), hr.float())}
        if self.lpips is not None:
            losses["lpips"] = self.args.lpips_weight * self.lpips(recon.float(), hr.float()).mean()
        if latents is not None:
            losses["latent_mse"] = self.args.latent_distill_weight * F.mse_loss(latents.float(),
                                                                                teacher_latents.float())
        losses["loss"] = sum(losses.values())
        return losses

    def after_optimizer_step(self, module, optimizer, batch, step):
        if self.args.keep_latent_space:  # frozen codebook: nothing to initialise or re-seed
            return {}
        extra = {"quantized": float(self.quantizing(step - 1))}
        codebook = self.component.quantize.embedding.weight
        if step == self.warmup_steps and self.warmup_steps > 0:
            self._init_codebook(codebook, optimizer)
        elif self.quantizing(step - 1):
            usage = self.accelerator.reduce(self.usage.to(self.accelerator.device), "sum").cpu()
            extra["codebook_used"] = float((usage > 0).float().mean())
            if step % self.args.vq_reseed_steps == 0:
                extra["codes_reseeded"] = float(self._reseed(codebook, optimizer, usage == 0, step))
                self.usage.zero_()
        return extra

    @torch.no_grad()
    def _init_codebook(self, codebook: torch.Tensor, optimizer) -> None:
        """k-means of encoder outputs over ``--vq_init_batches`` seeded training crops."""
        dataset = build_training_dataset(self.args)
        vqvae, device = self.component, self.accelerator.device
        batch = self.args.train_batch_size
        was_training = vqvae.training
        vqvae.eval()
        vectors = []
        for b in range(self.args.vq_init_batches):
            keys = range(_INIT_KEY_OFFSET + b * batch, _INIT_KEY_OFFSET + (b + 1) * batch)
            images = torch.stack([dataset[k]["hr"] for k in keys]).to(device)
            latents = vqvae.encode(images).latents
            vectors.append(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).float())
        vqvae.train(was_training)
        generator = torch.Generator().manual_seed(self.args.seed)
        centroids = kmeans(torch.cat(vectors).cpu(), self.num_codes, iterations=20, generator=generator)
        self._set_codes(codebook, optimizer, torch.ones(self.num_codes, dtype=torch.bool), centroids)
        self.usage.zero_()

    @torch.no_grad()
    def _reseed(self, codebook: torch.Tensor, optimizer, dead: torch.Tensor, step: int) -> int:
        """Move unused codes onto random encoder outputs of the current batch (with a little noise)."""
        count = int(dead.sum())
        if count == 0 or self.last_latents is None:
            return 0
        vectors = self.last_latents.permute(0, 2, 3, 1).reshape(-1, self.last_latents.shape[1]).float().cpu()
        generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + step)
        picks = vectors[torch.randint(vectors.shape[0], (count,), generator=generator)]
        picks = picks + 0.01 * vectors.std(dim=0) * torch.randn(picks.shape, generator=generator)
        self._set_codes(codebook, optimizer, dead, picks)
        return count

    def _set_codes(self, codebook: torch.Tensor, optimizer, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` into the codebook ``rows`` (from rank 0 on every rank) and clear their Adam moments."""
        values = broadcast(values.to(self.accelerator.device).contiguous(), from_process=0)
        rows = rows.to(codebook.device)
        codebook.data[rows] = values.to(codebook.dtype)
        state = getattr(optimizer, "optimizer", optimizer).state.get(codebook, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0

    def state(self) -> dict:
        return {"usage": self.usage.tolist()}

    def load_state(self, state: dict) -> None:
        if "usage" in state:
            self.usage = torch.tensor(state["usage"], dtype=torch.long)

    @torch.no_grad()
    def validate(self, step: int, output_dir: str) -> dict[str, float]:
        """Reconstruction quality on the validation crops, quantised (``q_``) and not (``raw_``)."""
        vqvae, device = self.component, self.accelerator.device
        was_training = vqvae.training
        vqvae.eval()
        rows, scores = [], {}
        settings = validation_metric_settings(self.args)
        for _, hr in load_validation_set(self.args):
            hr_t = torch.from_numpy(hr).permute(2, 0, 1)[None].to(device) * 2 - 1
            latents = vqvae.encode(hr_t).latents
            row = [to_uint8(hr_t)]
            for prefix, quantize in (("q_", True), ("raw_", False)):
                recon = vqvae.decode(latents, force_not_quantize=not quantize).sample.clamp(-1, 1)
                recon_u8 = to_uint8(recon)
                for key, value in image_metrics(recon_u8, row[0], settings).items():
                    scores.setdefault(prefix + key, []).append(value)
                row.append(recon_u8)
            rows.append(row)
        vqvae.train(was_training)
        save_validation_grid(rows, output_dir, step, ["HR", "VQ (quantised)", "VQ (raw)"])
        return {k: sum(v) / len(v) for k, v in scores.items()}
