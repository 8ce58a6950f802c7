"""Pixel-level smoothness of SS-Net: virtual adversarial training with a Dice distance.

SS-Net (Wu et al., MICCAI 2022, Sec. 2.1 "Pixel-level smoothness") adapts
virtual adversarial training (VAT, Miyato et al., TPAMI 2019) to segmentation:

    p      = softmax(f(x))                                   (no gradient)
    d      = u / (||u|| + 1e-8),   u ~ U[-0.5, 0.5]^shape(x)  (per sample)
    g      = grad_d D(softmax(f(x + xi * d)), p)             (ip times: d = g / (||g|| + 1e-8))
    r_adv  = epsilon * g / (||g|| + 1e-8)
    L_lds  = D(softmax(f(x + r_adv)), p)

with the Dice distance D instead of VAT's KL divergence. Reference values: xi
= 10, ip = 1, epsilon = 10 and the binary Dice distance on LA (V-Net, 3D);
epsilon = 6 and the class-averaged Dice distance on ACDC (U-Net, 2D).

Copy-ready: imports only torch and the standard library; works for 2D
(B, C, H, W) and 3D (B, C, H, W, D) inputs on any device.
"""
from __future__ import annotations

import contextlib
from typing import Any
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["first_output", "VATLoss", "vat_lds", "vat_distance", "l2_normalize", "uniform_noise", "frozen_bn_stats",
           "DISTANCES"]

DISTANCES = ("dice", "class_dice", "kl")


