"""OpenCV's Dual TV-L1 optical flow in PyTorch, batched over frame pairs (CPU and CUDA).

The algorithm, its order of operations and its border handling follow OpenCV's
``cv::optflow::DualTVL1OpticalFlow`` (opencv_contrib ``modules/optflow/src/tvl1flow.cpp``;
Zach, Pock, Bischof 2007; Wedel et al. 2009; Sanchez, Meinhardt-Llopis, Facciolo 2013):

- pyramid: ``nscales`` levels, each ``cv::resize(..., scale_step, INTER_LINEAR)`` of the one
  above (size rounded, source coordinates ``(d + 0.5) / scale_step - 0.5`` clamped at the
  borders); levels smaller than 16 pixels on a side are dropped; the flow starts at zero on
  the coarsest level and is carried down by a bilinear ``resize`` to the finer level's size,
  multiplied by ``1 / scale_step``;
- per level, the dual variables start at zero, and each of ``warps`` warpings remaps the second
  image and its centred gradient (``remap`` with ``INTER_CUBIC``: coordinates rounded to 1/32
  pixel, the Keys kernel with A = -0.75, taps outside the image read 0), then runs up to
  ``outer_iterations`` outer steps (a ``median_filtering`` median of the flow, border
  replicated, then up to ``inner_iterations`` primal-dual steps), stopping a pair once the
  squared update of its flow summed over the image falls to ``epsilon**2 * H * W`` or below;
- gradients: centred differences inside, one-sided halves at the borders (the image's centred
  gradient); forward differences with a zero last column/row (the flow's); divergence by
  backward differences with zeros before the first row/column.

Each pair of a batch keeps its own stopping rule, so a batch gives the pairs' own results.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULTS = dict(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01, inner_iterations=30,
                outer_iterations=10, scale_step=0.8, gamma=0.0, median_filtering=5)

_ALIASES = {"lambda": "lambda_", "innnerIterations": "inner_iterations", "outerIterations": "outer_iterations",
            "scaleStep": "scale_step", "medianFiltering": "median_filtering", "inner": "inner_iterations",
            "outer": "outer_iterations"}

INTER_TAB_SIZE = 32


def _cv_round(value: float) -> int:
    """``cvRound``/``saturate_cast<int>`` of a double: round half to even."""
    return int(round(value))


def _linear_taps(n_out: int, n_in: int, scale: float, device):
    """Indices and weights of OpenCV's INTER_LINEAR ``resize`` along one axis (``scale`` = in / out)."""
    d = torch.arange(n_out, dtype=torch.float64)
    f = ((d + 0.5) * scale - 0.5).to(torch.float32)
    s = torch.floor(f)
    f = f - s
    s = s.to(torch.int64)
    low = s < 0
    f = torch.where(low, torch.zeros_like(f), f)
    s = torch.where(low, torch.zeros_like(s), s)
    high = s >= n_in - 1
    f = torch.where(high, torch.zeros_like(f), f)
    s = torch.where(high, torch.full_like(s, n_in - 1), s)
    s1 = torch.clamp(s + 1, max=n_in - 1)
    return s.to(device), s1.to(device), (1 - f).to(device), f.to(device)


def _resize_linear(x: torch.Tensor, height: int, width: int, scale_y: float, scale_x: float) -> torch.Tensor:
    """``cv::resize(INTER_LINEAR)`` of ``x`` ``[..., H, W]`` to ``height x width``; ``scale_*`` = in / out."""
    y0, y1, wy0, wy1 = _linear_taps(height, x.shape[-2], scale_y, x.device)
    x0, x1, wx0, wx1 = _linear_taps(width, x.shape[-1], scale_x, x.device)
    # horizontal pass first, then vertical, as OpenCV does
    h = x.index_select(-1, x0) * wx0 + x.index_select(-1, x1) * wx1
    return h.index_select(-2, y0) * wy0[:, None] + h.index_select(-2, y1) * wy1[:, None]


