"""Image-quality metrics in the conventions SR papers report: PSNR / SSIM on the BasicSR Y channel and LPIPS.

PSNR and SSIM follow BasicSR (``basicsr.metrics.psnr_ssim`` with ``test_y_channel=True``): the Y channel of
ITU-R BT.601 ``rgb2ycbcr`` on the 8-bit range (values in [16, 235], not rounded), an optional border crop, and
SSIM with an 11x11 Gaussian window (sigma 1.5) over the valid region, all in float64.

LPIPS uses the ``lpips`` package (v0.1 linear layers, shipped inside the pip package) on an AlexNet or VGG16
ImageNet backbone that is loaded without network access: from the torchvision cache when present, else from a
folder of safetensors files (``--lpips_backbone_dir`` / ``DIFIISR_LPIPS_WEIGHTS``). A randomly initialised
backbone is never used silently.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

#: Environment variable naming the folder with ``alexnet_features.safetensors`` / ``vgg16_features.safetensors``.
LPIPS_WEIGHTS_ENV = "DIFIISR_LPIPS_WEIGHTS"

# net -> (safetensors file in the weights folder, torchvision checkpoint file name in the torch hub cache)
_BACKBONE_FILES = {
    "alex": ("alexnet_features.safetensors", "alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16_features.safetensors", "vgg16-397923af.pth"),
}
_NET_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}
_LPIPS_CACHE: dict[tuple[str, str], torch.nn.Module] = {}


class LPIPSWeightsError(FileNotFoundError):
    """The ImageNet backbone of an LPIPS network is neither in the torchvision cache nor in a weights folder."""


# ----------------------------------------------------------------------------------------------------------------
# PSNR / SSIM on the Y channel
# ----------------------------------------------------------------------------------------------------------------


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma on the 8-bit studio range, as BasicSR's ``rgb2ycbcr(img / 255, y_only=True) * 255``.

    Args:
        image: `(H, W, 3)` RGB or `(H, W)` grey (read as three equal channels), uint8.

    Returns:
        `(H, W)` float64 Y in [16, 235], unrounded.
    """
    image = _check_uint8(image, "image")
    rgb = image.astype(np.float64) / 255.0
    if rgb.ndim == 2:
        return rgb * (65.481 + 128.553 + 24.966) + 16.0
    return rgb @ np.array([65.481, 128.553, 24.966]) + 16.0


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB of two arrays of the same shape whose values span ``data_range`` (``inf`` when equal)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """PSNR in dB between the Y channels of two 8-bit images (BasicSR ``calculate_psnr``, ``test_y_channel``).

    Args:
        sr: `(H, W, 3)` or `(H, W)` uint8 restored image.
        hr: ground truth of the same shape.
        crop_border: pixels removed from each side before measuring (SR papers often use the scale factor).

    Returns:
        PSNR in dB; ``inf`` for identical images.
    """
    y_sr, y_hr = _y_pair(sr, hr, crop_border)
    return psnr(y_sr, y_hr, data_range=255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    """SSIM between the Y channels of two 8-bit images (BasicSR ``calculate_ssim``, ``test_y_channel``).

    Local statistics use an 11x11 Gaussian window (sigma 1.5) over the valid region only (no padding), with
    ``C1 = (0.01 * 255)^2`` and ``C2 = (0.03 * 255)^2``; the map is averaged.

    Args:
        sr: `(H, W, 3)` or `(H, W)` uint8 restored image, at least 11x11 after cropping.
        hr: ground truth of the same shape.
        crop_border: pixels removed from each side before measuring.
    """
    y_sr, y_hr = _y_pair(sr, hr, crop_border)
    if min(y_sr.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels after cropping, got {y_sr.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = y_sr, y_hr
    mu_x, mu_y = _gaussian_filter(x), _gaussian_filter(y)
    var_x = _gaussian_filter(x * x) - mu_x**2
    var_y = _gaussian_filter(y * y) - mu_y**2
    cov = _gaussian_filter(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _gaussian_filter(image: np.ndarray, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Valid-region correlation of a float64 `(H, W)` image with a normalised 2-D Gaussian, as separable passes
    (what BasicSR gets from ``cv2.filter2D`` followed by cropping ``size // 2`` pixels from each side)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(coords**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    height, width = image.shape
    rows = sum(kernel[i] * image[:, i : i + width - size + 1] for i in range(size))
    return sum(kernel[i] * rows[i : i + height - size + 1] for i in range(size))


def high_frequency_rms(image: np.ndarray, sigma: float = 2.0) -> float:
    """Root-mean-square of ``image`` minus its Gaussian blur (``sigma`` pixels, window ``6 sigma + 1``), over
    the region the window fits in, in the image's own units (counts, kelvin).

    At x4, a blur of sigma 2 output pixels keeps what bicubic upscaling of the input can carry and removes
    the rest, so this measures detail (or noise texture) above the input's resolution: the crosshatch a
    model invents on a noisy flat input raises it, a smooth bicubic surface keeps it low.

    Args:
        image: `(H, W)` array, any real dtype.
    """
    size = 2 * int(3 * sigma) + 1
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < size:
        raise ValueError(f"need an (H, W) image of at least {size}x{size} pixels, got shape {image.shape}")
    half = size // 2
    detail = image[half : image.shape[0] - half, half : image.shape[1] - half] - _gaussian_filter(image, size, sigma)
    return float(np.sqrt(np.mean(detail**2)))


def _y_pair(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    sr, hr = _check_uint8(sr, "sr"), _check_uint8(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    y_sr, y_hr = rgb_to_y(sr), rgb_to_y(hr)
    if crop_border:
        if min(y_sr.shape) <= 2 * crop_border:
            raise ValueError(f"crop_border={crop_border} removes the whole {y_sr.shape} image")
        y_sr = y_sr[crop_border:-crop_border, crop_border:-crop_border]
        y_hr = y_hr[crop_border:-crop_border, crop_border:-crop_border]
    return y_sr, y_hr


def _check_uint8(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 array (8-bit image), got dtype {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{name} must be (H, W) or (H, W, 3), got shape {image.shape}")
    return image


# ----------------------------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------------------------


def load_lpips(net: str = "alex", weights: str | os.PathLike | None = None, device=None):
    """An LPIPS v0.1 network with its ImageNet backbone loaded without network access.

    The backbone comes from, in order: the torchvision cache (``$TORCH_HOME/hub/checkpoints``, where
    ``torchvision.models.alexnet(weights="IMAGENET1K_V1")`` stores it), the folder ``weights``, the folder in
    ``$DIFIISR_LPIPS_WEIGHTS``. The folder holds ``alexnet_features.safetensors`` / ``vgg16_features.safetensors``
    (torchvision ``features.<index>.weight|bias`` tensors, see ``shared/lpips/README.md``). The linear calibration
    layers ship inside the ``lpips`` pip package. Models are cached per ``(net, device)``.

    The returned module expects two `(B, 3, H, W)` float tensors **in [-1, 1]** (as ``lpips.LPIPS.forward`` does
    with ``normalize=False``; pass ``normalize=True`` for [0, 1]) and returns `(B, 1, 1, 1)` distances.

    Args:
        net: ``"alex"`` or ``"vgg"`` (``"alexnet"`` / ``"vgg16"`` accepted).
        weights: folder with the safetensors backbones, used when the torchvision cache has none.
        device: where the model lives; ``None`` is the CPU.

    Returns:
        ``lpips.LPIPS`` in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        LPIPSWeightsError: no backbone found; the message says where to put one.
        ValueError: unknown ``net``, or a weights file whose tensors do not fill the backbone exactly.
    """
    if net not in _NET_ALIASES:
        raise ValueError(f"Unknown LPIPS network {net!r}; choose 'alex' or 'vgg'.")
    net = _NET_ALIASES[net]
    device = torch.device(device if device is not None else "cpu")
    key = (net, str(device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = _build_lpips(net, weights).to(device)
    return _LPIPS_CACHE[key]


def lpips_distance(
    sr: np.ndarray | torch.Tensor,
    hr: np.ndarray | torch.Tensor,
    net: str = "alex",
    weights: str | os.PathLike | None = None,
    device=None,
) -> float:
    """LPIPS distance between two RGB images in [0, 1] (rescaled to [-1, 1] for the network).

    Args:
        sr: `(H, W, 3)` / `(H, W)` uint8 array (divided by 255; grey read as three equal channels), or a float
            tensor in [0, 1] of shape `(3, H, W)` or `(B, 3, H, W)`.
        hr: the reference, same kind and shape as ``sr``.
        net: ``"alex"`` or ``"vgg"``.
        weights: backbone folder for :func:`load_lpips`.
        device: device to run on; ``None`` is the CPU.

    Returns:
        The distance (mean over the batch for batched tensors); lower is more similar.
    """
    model = load_lpips(net, weights, device)
    a, b = _to_lpips_input(sr, "sr"), _to_lpips_input(hr, "hr")
    if a.shape != b.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    param = next(model.parameters())
    with torch.no_grad():
        distance = model(a.to(param), b.to(param), normalize=True)
    return float(distance.mean())


def _to_lpips_input(image: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """`(B, 3, H, W)` float32 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        tensor = image.float()
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or tensor.shape[1] != 3:
            raise ValueError(f"{name} tensor must be (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
        return tensor
    array = _check_uint8(image, name)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.tensor(array).permute(2, 0, 1)[None].float() / 255.0  # a copy: PIL-backed arrays are read-only


def _build_lpips(net: str, weights: str | os.PathLike | None):
    import lpips

    features = _backbone_features(net, weights)  # first: a missing backbone fails before any work
    linear_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    linear = torch.load(linear_path, map_location="cpu", weights_only=True)
    # pretrained=False / pnet_rand=True builds the architecture without downloading; on the meta device no
    # random weights exist at all, so a tensor the files do not provide stays meta and is caught below.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)

    state = {}
    for name in model.state_dict():
        if name.startswith("net."):  # net.slice<K>.<index>.<weight|bias>, index as in torchvision's features
            _, _, index, param = name.split(".")
            source = f"features.{index}.{param}"
            if source not in features:
                raise ValueError(f"LPIPS-{net} backbone weights lack {source!r} (needed for {name})")
            state[name] = features.pop(source)
        elif name.startswith("lin") and not name.startswith("lins."):  # ``lins.K`` aliases ``linK``
            state[name] = linear[name]
    if features:
        raise ValueError(f"LPIPS-{net} backbone weights hold tensors the network does not use: {sorted(features)}")
    _, unexpected = model.load_state_dict(state, strict=False, assign=True)
    unfilled = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if unfilled or unexpected:
        raise ValueError(f"LPIPS-{net} weights do not match the network: unfilled {unfilled}, unexpected {unexpected}")

    model.eval()
    model.requires_grad_(False)
    return model


def _backbone_features(net: str, weights: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """``features.<index>.<weight|bias>`` tensors of the ImageNet backbone from the first source that has them."""
    from safetensors.torch import load_file

    safetensors_name, torchvision_name = _BACKBONE_FILES[net]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / torchvision_name
    if cached.is_file():
        state = torch.load(cached, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if k.startswith("features.")}

    searched = [str(cached)]
    for folder in (weights, os.environ.get(LPIPS_WEIGHTS_ENV)):
        if not folder:
            continue
        path = Path(folder) / safetensors_name
        if path.is_file():
            return load_file(path)
        searched.append(str(path))
    raise LPIPSWeightsError(
        f"No ImageNet backbone for LPIPS-{net} (looked in: {', '.join(searched)}). Either pass a folder holding "
        f"{safetensors_name} with --lpips_backbone_dir (or set {LPIPS_WEIGHTS_ENV}); the project's shared/lpips/ "
        f"folder has one, see its README.md. Or fill the torchvision cache once with network access: "
        f"python -c \"import torchvision; torchvision.models.{'alexnet' if net == 'alex' else 'vgg16'}"
        f"(weights='IMAGENET1K_V1')\"."
    )
