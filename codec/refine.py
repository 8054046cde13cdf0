"""Encoder-side refinement of the latents (the decoder and the format are unchanged).

The posterior mean of z_k describes y_{k+1} given the *true* y_k, but a decoder without the y
chunks only has its own estimate of y_k. Before quantization the encoder therefore moves each
latent to minimise the squared error of the image the decoder will render from it, plus a rate
proxy (the squared distance from the prior mean in prior standard deviations), by a few steps of
gradient descent from the posterior mean ("iterative inference": Campos et al. 2019, Content
adaptive optimization for neural image compression; Yang, Marino & Mandt 2020, arXiv:2006.04240).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from models.distributions import DiscretizedLogisticMixture


def refine_latent(init: Tensor, prior_mean: Tensor, prior_std: Tensor | float, target: Tensor,
                  render: Callable[[Tensor], DiscretizedLogisticMixture], steps: int, rate_weight: float,
                  threads: int, lr: float = 0.05) -> Tensor:
    """Return a latent near ``init`` whose rendered mean image is closer to ``target`` (uint8).

    ``render(latent)`` builds the decoder's mixture for the next image; the loss is the mean
    squared error in 8-bit units plus ``rate_weight`` times the mean squared prior z-score."""
    if steps <= 0:
        return init
    n = torch.get_num_threads()
    torch.set_num_threads(threads)  # encoder-only arithmetic: any thread count will do
    try:
        with torch.enable_grad():
            z = init.detach().float().clone().requires_grad_(True)
            mean = prior_mean.detach().float()
            std = prior_std.detach().float() if isinstance(prior_std, Tensor) else prior_std
            tgt = target.float()
            opt = torch.optim.Adam([z], lr=lr)
            best, best_loss = z.detach().clone(), float("inf")
            for _ in range(steps + 1):
                mse = ((render(z).mean_continuous() * 255.0 - tgt) ** 2).mean()
                loss = mse + rate_weight * (((z - mean) / std) ** 2).mean()
                if float(loss.detach()) < best_loss:
                    best, best_loss = z.detach().clone(), float(loss.detach())
                opt.zero_grad()
                loss.backward()
                opt.step()
        return best.to(init.dtype)
    finally:
        torch.set_num_threads(n)