def _cubic_coeffs(f: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``interpolateCubic`` (A = -0.75): the four weights ``[..., 4]`` for fraction ``f``."""
    a = -0.75
    c0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    c1 = ((a + 2) * f - (a + 3)) * f * f + 1
    c2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    c3 = 1 - c0 - c1 - c2
    return torch.stack([c0, c1, c2, c3], dim=-1)


_TAB_CACHE: dict = {}


def _cubic_table(device) -> torch.Tensor:
    key = str(device)
    if key not in _TAB_CACHE:
        f = torch.arange(INTER_TAB_SIZE, dtype=torch.float32) / INTER_TAB_SIZE
        _TAB_CACHE[key] = _cubic_coeffs(f).to(device)
    return _TAB_CACHE[key]


def _remap_cubic(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """``cv::remap(img, x + u1, y + u2, INTER_CUBIC, BORDER_CONSTANT 0)`` of ``images`` ``[B, C, H, W]``."""
    b, c, h, w = images.shape
    dev = images.device
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    mx = xs + u1
    my = ys + u2
    # OpenCV converts float maps to fixed point: 1/32 pixel, rounded half to even
    big = 1 << 24
    qx = torch.round(mx * INTER_TAB_SIZE).clamp(-big, big).to(torch.int64)
    qy = torch.round(my * INTER_TAB_SIZE).clamp(-big, big).to(torch.int64)
    sx = torch.div(qx, INTER_TAB_SIZE, rounding_mode="floor") - 1
    sy = torch.div(qy, INTER_TAB_SIZE, rounding_mode="floor") - 1
    tab = _cubic_table(dev)
    wx = tab[qx & (INTER_TAB_SIZE - 1)]  # [B, H, W, 4]
    wy = tab[qy & (INTER_TAB_SIZE - 1)]
    # pad with one ring of zeros; every tap outside the image is clamped onto that ring
    padded = F.pad(images, (1, 1, 1, 1)).reshape(b, c, (h + 2) * (w + 2))
    out = torch.zeros_like(images)
    for i in range(4):
        yi = (sy + i + 1).clamp(0, h + 1)
        for j in range(4):
            xj = (sx + j + 1).clamp(0, w + 1)
            index = (yi * (w + 2) + xj).reshape(b, 1, h * w).expand(b, c, h * w)
            tap = padded.gather(2, index).view(b, c, h, w)
            out = out + tap * (wy[..., i] * wx[..., j]).unsqueeze(1)
    return out


def _centered_gradient(src: torch.Tensor):
    """OpenCV's ``centeredGradient``: ``0.5 * (next - previous)``, the border pixel repeated."""
    p = F.pad(src.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def _forward_gradient(src: torch.Tensor):
    """OpenCV's ``forwardGradient``: zero on the last column (dx) and the last row (dy)."""
    dx = torch.zeros_like(src)
    dy = torch.zeros_like(src)
    dx[..., :, :-1] = src[..., :, 1:] - src[..., :, :-1]
    dy[..., :-1, :] = src[..., 1:, :] - src[..., :-1, :]
    return dx, dy


def _divergence(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``divergence``: backward differences, zero before the first column/row."""
    return torch.diff(v1, dim=-1, prepend=torch.zeros_like(v1[..., :1])) + \
        torch.diff(v2, dim=-2, prepend=torch.zeros_like(v2[..., :1, :]))


def _median_blur(u: torch.Tensor, ksize: int) -> torch.Tensor:
    """``cv::medianBlur`` of float ``u`` ``[B, H, W]`` (border replicated)."""
    r = ksize // 2
    p = F.pad(u.unsqueeze(1), (r, r, r, r), mode="replicate").squeeze(1)
    windows = p.unfold(1, ksize, 1).unfold(2, ksize, 1)  # [B, H, W, k, k]
    return windows.reshape(*u.shape, ksize * ksize).median(dim=-1).values


def _hypot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.hypot(a, b)


def _one_scale(I0, I1, u, params, use_gamma):
    """OpenCV's ``procOneScale`` on a batch: ``u`` is ``[B, 2 or 3, H, W]`` (u1, u2[, u3])."""
    b, h, w = I0.shape
    tau, lam, theta, gamma = params["tau"], params["lambda_"], params["theta"], params["gamma"]
    warps, inner, outer, median = (params["warps"], params["inner_iterations"], params["outer_iterations"],
                                   params["median_filtering"])
    scaled_eps = float(torch.tensor(params["epsilon"] ** 2 * h * w, dtype=torch.float32))
    l_t = float(torch.tensor(lam * theta, dtype=torch.float32))
    taut = float(torch.tensor(tau / theta, dtype=torch.float32))
    nu = u.shape[1]
    I1x, I1y = _centered_gradient(I1)
    stack1 = torch.stack([I1, I1x, I1y], dim=1)
    p = torch.zeros(b, nu, 2, h, w, dtype=I0.dtype, device=I0.device)  # (p11, p12), (p21, p22), (p31, p32)
    flt_eps = torch.finfo(torch.float32).eps
    check_every = 1 if I0.device.type == "cpu" else 8
    for _ in range(warps):
        warped = _remap_cubic(stack1, u[:, 0], u[:, 1])
        I1w, I1wx, I1wy = warped[:, 0], warped[:, 1], warped[:, 2]
        grad = I1wx * I1wx + I1wy * I1wy
        rho_c = I1w - I1wx * u[:, 0] - I1wy * u[:, 1] - I0
        active = torch.ones(b, dtype=torch.bool, device=I0.device)
        for n in range(outer * inner):
            if n % inner == 0 and median > 1:
                filtered = torch.stack([_median_blur(u[:, k], median) for k in range(2)], dim=1)
                if use_gamma:
                    filtered = torch.cat([filtered, u[:, 2:]], dim=1)
                u = torch.where(active.view(b, 1, 1, 1), filtered, u)
            # estimateV: the thresholding step
            rho = rho_c + (I1wx * u[:, 0] + I1wy * u[:, 1])
            if use_gamma:
                rho = rho + gamma * u[:, 2]
            lg = l_t * grad
            fi = torch.where(grad > flt_eps, -rho / torch.where(grad > flt_eps, grad, torch.ones_like(grad)),
                             torch.zeros_like(rho))
            coef = torch.where(rho < -lg, torch.full_like(rho, l_t), torch.where(rho > lg, torch.full_like(rho, -l_t), fi))
            d = [coef * I1wx, coef * I1wy] + ([coef * gamma] if use_gamma else [])
            v = u + torch.stack(d, dim=1)
            # estimateU
            div = _divergence(p[:, :, 0], p[:, :, 1])
            new_u = v + theta * div
            error = ((new_u[:, :nu] - u) ** 2).sum(dim=(1, 2, 3))
            # estimateDualVariables
            ux, uy = _forward_gradient(new_u)
            ng = 1.0 + taut * _hypot(ux, uy)
            new_p = (p + taut * torch.stack([ux, uy], dim=2)) / ng.unsqueeze(2)
            keep = active.view(b, 1, 1, 1)
            u = torch.where(keep, new_u, u)
            p = torch.where(keep.unsqueeze(-1), new_p, p)
            active = active & ~(error <= scaled_eps)
            # a stopped pair's state is frozen by the masks above, so checking less often changes
            # nothing but the wasted steps; on CUDA it saves a device sync per step
            if (check_every == 1 or n % check_every == check_every - 1) and not bool(active.any()):
                break
    return u


def _params(overrides: dict) -> dict:
    params = dict(DEFAULTS)
    for key, value in overrides.items():
        key = _ALIASES.get(key, key)
        if key not in params:
            raise TypeError(f"tvl1_flow: unknown parameter {key!r}; known: {sorted(params)}")
        params[key] = value
    return params


@torch.no_grad()
def tvl1_flow(first: torch.Tensor, second: torch.Tensor, **params) -> torch.Tensor:
    """Dual TV-L1 flow from ``first`` to ``second``, ``[B, H, W]`` grey images in OpenCV's value
    range (0-255), as ``[B, 2, H, W]`` float32 (x then y, in pixels), on their device.

    Parameters and defaults are those of ``cv2.optflow.DualTVL1OpticalFlow_create``: ``tau``
    0.25, ``lambda_`` (or ``lambda``) 0.15, ``theta`` 0.3, ``nscales`` 5, ``warps`` 5,
    ``epsilon`` 0.01, ``inner_iterations`` 30, ``outer_iterations`` 10, ``scale_step`` 0.8,
    ``gamma`` 0, ``median_filtering`` 5.
    """
    p = _params(params)
    if first.shape != second.shape or first.dim() not in (2, 3):
        raise ValueError(f"tvl1_flow: first and second must both be [B, H, W] (got {tuple(first.shape)} "
                         f"and {tuple(second.shape)})")
    squeeze = first.dim() == 2
    if squeeze:
        first, second = first[None], second[None]
    I0 = first.to(torch.float32)
    I1 = second.to(torch.float32)
    use_gamma = p["gamma"] != 0
    b, h, w = I0.shape
    step = float(p["scale_step"])
    pyramid = [(I0, I1)]
    for _ in range(1, int(p["nscales"])):
        ph, pw = pyramid[-1][0].shape[-2:]
        nh, nw = _cv_round(ph * step), _cv_round(pw * step)
        if nw < 16 or nh < 16:
            break
        pyramid.append(tuple(_resize_linear(x, nh, nw, 1.0 / step, 1.0 / step) for x in pyramid[-1]))
    ch, cw = pyramid[-1][0].shape[-2:]
    u = torch.zeros(b, 3 if use_gamma else 2, ch, cw, dtype=torch.float32, device=I0.device)
    for s in range(len(pyramid) - 1, -1, -1):
        u = _one_scale(pyramid[s][0], pyramid[s][1], u, p, use_gamma)
        if s == 0:
            break
        fh, fw = pyramid[s - 1][0].shape[-2:]
        sh, sw = u.shape[-2:]
        u = _resize_linear(u, fh, fw, 1.0 / (fh / sh), 1.0 / (fw / sw))
        u = torch.cat([u[:, :2] * float(torch.tensor(1 / step, dtype=torch.float32)), u[:, 2:]], dim=1)
    flow = u[:, :2].contiguous()
    return flow[0] if squeeze else flow


__all__ = ["tvl1_flow", "DEFAULTS"]
