"""HR -> LR degradations, batched in torch on the training device and seeded.

``bicubic`` is the evaluation protocol (PIL bicubic /4, M3FD / DifIISR); ``realesrgan`` is the
second-order blind degradation of Real-ESRGAN (Wang et al., ICCVW 2021): blur, resize, noise and
JPEG, twice, then a final resize and sinc filter; ``thermal`` is what a thermal camera does (optical PSF,
sensor sampling, Poisson-Gaussian noise, column / row fixed-pattern stripes, 8 bits, sometimes JPEG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from difiisr_dwt.pipelines.image_processor import bicubic_resize

DEGRADATIONS = ("bicubic", "realesrgan", "thermal")


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round `[-1, 1]` pixels to the 256 levels of an 8-bit file (what an LR PNG holds)."""
    return torch.round((images.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def bicubic_downsample(images: torch.Tensor, scale: int = 4, quantize: bool = True) -> torch.Tensor:
    """PIL-equivalent bicubic downsampling.

    :func:`~difiisr_dwt.pipelines.image_processor.bicubic_resize` uses PIL's filter (a = -0.5, support
    widened by the scale): it equals ``PIL.Image.resize(..., BICUBIC)`` on float images to ~1e-5;
    on uint8 images PIL's fixed-point arithmetic differs by at most one level.

    Args:
        images (`torch.Tensor` of shape `(B, C, H, W)`): pixels in [-1, 1], H and W divisible by ``scale``.
        scale (`int`): downsampling factor.
        quantize (`bool`): round to 8 bits like an LR image file.

    Returns:
        `torch.Tensor` of shape `(B, C, H / scale, W / scale)`.
    """
    height, width = images.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"Image size {width}x{height} is not divisible by the scale {scale}.")
    lr = bicubic_resize(images, (height // scale, width // scale)).clamp(-1, 1)
    return (quantize_8bit(lr) if quantize else lr).to(images.dtype)


def degrade(images: torch.Tensor, kind: str, generator: torch.Generator | None = None, scale: int = 4,
            **kwargs) -> torch.Tensor:
    """LR images `(B, C, H/scale, W/scale)` in [-1, 1] from HR `(B, C, H, W)` in [-1, 1].

    Args:
        kind: ``"bicubic"``, ``"realesrgan"`` or ``"thermal"``.
        generator: seeds the random degradation (``realesrgan``, ``thermal``), on the images' device.
        kwargs: fields of :class:`RealESRGANConfig` or :class:`ThermalConfig`.
    """
    if kind == "bicubic":
        return bicubic_downsample(images, scale)
    if kind == "realesrgan":
        return realesrgan_degrade(images, RealESRGANConfig(**kwargs), generator, scale)
    if kind == "thermal":
        return thermal_degrade(images, ThermalConfig(**kwargs), generator, scale)
    raise ValueError(f"Unknown degradation {kind!r}; choose one of {DEGRADATIONS}.")


# ------------------------------------------------------------------------------------------------ Real-ESRGAN

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
MAX_KERNEL = 21


@dataclass
class RealESRGANConfig:
    """Real-ESRGAN's x4 settings (``options/train_realesrgan_x4plus.yml``); ``*2`` fields are the second order.

    ``gray_noise_prob`` defaults to 1 rather than Real-ESRGAN's 0.4: an infrared image is one channel
    stored three times, so coloured noise would be a degradation no thermal camera makes.
    """

    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)  # sigma in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 1.0
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    final_sinc_prob: float = 0.8


def _uniform(low: float, high: float, n: int, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _grid(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    return torch.meshgrid(ax, ax, indexing="ij")  # (y, x)


def gaussian_kernels(kind: torch.Tensor, sizes: torch.Tensor, sigma: tuple[float, float], betag: tuple[float, float],
                     betap: tuple[float, float], generator, device) -> torch.Tensor:
    """One random kernel per sample, `(B, 21, 21)`, zero outside its own odd ``size``, summing to 1.

    Args:
        kind (`(B,)` int): index into :data:`KERNEL_TYPES`.
        sizes (`(B,)` int): odd kernel sides in [7, 21].
    """
    n = kind.shape[0]
    iso = kind % 2 == 0
    sx = _uniform(*sigma, n, generator, device)
    sy = torch.where(iso, sx, _uniform(*sigma, n, generator, device))
    theta = torch.where(iso, torch.zeros_like(sx), _uniform(-math.pi, math.pi, n, generator, device))
    cos, sin = theta.cos(), theta.sin()
    # inverse covariance of R diag(sx^2, sy^2) R^T
    a = cos**2 / sx**2 + sin**2 / sy**2
    b = cos * sin * (1 / sx**2 - 1 / sy**2)
    c = sin**2 / sx**2 + cos**2 / sy**2
    y, x = _grid(MAX_KERNEL, device)
    quad = a[:, None, None] * x**2 + 2 * b[:, None, None] * x * y + c[:, None, None] * y**2
    family = kind // 2  # 0 gaussian, 1 generalised, 2 plateau
    beta_g = _uniform(*betag, n, generator, device)[:, None, None]
    beta_p = _uniform(*betap, n, generator, device)[:, None, None]
    f = family[:, None, None]
    kernels = torch.where(f == 0, torch.exp(-0.5 * quad),
                          torch.where(f == 1, torch.exp(-0.5 * quad.clamp(min=0) ** beta_g),
                                      1 / (1 + quad.clamp(min=0) ** beta_p)))
    return _window(kernels, sizes)


def sinc_kernels(cutoff: torch.Tensor, sizes: torch.Tensor, device) -> torch.Tensor:
    """Circular low-pass (2-D sinc) kernels `(B, 21, 21)` with cutoff ``omega`` (radians per pixel)."""
    y, x = _grid(MAX_KERNEL, device)
    r = torch.sqrt(x**2 + y**2)[None]
    omega = cutoff[:, None, None]
    safe_r = torch.where(r == 0, torch.ones_like(r), r)
    kernels = omega * torch.special.bessel_j1(omega * safe_r) / (2 * math.pi * safe_r)
    kernels = torch.where(r == 0, omega**2 / (4 * math.pi), kernels)
    return _window(kernels, sizes)


def _window(kernels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    y, x = _grid(MAX_KERNEL, kernels.device)
    radius = ((sizes - 1) // 2)[:, None, None]
    inside = (x.abs()[None] <= radius) & (y.abs()[None] <= radius)
    kernels = kernels * inside
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def random_kernels(n: int, probs: tuple[float, ...], sinc_prob: float, sigma, betag, betap, generator,
                   device) -> torch.Tensor:
    """Real-ESRGAN's blur kernels: a sinc with probability ``sinc_prob``, else one of :data:`KERNEL_TYPES`."""
    sizes = 2 * torch.randint(3, MAX_KERNEL // 2 + 1, (n,), generator=generator, device=device) + 1
    kind = torch.multinomial(torch.tensor(probs, device=device), n, replacement=True, generator=generator)
    kernels = gaussian_kernels(kind, sizes, sigma, betag, betap, generator, device)
    low = torch.where(sizes < 13, math.pi / 3, math.pi / 5)
    cutoff = low + (math.pi - low) * torch.rand(n, generator=generator, device=device)
    use_sinc = torch.rand(n, generator=generator, device=device) < sinc_prob
    return torch.where(use_sinc[:, None, None], sinc_kernels(cutoff, sizes, device), kernels)


def filter2d(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image `(B, C, H, W)` with its own kernel `(B, k, k)` (reflect padding)."""
    b, c, h, w = images.shape
    k = kernels.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    x = F.pad(images.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode=mode)
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0)[:, None]
    return F.conv2d(x, weight, groups=b * c).reshape(b, c, h, w)


def _random_resize(images: torch.Tensor, probs, scale_range, generator) -> torch.Tensor:
    """One random up/down/keep factor and interpolation mode for the batch, as Real-ESRGAN does."""
    device = images.device
    choice = int(torch.multinomial(torch.tensor(probs, device=device), 1, generator=generator))
    u = float(torch.rand(1, generator=generator, device=device))
    factor = (1 + u * (scale_range[1] - 1)) if choice == 0 else (scale_range[0] + u * (1 - scale_range[0]))
    factor = 1.0 if choice == 2 else factor
    mode = RESIZE_MODES[int(torch.randint(3, (1,), generator=generator, device=device))]
    size = (max(int(images.shape[-2] * factor), 4), max(int(images.shape[-1] * factor), 4))
    return _resize(images, size, mode)


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    align = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=size, mode=mode, **align)


def _add_noise(images: torch.Tensor, cfg: RealESRGANConfig, noise_range, poisson_range, generator) -> torch.Tensor:
    """Gaussian (probability ``gaussian_noise_prob``) or Poisson noise, per sample; gray noise (the same
    on every channel) with probability ``gray_noise_prob``. Images in [0, 1]."""
    b, c, h, w = images.shape
    device = images.device
    gray = (torch.rand(b, generator=generator, device=device) < cfg.gray_noise_prob)[:, None, None, None]
    sigma = _uniform(*noise_range, b, generator, device)[:, None, None, None] / 255
    colour = torch.randn(images.shape, generator=generator, device=device)
    mono = torch.randn((b, 1, h, w), generator=generator, device=device).expand_as(images)
    gaussian = sigma * torch.where(gray, mono, colour)
    scale = _uniform(*poisson_range, b, generator, device)[:, None, None, None]
    levels = 255.0
    clean = images.clamp(0, 1)
    colour_p = torch.poisson(clean * levels, generator=generator) / levels - clean
    mean = clean.mean(dim=1, keepdim=True)
    mono_p = (torch.poisson(mean * levels, generator=generator) / levels - mean).expand_as(images)
    poisson = scale * torch.where(gray, mono_p, colour_p)
    use_gaussian = (torch.rand(b, generator=generator, device=device) < cfg.gaussian_noise_prob)[:, None, None, None]
    return images + torch.where(use_gaussian, gaussian, poisson)


def _jpeg(images: torch.Tensor, quality_range, generator) -> torch.Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    quality = _uniform(*quality_range, images.shape[0], generator, images.device)
    return jpeg_codec_differentiable(images.clamp(0, 1), quality)


def _unit_batch(images: torch.Tensor, scale: int) -> tuple[torch.Tensor, int, torch.device]:
    """HR ``(B, C, H, W)`` in [-1, 1] -> ([0, 1] float copy, B, device); H and W must be multiples of ``scale``."""
    b, _, h, w = images.shape
    if h % scale or w % scale:
        raise ValueError(f"Image size {w}x{h} is not divisible by the scale {scale}.")
    return (images.float() + 1) / 2, b, images.device


@torch.no_grad()
def realesrgan_degrade(images: torch.Tensor, cfg: RealESRGANConfig | None = None,
                       generator: torch.Generator | None = None, scale: int = 4) -> torch.Tensor:
    """Real-ESRGAN's second-order degradation of HR `(B, C, H, W)` in [-1, 1] to LR `(B, C, H/scale, W/scale)`
    in [-1, 1], rounded to 8 bits. Blur kernels, noise and JPEG quality are drawn per sample, resize factors
    and modes per batch (as in Real-ESRGAN); every draw comes from ``generator``. Grey inputs (equal
    channels) give grey outputs."""
    cfg = cfg or RealESRGANConfig()
    x, b, device = _unit_batch(images, scale)
    # first order
    x = filter2d(x, random_kernels(b, cfg.kernel_probs, cfg.sinc_prob, cfg.blur_sigma, cfg.betag_range,
                                   cfg.betap_range, generator, device))
    x = _random_resize(x, cfg.resize_prob, cfg.resize_range, generator)
    x = _add_noise(x, cfg, cfg.noise_range, cfg.poisson_scale_range, generator)
    x = _jpeg(x, cfg.jpeg_range, generator)
    # second order
    kernels2 = random_kernels(b, cfg.kernel_probs, cfg.sinc_prob2, cfg.blur_sigma2, cfg.betag_range,
                              cfg.betap_range, generator, device)
    blur2 = torch.rand(b, generator=generator, device=device) < cfg.second_blur_prob
    x = torch.where(blur2[:, None, None, None], filter2d(x, kernels2), x)
    x = _random_resize(x, cfg.resize_prob2, (cfg.resize_range2[0] * scale / 4, cfg.resize_range2[1]), generator)
    x = _add_noise(x, cfg, cfg.noise_range2, cfg.poisson_scale_range2, generator)
    # final: resize to the LR size with a sinc filter, and JPEG, in random order
    sizes = torch.full((b,), MAX_KERNEL, device=device)
    low = math.pi / 3
    cutoff = low + (math.pi - low) * torch.rand(b, generator=generator, device=device)
    final_sinc = torch.rand(b, generator=generator, device=device) < cfg.final_sinc_prob
    mode = RESIZE_MODES[int(torch.randint(3, (1,), generator=generator, device=device))]
    jpeg_first = bool(torch.rand(1, generator=generator, device=device) < 0.5)
    if jpeg_first:
        x = _jpeg(x, cfg.jpeg_range, generator)
    x = _resize(x, (images.shape[-2] // scale, images.shape[-1] // scale), mode)
    x = torch.where(final_sinc[:, None, None, None], filter2d(x, sinc_kernels(cutoff, sizes, device)), x)
    if not jpeg_first:
        x = _jpeg(x, cfg.jpeg_range, generator)
    # grey inputs stay grey: JPEG's chroma subsampling would otherwise tint them by a level or two
    grey = (images[:, 1:] == images[:, :1]).flatten(1).all(dim=1)[:, None, None, None]
    x = torch.where(grey, x.mean(dim=1, keepdim=True).expand_as(x), x)
    return quantize_8bit(x * 2 - 1).to(images.dtype)


# ------------------------------------------------------------------------------------------------ thermal camera


@dataclass
class ThermalConfig:
    """What degrades a real thermal camera frame, each part drawn per sample (probability, then range).

    Pixel values are 8-bit grey levels (0-255) unless said otherwise; the defaults cover the
    acceptance's "mild" case (Gaussian sigma 2, column offsets sigma 1.5) with room on both sides.

    - ``clean_prob``: the sample is plain PIL bicubic (the evaluation protocol), so that clean inputs stay
      in the training distribution (with the other probabilities, about 29% of the samples are clean).

    - ``blur_prob``, ``blur_radius``: optical PSF on the HR grid before the sensor samples it: an Airy
      pattern (diffraction-limited lens, probability ``airy_prob``) with its first dark ring at
      ``1.22 lambda N`` = ``blur_radius`` LR pixels (LWIR: lambda ~10 um, f/1-f/1.4, 12-17 um pitch gives
      0.7-1.4 px), or a Gaussian of the same width (sigma = 0.42 x the Airy radius, the usual fit).
    - ``read_noise``: signal-independent Gaussian sigma (read-out / Johnson noise).
    - ``shot_noise``: signal-dependent sigma at full scale; the variance is ``a x + b`` (Foi et al., "Practical
      Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP 2008).
    - ``column_fpn`` / ``row_fpn``: fixed-pattern stripe offsets, one per column (row), Gaussian with the
      drawn sigma: the read-out amplifiers of a microbolometer's columns differ (Kuang et al., "Single
      infrared image stripe noise removal using deep convolutional networks", IEEE Photonics J. 2017).
    - ``jpeg_prob``, ``jpeg_range``: exported frames saved as JPEG (quality range).
    Every LR is rounded to 8 bits at the end (what an exported frame holds).
    """

    clean_prob: float = 0.25
    blur_prob: float = 0.5
    airy_prob: float = 0.5
    blur_radius: tuple[float, float] = (0.5, 1.4)  # Airy first-zero radius, LR pixels
    noise_prob: float = 0.7
    read_noise: tuple[float, float] = (0.5, 4.0)
    shot_noise_prob: float = 0.5
    shot_noise: tuple[float, float] = (0.5, 3.0)
    column_fpn_prob: float = 0.5
    column_fpn: tuple[float, float] = (0.3, 3.0)
    row_fpn_prob: float = 0.2
    row_fpn: tuple[float, float] = (0.2, 1.5)
    jpeg_prob: float = 0.15
    jpeg_range: tuple[float, float] = (75.0, 95.0)


#: Gaussian sigma that best fits an Airy pattern of first-zero radius 1 (0.42 lambda N / 1.22 lambda N).
AIRY_GAUSSIAN_SIGMA = 0.42 / 1.22


def airy_kernels(radius: torch.Tensor, device) -> torch.Tensor:
    """Airy PSFs `(B, 21, 21)` (intensity ``(2 J1(v) / v)^2``, ``v = 3.8317 r / radius``), summing to 1.

    Args:
        radius (`(B,)`): radius of the first dark ring in pixels of the grid the kernel is applied on.
    """
    y, x = _grid(MAX_KERNEL, device)
    r = torch.sqrt(x**2 + y**2)[None]
    v = 3.8317 * r / radius[:, None, None]  # first zero of J1
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    kernels = torch.where(v == 0, torch.ones_like(v), (2 * torch.special.bessel_j1(safe_v) / safe_v) ** 2)
    return _window(kernels, torch.full_like(radius, MAX_KERNEL, dtype=torch.long))


def isotropic_gaussian_kernels(sigma: torch.Tensor, device) -> torch.Tensor:
    """Isotropic Gaussian PSFs `(B, 21, 21)` with standard deviation ``sigma`` `(B,)` in pixels, summing to 1."""
    y, x = _grid(MAX_KERNEL, device)
    kernels = torch.exp(-(x**2 + y**2)[None] / (2 * sigma[:, None, None] ** 2))
    return _window(kernels, torch.full_like(sigma, MAX_KERNEL, dtype=torch.long))


def _chance(prob: float, n: int, generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) < prob


def _drawn_sigma(prob: float, limits: tuple[float, float], n: int, generator, device) -> torch.Tensor:
    """Per-sample sigma `(B,)`: drawn from ``limits`` with probability ``prob``, else 0 (always two draws)."""
    use = _chance(prob, n, generator, device)
    return torch.where(use, _uniform(*limits, n, generator, device), torch.zeros(n, device=device))


def sensor_noise(lr: torch.Tensor, read_sigma: torch.Tensor, shot_sigma: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Poisson-Gaussian sensor noise (Foi et al. 2008, Gaussian approximation): ``x + sqrt(a x + b) n``.

    Args:
        lr (`(B, C, H, W)`): images in [0, 1]; channels get the same noise (a thermal frame is grey).
        read_sigma (`(B,)`): signal-independent sigma ``sqrt(b)`` in 8-bit grey levels.
        shot_sigma (`(B,)`): signal-dependent sigma at full scale (``sqrt(a)``) in 8-bit grey levels.
    """
    b, _, h, w = lr.shape
    signal = lr.mean(dim=1, keepdim=True).clamp(0, 1)
    variance = (read_sigma[:, None, None, None] ** 2 + shot_sigma[:, None, None, None] ** 2 * signal) / 255**2
    noise = torch.randn((b, 1, h, w), generator=generator, device=lr.device) * variance.sqrt()
    return lr + noise


def stripe_noise(lr: torch.Tensor, column_sigma: torch.Tensor, row_sigma: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
    """Fixed-pattern offsets: one Gaussian offset per column (sigma ``column_sigma``) and per row
    (``row_sigma``), both `(B,)` in 8-bit grey levels, added to images `(B, C, H, W)` in [0, 1]."""
    b, _, h, w = lr.shape
    columns = torch.randn((b, 1, 1, w), generator=generator, device=lr.device) * column_sigma[:, None, None, None]
    rows = torch.randn((b, 1, h, 1), generator=generator, device=lr.device) * row_sigma[:, None, None, None]
    return lr + (columns + rows) / 255


@torch.no_grad()
def thermal_degrade(images: torch.Tensor, cfg: ThermalConfig | None = None,
                    generator: torch.Generator | None = None, scale: int = 4) -> torch.Tensor:
    """A thermal camera's degradation of HR `(B, C, H, W)` in [-1, 1] to LR `(B, C, H/scale, W/scale)` in [-1, 1].

    In the order the camera applies them: optical PSF (Airy or Gaussian, on the HR grid), sampling by
    the sensor (PIL-equivalent bicubic /``scale``, the evaluation protocol), Poisson-Gaussian sensor
    noise, column / row fixed-pattern offsets, rounding to 8 bits, and JPEG for some exported frames
    (:class:`ThermalConfig` gives the probabilities, ranges and sources). Every draw is per sample and
    comes from ``generator`` (a fixed number of draws per call, so the same seed gives the same batch).
    Grey inputs give grey outputs.
    """
    cfg = cfg or ThermalConfig()
    x, b, device = _unit_batch(images, scale)
    clean = _chance(cfg.clean_prob, b, generator, device)
    # 1. optics: the PSF width is set in LR (sensor) pixels and applied on the HR grid
    blur = _chance(cfg.blur_prob, b, generator, device)
    airy = _chance(cfg.airy_prob, b, generator, device)
    radius = _uniform(*cfg.blur_radius, b, generator, device) * scale
    kernels = torch.where(airy[:, None, None], airy_kernels(radius, device),
                          isotropic_gaussian_kernels(radius * AIRY_GAUSSIAN_SIGMA, device))
    x = torch.where(blur[:, None, None, None], filter2d(x, kernels), x)
    # 2. sampling by the sensor
    x = bicubic_downsample(x * 2 - 1, scale, quantize=False).float()
    x = (x + 1) / 2
    # 3. temporal noise, 4. fixed-pattern stripes
    noisy = _chance(cfg.noise_prob, b, generator, device)
    read = torch.where(noisy, _uniform(*cfg.read_noise, b, generator, device), torch.zeros(b, device=device))
    shot = torch.where(noisy, _drawn_sigma(cfg.shot_noise_prob, cfg.shot_noise, b, generator, device),
                       torch.zeros(b, device=device))
    x = sensor_noise(x, read, shot, generator)
    columns = _drawn_sigma(cfg.column_fpn_prob, cfg.column_fpn, b, generator, device)
    rows = _drawn_sigma(cfg.row_fpn_prob, cfg.row_fpn, b, generator, device)
    x = stripe_noise(x, columns, rows, generator)
    # 5. an 8-bit frame, 6. sometimes JPEG
    x = (quantize_8bit(x * 2 - 1) + 1) / 2
    use_jpeg = _chance(cfg.jpeg_prob, b, generator, device)
    jpeg = _jpeg(x, cfg.jpeg_range, generator).mean(dim=1, keepdim=True).expand_as(x)  # grey stays grey
    x = torch.where(use_jpeg[:, None, None, None], jpeg, x)
    x = torch.where(clean[:, None, None, None], (bicubic_downsample(images.float(), scale) + 1) / 2, x)
    return quantize_8bit(x * 2 - 1).to(images.dtype)
