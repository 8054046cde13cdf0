"""The four kinds of network of a K-level ssVAE, built from the blocks of :mod:`models.layers`.

* :class:`PosteriorNet`   q(latent | image):       image -> Gaussian parameters at latent resolution
* :class:`ConditionalPriorNet` p(z_k | y_k, z_{k-1}): Gaussian parameters at latent resolution
* :class:`TopDecoder`     p(y_1 | u):              discretized logistic mixture over y_1
* :class:`SuperResDecoder` p(y_{k+1} | y_k, z_k):  mixture over the next, larger image

Downscaling is by strided 3x3 convolutions and upscaling by transposed convolutions (§5.3). The
final layer of every distribution head starts small (data-dependent init scale 0.1).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .distributions import dmol_param_channels
from .layers import DenseBlock, WNConv2d, WNConvTranspose2d, conv_elu


def _n_halvings(stride: int) -> int:
    n = int(round(math.log2(stride)))
    if 2 ** n != stride:
        raise ValueError(f"stride {stride} is not a power of two")
    return n


class Downsampler(nn.Module):
    """Image (uint8 scaled to [-1, 1]) -> ``width`` features at 1/``stride`` resolution: strided
    3x3 convs, a dense block at the latent resolution (and at every scale when
    ``dense_every_scale``, as in the thesis network)."""

    def __init__(self, c_in: int, stride: int, cfg: ModelConfig, final_block: bool = True) -> None:
        super().__init__()
        w = cfg.width
        layers: list[nn.Module] = [conv_elu(c_in, w)]
        for _ in range(_n_halvings(stride)):
            if cfg.dense_every_scale:
                layers.append(DenseBlock(w, w, cfg.growth, cfg.dense_layers))
            layers.append(conv_elu(w, w, 3, stride=2))
        if final_block:
            layers.append(DenseBlock(w, w, cfg.growth, cfg.dense_layers))
        self.net = nn.Sequential(*layers)

    def forward(self, img: Tensor) -> Tensor:
        return self.net(img.to(torch.float32) / 127.5 - 1.0)


class PosteriorNet(nn.Module):
    """q(latent | image) = N(mu, diag sigma^2) at 1/``stride`` of the image's resolution."""

    def __init__(self, c_in: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk = Downsampler(c_in, stride, cfg)
        self.out = WNConv2d(cfg.width, 2 * cfg.latent_channels, 3, init_scale=0.1)

    def forward(self, img: Tensor) -> Tensor:
        return self.out(self.trunk(img))


class ConditionalPriorNet(nn.Module):
    """p(z_k | y_k, z_{k-1}): y_k brought down to latent resolution, joined with z_{k-1}.

    ``out`` is kept separate so the codec can evaluate it in float64 before snapping the
    parameters to its fixed table (design doc §3.5)."""

    def __init__(self, c_y: int, stride: int, cfg: ModelConfig, z_up: int = 1) -> None:
        super().__init__()
        self.trunk = Downsampler(c_y, stride, cfg, final_block=False)  # ``mix`` is the dense block
        embed: list[nn.Module] = [conv_elu(cfg.latent_channels, cfg.width)]
        for _ in range(_n_halvings(z_up)):  # z_{k-1} may be coarser than z_k
            embed += [WNConvTranspose2d(cfg.width, cfg.width, 2), nn.ELU()]
        self.embed = nn.Sequential(*embed)
        self.mix = DenseBlock(2 * cfg.width, cfg.width, cfg.growth, cfg.dense_layers)
        self.out = WNConv2d(cfg.width, 2 * cfg.latent_channels, 3, init_scale=0.1)

    def features(self, y: Tensor, z_prev: Tensor) -> Tensor:
        return self.mix(torch.cat([self.trunk(y), self.embed(z_prev)], dim=1))

    def forward(self, y: Tensor, z_prev: Tensor) -> Tensor:
        return self.out(self.features(y, z_prev))


class Upsampler(nn.Module):
    """Latent map -> ``c_out`` features at ``factor`` times its resolution: a dense block at the
    latent resolution, then transposed convs (with dense blocks at every scale when
    ``dense_every_scale``)."""

    def __init__(self, c_in: int, factor: int, cfg: ModelConfig, c_out: int | None = None) -> None:
        super().__init__()
        w = cfg.width
        c_out = c_out or w
        n = _n_halvings(factor)
        layers: list[nn.Module] = [conv_elu(c_in, w), DenseBlock(w, w, cfg.growth, cfg.dense_layers)]
        for i in range(n):
            if cfg.dense_every_scale and i > 0:
                layers.append(DenseBlock(w, w, cfg.growth, cfg.dense_layers))
            layers += [WNConvTranspose2d(w, c_out if i == n - 1 else w, 2), nn.ELU()]
        if n == 0 and c_out != w:
            layers.append(conv_elu(w, c_out, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class MixtureHead(nn.Module):
    """Features at the output resolution -> parameters of the pixel mixture.

    Codec default: ``head_layers`` 3x3 convs of ``head_width`` channels. Thesis reference
    (``head_dense``): ``head_blocks`` dense blocks of ``head_block_layers`` layers, growth
    ``head_growth``, on the features concatenated with the upsampled conditioning image."""

    def __init__(self, c_in: int, c_img: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.dense = cfg.head_dense
        hw = cfg.head_width
        if self.dense:
            blocks: list[nn.Module] = []
            c = c_in + c_img
            for _ in range(cfg.head_blocks):
                blocks.append(DenseBlock(c, hw, cfg.head_growth, cfg.head_block_layers))
                c = hw
            self.body = nn.Sequential(*blocks)
        else:
            self.body = nn.Sequential(*[conv_elu(c_in if i == 0 else hw, hw) for i in range(cfg.head_layers)])
        out_c = dmol_param_channels(c_img, cfg.n_mix)
        self.out = WNConv2d(hw if (self.dense or cfg.head_layers) else c_in, out_c, 1, init_scale=0.1)

    def hidden(self, feats: Tensor, base: Tensor) -> Tensor:
        """Features entering the last (1x1) layer."""
        if self.dense:
            feats = torch.cat([feats, base * 2.0 - 1.0], dim=1)
        return self.body(feats)

    def forward(self, feats: Tensor, base: Tensor) -> Tensor:
        return self.out(self.hidden(feats, base))


class TopDecoder(nn.Module):
    """p(y_1 | u): the top latent upsampled to y_1's resolution."""

    def __init__(self, c_img: int, factor: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_img = c_img
        fw = cfg.width if cfg.dense_every_scale else cfg.head_width
        self.up = Upsampler(cfg.latent_channels, factor, cfg, fw)
        self.block = (DenseBlock(fw, fw, cfg.growth, cfg.dense_layers) if cfg.dense_every_scale
                      else conv_elu(fw, fw))
        self.head = MixtureHead(fw, c_img, cfg)

    def base_image(self, like: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """The constant grey (0.5) the top level's means are relative to, shaped like ``like``."""
        return torch.full((like.shape[0], self.c_img, *like.shape[2:]), 0.5, dtype=dtype, device=like.device)

    def features(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(input of the head's last layer, base image in [0, 1] the means are relative to)."""
        feats = self.block(self.up(u))
        base = self.base_image(feats)
        return self.head.hidden(feats, base), base

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (mixture parameters, base image)."""
        h, base = self.features(u)
        return self.head.out(h), base


class SuperResDecoder(nn.Module):
    """p(y_{k+1} | y_k, z_k): z_k upsampled to y_k's resolution and joined with y_k, a conv (a
    dense block when ``dense_every_scale``) there, a transposed conv to y_{k+1}'s resolution (``scale`` 2; a 3x3 conv for scale 1), and a
    light head at full resolution. Mixture means are a residual on the (bilinearly) upsampled y_k."""

    def __init__(self, c_y: int, c_out: int, factor: int, scale: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.scale, self.c_out = scale, c_out
        fw = cfg.width if cfg.dense_every_scale else cfg.head_width
        self.up = Upsampler(cfg.latent_channels, factor, cfg, fw)
        self.embed = conv_elu(c_y, fw)
        self.block = (DenseBlock(2 * fw, fw, cfg.growth, cfg.dense_layers) if cfg.dense_every_scale
                      else conv_elu(2 * fw, fw))
        hw = cfg.head_width
        self.expand: nn.Module = (WNConvTranspose2d(fw, hw, scale) if scale > 1 else WNConv2d(fw, hw, 3))
        self.head = MixtureHead(hw, c_out, cfg)

    def base_image(self, y: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """y_k upsampled (bilinear) to the next resolution, in [0, 1], broadcast to the output
        channels: the means are a residual on it."""
        b = y.to(dtype) / 255.0
        if self.scale > 1:
            b = F.interpolate(b, scale_factor=self.scale, mode="bilinear", align_corners=False)
        if b.shape[1] != self.c_out:
            b = b.expand(-1, self.c_out, -1, -1)
        return b

    def features(self, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """(input of the head's last layer, base image in [0, 1] the means are relative to)."""
        feats = self.block(torch.cat([self.embed(y.to(torch.float32) / 127.5 - 1.0), self.up(z)], dim=1))
        feats = F.elu(self.expand(feats))
        base = self.base_image(y)
        return self.head.hidden(feats, base), base

    def forward(self, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        h, base = self.features(y, z)
        return self.head.out(h), base