def uniform_noise(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """VAT's initial noise, U[-0.5, 0.5) of ``shape``, on ``device``.

    Drawn on the CPU generator with the default dtype and then moved, as the
    released code does (``torch.rand(x.shape).sub(0.5).to(x.device)``): the
    numbers are the same on CPU and CUDA for the same seed, and the CUDA
    generator is not consumed. For a CUDA ``device`` it is drawn into pinned
    memory and copied with ``non_blocking=True``, so the host does not wait for
    the copy (a pageable copy would); the values are the same.
    """
    if torch.device(device).type == "cuda":
        return torch.rand(shape, pin_memory=True).sub_(0.5).to(device, non_blocking=True)
    return torch.rand(shape).sub_(0.5).to(device)


def l2_normalize(d: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 normalisation ``d / (||d_b||_2 + 1e-8)`` over all non-batch dims of (B, ...)."""
    norm = torch.norm(d.reshape(d.shape[0], -1), dim=1)
    return d / (norm.view((-1,) + (1,) * (d.dim() - 1)) + 1e-8)


def first_output(output: Any) -> torch.Tensor:
    """The logits from a model output: the tensor itself or the first item of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and len(output) > 0 and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        f"the model returned {type(output).__name__}; it must return the logits "
        "(B, C, *spatial) or a tuple/list whose first item is the logits."
    )


def vat_distance(logits_hat: torch.Tensor, p: torch.Tensor, distance: str) -> torch.Tensor:
    """Distance D(softmax(logits_hat), p) between perturbed and clean predictions, in float32.

    Args:
        logits_hat: (B, C, *spatial) logits of the perturbed pass.
        p: (B, C, *spatial) softmax probabilities of the clean pass.
        distance:
            ``"dice"``: ``1 - (2 sum(q p) + 1e-8) / (sum(q) + sum(p) + 1e-8)`` over the
            whole tensors, all channels together (released LA behaviour);
            ``"class_dice"``: mean over the C classes of
            ``1 - (2 sum(q_c p_c) + 1e-10) / (sum(q_c^2) + sum(p_c^2) + 1e-10)``
            (released ACDC behaviour);
            ``"kl"``: ``KL(p || q)`` summed over classes and averaged over samples
            and positions (the KL of the original VAT per pixel; paper Table 3 ablation).

    Returns:
        float32 scalar tensor.
    """
    logits_hat = logits_hat.float()
    p = p.float()
    if distance == "kl":
        log_q = F.log_softmax(logits_hat, dim=1)
        return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()
    q = F.softmax(logits_hat, dim=1)
    if distance == "dice":
        intersection = 2 * torch.sum(q * p) + 1e-8
        union = torch.sum(q) + torch.sum(p) + 1e-8
        return 1 - intersection / union
    if distance == "class_dice":
        # One class at a time, accumulated in class order as in the released code.
        loss = torch.zeros((), dtype=torch.float32, device=q.device)
        for c in range(q.shape[1]):
            q_c, p_c = q[:, c], p[:, c]
            intersect = torch.sum(q_c * p_c)
            p_sum = torch.sum(p_c * p_c)
            q_sum = torch.sum(q_c * q_c)
            loss = loss + (1 - (2 * intersect + 1e-10) / (q_sum + p_sum + 1e-10))
        return loss / q.shape[1]
    raise ValueError(f"vat_distance: distance must be one of {DISTANCES}, got {distance!r}.")


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Stop normalisation layers from updating running statistics inside the block.

    Sets ``track_running_stats = False`` on every module that has it set to
    True and is in training mode (BatchNorm, SyncBatchNorm, InstanceNorm with
    tracking; modules in eval mode keep using their running statistics), so
    they normalise with the batch statistics and leave ``running_mean``,
    ``running_var`` and ``num_batches_tracked`` untouched; the flags are
    restored on exit, also when an exception is raised.
    """
    changed: list[nn.Module] = [
        m for m in model.modules() if getattr(m, "track_running_stats", False) is True and m.training
    ]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on the model's trainable parameters inside the
    block and restore it on exit (also on exceptions)."""
    changed = [q for q in model.parameters() if q.requires_grad]
    for q in changed:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q in changed:
            q.requires_grad_(True)


def vat_lds(model: nn.Module, x: torch.Tensor, xi: float = 10.0, epsilon: float = 10.0,
            ip: int = 1, distance: str = "dice", noise: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local distributional smoothness loss and its adversarial perturbation.

    Order of work (as in the released SS-Net code, so values and random draws
    match it): (1) clean pass without gradient, in the model's current mode
    (train mode in SS-Net: dropout active, BatchNorm running statistics updated
    once, like any training forward); (2) one draw of uniform noise of x's shape
    from the global CPU generator; (3) per-sample L2 normalisation; (4) ``ip``
    power iterations at ``xi``; (5) the final pass at ``epsilon``, with gradient
    into the model. The perturbed passes (4, 5) do not update BatchNorm running
    statistics. Step (4) computes only the gradient with respect to the noise:
    no parameter gradients are computed or accumulated there, and the caller's
    ``.grad`` buffers are left untouched.

    Args:
        model: returns logits (B, C, *spatial) or a tuple whose first item is the logits.
        x: (B, C_in, *spatial) input batch.
        xi, epsilon, ip, distance: see :class:`VATLoss`.
        noise: the draw of step (2), made earlier by the caller with
            :func:`uniform_noise` (x's shape, on x's device); None draws it here.
            Drawing it ahead changes nothing as long as nothing else draws from
            the CPU generator in between (on CUDA the forward's dropout masks
            come from the CUDA generator), and takes the draw off the critical path.

    Returns:
        ``(lds, r_adv)``: the float32 scalar loss and the perturbation (x's shape,
        no gradient) with ``||r_adv_b|| = epsilon`` per sample (up to the 1e-8 term).
    """
    with torch.no_grad():
        p = F.softmax(first_output(model(x)).float(), dim=1)

    if noise is None:
        noise = uniform_noise(x.shape, x.device)
    elif noise.shape != x.shape:
        raise ValueError(f"vat_lds: noise of shape {tuple(noise.shape)} for an input of shape {tuple(x.shape)}")
    d = l2_normalize(noise)

    with frozen_bn_stats(model):
        for _ in range(ip):
            d = d.detach().requires_grad_(True)
            # Only d needs a gradient here: with the parameters frozen, autograd neither
            # saves what weight gradients need nor computes them (same d, less work).
            with frozen_parameters(model), torch.enable_grad():
                adv_distance = vat_distance(first_output(model(x + xi * d)), p, distance)
                (grad_d,) = torch.autograd.grad(adv_distance, d)
            d = l2_normalize(grad_d)
        r_adv = (epsilon * d).detach()
        lds = vat_distance(first_output(model(x + r_adv)), p, distance)
    return lds, r_adv


class VATLoss(nn.Module):
    """SS-Net's smoothness loss L_lds (VAT with a Dice distance), called as ``vat(model, x)``.

    ``L_lds = D(softmax(f(x + r_adv)), softmax(f(x)))`` with
    ``r_adv = epsilon * normalize(grad_d D(softmax(f(x + xi d)), softmax(f(x))))``,
    d random unit noise (one power iteration per ``ip``); see :func:`vat_lds`.

    Args:
        xi: step of the finite-difference power iteration (10.0 in SS-Net).
        epsilon: norm of the adversarial perturbation per sample (LA 10.0, ACDC 6.0).
        ip: number of power iterations (1 in SS-Net; 0 gives a random direction).
        distance: ``"dice"`` (LA), ``"class_dice"`` (ACDC) or ``"kl"`` (ablation);
            see :func:`vat_distance`.

    Raises:
        ValueError: for an unknown distance, ``xi <= 0``, ``epsilon < 0`` or ``ip < 0``.
    """

    def __init__(self, xi: float = 10.0, epsilon: float = 10.0, ip: int = 1, distance: str = "dice") -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"VATLoss: distance must be one of {DISTANCES}, got {distance!r}.")
        if not xi > 0:
            raise ValueError(f"VATLoss: xi must be > 0, got {xi}.")
        if not epsilon >= 0:
            raise ValueError(f"VATLoss: epsilon must be >= 0, got {epsilon}.")
        if int(ip) != ip or ip < 0:
            raise ValueError(f"VATLoss: ip must be a non-negative integer, got {ip}.")
        self.xi = float(xi)
        self.epsilon = float(epsilon)
        self.ip = int(ip)
        self.distance = distance

    def forward(self, model: nn.Module, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Return the float32 scalar L_lds for the batch x (B, C_in, *spatial) (``noise``: see :func:`vat_lds`)."""
        lds, _ = vat_lds(model, x, self.xi, self.epsilon, self.ip, self.distance, noise)
        return lds

    def extra_repr(self) -> str:
        return f"xi={self.xi}, epsilon={self.epsilon}, ip={self.ip}, distance={self.distance!r}"
