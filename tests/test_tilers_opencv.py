"""The tilers' OpenCV backend: agreement with an exact float64 reference, with the torch
backend and with py360convert's OpenCV path; seam and poles; input layouts; backend choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cora_kit
from cora_kit.errors import BackendUnavailableError, PluginParamsError
from cora_kit.geometry import erp_pixel_coords

cv2 = pytest.importorskip("cv2")


def smooth_u8(h: int = 256, w: int = 512) -> np.ndarray:
    """A smooth RGB panorama (constant at the poles), uint8 ``[h, w, 3]``."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, np.arange(w) / w, indexing="ij")
    pole = np.sin(np.pi * yy) ** 2
    base = 0.5 + 0.25 * np.sin(2 * np.pi * 3 * xx) * pole + 0.2 * np.cos(2 * np.pi * (2 * xx + yy)) * pole
    return np.round(np.stack([base, base**2, 1 - base], -1) * 255).astype(np.uint8)


def hwc_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``[H,W,3]`` -> ``[1,3,H,W]`` with HWC memory (what decoders produce)."""
    return torch.from_numpy(img).permute(2, 0, 1)[None]


def reference(img: np.ndarray, tiler, index: int) -> np.ndarray:
    """Exact bilinear sampling in float64 at the view's pixel centres: x wraps at the seam,
    a tap beyond a pole reads the edge row shifted by W/2. ``[3, s, s]``."""
    h, w = img.shape[:2]
    src = img.astype(np.float64) / 255
    xy = erp_pixel_coords(tiler.layout.views[index], (h, w), tiler.layout.ray_spacing).numpy()
    x, y = xy[..., 0], xy[..., 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    acc = np.zeros((*x.shape, 3))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            tx, ty = x0 + dx, y0 + dy
            pole = (ty < 0) | (ty >= h)
            tx = np.where(pole, tx - w // 2, tx) % w
            acc += (wx * wy)[..., None] * src[np.clip(ty, 0, h - 1), tx]
    return acc.transpose(2, 0, 1)


def real_u8(path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def test_backend_choice_and_label():
    tiler = cora_kit.create("tiler", "e2p", size=16)
    assert tiler.requested_backend == "auto" and tiler.backend.startswith(f"OpenCV {cv2.__version__} remap")
    assert cora_kit.create("tiler", "e2p", backend="torch").backend == "torch grid_sample"
    assert "resize" in cora_kit.create("tiler", "erp-global").backend
    info = {p.name: p for p in cora_kit.list_plugins("tiler")}
    for name in ("e2p", "cubemap", "erp-grid", "erp-global"):
        assert info[name].backend and "OpenCV" in info[name].backend, info[name]
    with pytest.raises(PluginParamsError):
        cora_kit.create("tiler", "e2p", backend="cuda")


def test_cli_plugins_shows_the_tiler_backend():
    from typer.testing import CliRunner

    from cora_kit.cli import app

    out = CliRunner().invoke(app, ["plugins", "--kind", "tiler", "--json"])
    assert out.exit_code == 0, out.output
    import json

    rows = {r["name"]: r for r in json.loads(out.output)}
    assert "OpenCV" in rows["e2p"]["backend"] and "grid_sample" in rows["e2p"]["backend"]


@pytest.mark.parametrize("name,kw", [
    ("e2p", {}),
    ("e2p", {"pitch_rings": [60, -60], "ring_tiles": 3}),  # taps across both poles
    ("cubemap", {}),  # straight up / down
    ("erp-grid", {}),
    ("e2p", {"ray_spacing": "py360convert"}),
])
def test_opencv_matches_float64_reference_on_a_smooth_panorama(name, kw):
    img = smooth_u8()
    tiler = cora_kit.create("tiler", name, size=65, **kw)
    if name == "cubemap" or kw.get("pitch_rings"):
        plan = tiler.remap_plan(img.shape[:2])
        assert plan.top is not None and plan.bottom is not None  # pole taps are exercised
    views = tiler(hwc_tensor(img)).views[0].numpy()
    for i in tiler.layout.tile_indices:
        diff = np.abs(views[i] - reference(img, tiler, i))
        # uint8 rounding of the result (<= 0.5/255) + OpenCV's 1/32-pixel position grid
        assert diff.mean() < 1e-3 and diff.max() < 3e-3, (tiler.layout.views[i], diff.mean(), diff.max())


def test_opencv_matches_float64_reference_on_a_real_panorama(real_panoramas):
    img = real_u8(real_panoramas["mars"])
    tiler = cora_kit.create("tiler", "e2p", pitch_rings=[60, -60])
    views = tiler(hwc_tensor(img)).views[0].numpy()
    for i in (1, 5, 9, 13):  # yaw 0, the seam, the +60 and -60 rings
        diff = np.abs(views[i] - reference(img, tiler, i))
        # the tolerance of the torch path's centres mode against py360convert (test_tilers)
        assert diff.mean() < 2e-3 and diff.max() < 2e-2, (i, diff.mean(), diff.max())


def test_opencv_and_torch_backends_agree(real_panoramas):
    img = real_u8(real_panoramas["moon"])
    x = hwc_tensor(img)
    fast = cora_kit.create("tiler", "cubemap")(x).views
    exact = cora_kit.create("tiler", "cubemap", backend="torch")(x).views
    diff = (fast - exact).abs()
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 2e-2
    assert float((fast[:, 0] - exact[:, 0]).abs().max()) <= 0.5 / 255 + 1e-6  # global view: rounding only


def test_parity_with_py360convert_opencv_path(real_panoramas):
    """Same uint8 panorama, same maps: py360convert's OpenCV path gives the same bytes
    except where a float32 map value rounds to the other 1/32 pixel."""
    py360 = pytest.importorskip("py360convert")
    import py360convert.utils as py360_utils

    assert py360_utils.cv2 is not None  # its OpenCV path is the one compared here
    img = real_u8(real_panoramas["mars"])
    tiler = cora_kit.create("tiler", "e2p", ray_spacing="py360convert", pitch_rings=[60, -60])
    views = tiler(hwc_tensor(img)).views[0]
    for i in (1, 4, 5, 8, 9, 14):
        v = tiler.layout.views[i]
        theirs = py360.e2p(img, v.fov_deg, (v.yaw_deg + 180) % 360 - 180, v.pitch_deg, (256, 256))
        diff = np.abs(views[i].permute(1, 2, 0).numpy() * 255 - theirs.astype(np.float64))
        assert (diff > 0.5).mean() < 1e-3 and diff.mean() / 255 < 1e-5, (i, diff.max(), (diff > 0.5).mean())


def test_layouts_and_dtypes_give_the_same_views():
    img = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    tiler = cora_kit.create("tiler", "e2p", size=24, pitch_rings=[70], ring_tiles=2)
    hwc = hwc_tensor(img)
    chw = hwc.contiguous()
    assert chw.stride() != hwc.stride()
    a, b = tiler(hwc).views, tiler(chw).views
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (1, 11, 3, 24, 24)
    batch = torch.from_numpy(np.stack([img, img[::-1].copy()])).permute(0, 3, 1, 2)
    both = tiler(batch).views
    assert torch.equal(both[:1], a) and torch.equal(both[1:], tiler(hwc_tensor(img[::-1].copy())).views)
    f32 = cora_kit.create("tiler", "e2p", size=24, pitch_rings=[70], ring_tiles=2, backend="opencv")
    via_float = f32(chw.float() / 255).views  # float input remapped in float32 by OpenCV
    assert float((via_float - a).abs().max()) <= 0.5 / 255 + 1e-6


def test_seam_and_pole_wrap_are_exact():
    """A tile across the seam equals the same tile of the half-rolled ERP; an up-looking
    face equals the one of the ERP rolled by W/2 turned 180 degrees (taps across the pole)."""
    img = np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    rolled = np.roll(img, 64, axis=1)
    tiler = cora_kit.create("tiler", "e2p", num_tiles=2, size=27, include_global=False)
    assert tiler.remap_plan((64, 128)).top is None  # pitch 0, FOV 90: no pole taps
    a, b = tiler(hwc_tensor(img)).views[0], tiler(hwc_tensor(rolled)).views[0]
    assert torch.equal(a[1], b[0]) and torch.equal(a[0], b[1])
    cube = cora_kit.create("tiler", "cubemap", size=33, include_global=False)  # centre pixel at the pole
    plan = cube.remap_plan((64, 128))
    assert plan.top is not None and plan.bottom is not None
    up = cube(hwc_tensor(img)).views[0, 4]
    ref = torch.from_numpy(reference(img, cube, 4)).float()
    assert float((up - ref).abs().max()) < 3e-2  # random pixels: 1/64 px x up to 255 levels/px


def test_global_view_area_filter():
    img = np.random.default_rng(2).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    views = cora_kit.create("tiler", "e2p", size=16)(hwc_tensor(img)).views
    box = torch.from_numpy(img).permute(2, 0, 1).double().reshape(3, 16, 4, 16, 8).mean(dim=(2, 4)) / 255
    assert float((views[0, 0] - box).abs().max()) <= 0.5 / 255 + 1e-6
    # not a multiple of the view size: true area average, as torch's area_resize computes it
    odd = cora_kit.create("tiler", "erp-global", size=24)
    fast = odd(hwc_tensor(img)).views
    exact = cora_kit.create("tiler", "erp-global", size=24, backend="torch")(hwc_tensor(img)).views
    assert float((fast - exact).abs().max()) <= 0.5 / 255 + 1e-6
    # upsampling and bilinear-aa run the torch filter on floats
    big = cora_kit.create("tiler", "erp-global", size=100)
    assert torch.allclose(big(hwc_tensor(img)).views,
                          cora_kit.create("tiler", "erp-global", size=100, backend="torch")(hwc_tensor(img)).views)
    aa = cora_kit.create("tiler", "e2p", size=16, global_resize="bilinear-aa")
    ref = cora_kit.create("tiler", "e2p", size=16, global_resize="bilinear-aa", backend="torch")
    assert torch.allclose(aa(hwc_tensor(img)).views[:, 0], ref(hwc_tensor(img)).views[:, 0], atol=1e-6)


def test_area_resize_equals_opencv_inter_area():
    from cora_kit_builtins.tilers.sampling import box_resize

    img = np.random.default_rng(3).random((100, 200, 3), dtype=np.float32)
    for size in (37, 64, 99):
        ours = box_resize(torch.from_numpy(img).permute(2, 0, 1)[None], size)[0].permute(1, 2, 0).numpy()
        theirs = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        assert np.abs(ours - theirs).max() < 1e-5, size


def test_which_path_runs():
    tiler = cora_kit.create("tiler", "e2p", size=16)
    u8 = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8)
    tiler(u8)
    assert tiler._remap_plans and not tiler._plans  # uint8 on the CPU: OpenCV
    tiler(u8.float() / 255)
    assert tiler._plans  # float: the exact torch path
    grad = (u8.float() / 255).requires_grad_()
    out = tiler(grad).views
    out.sum().backward()
    assert grad.grad is not None and float(grad.grad.abs().sum()) > 0
    strict = cora_kit.create("tiler", "e2p", size=16, backend="opencv")
    with pytest.raises(BackendUnavailableError, match="without gradients"):
        strict((u8.float() / 255).requires_grad_())
    torch_only = cora_kit.create("tiler", "e2p", size=16, backend="torch")
    torch_only(u8)
    assert not torch_only._remap_plans


def test_opencv_missing(monkeypatch):
    from cora_kit_builtins.tilers import base

    monkeypatch.setattr(base, "opencv_status", lambda: (False, "ModuleNotFoundError: No module named 'cv2'"))
    with pytest.raises(BackendUnavailableError, match="opencv-python-headless"):
        cora_kit.create("tiler", "e2p", backend="opencv")
    auto = cora_kit.create("tiler", "e2p", size=16)
    assert auto.backend.startswith("torch grid_sample (OpenCV does not import")
    u8 = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8)
    assert torch.allclose(auto(u8).views, auto(u8.float() / 255).views)
    assert not auto._remap_plans


def test_output_buffers_are_reused_only_when_released():
    """The OpenCV path recycles an output buffer only when nothing refers to it."""
    tiler = cora_kit.create("tiler", "e2p", size=16)
    a_in = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)
    b_in = torch.randint(0, 256, (2, 3, 32, 64), dtype=torch.uint8)
    first = tiler(a_in).views
    keep = first.clone()
    view, array = first[:, 3], first.numpy()
    ptr = first.data_ptr()
    del first
    for _ in range(4):  # a view and a numpy array of the first result are still alive
        out = tiler(b_in).views
        assert out.data_ptr() != ptr
    assert torch.equal(view, keep[:, 3]) and np.array_equal(array, keep.numpy())
    del view, array, out
    ptrs = set()
    for _ in range(6):  # the usual loop: the previous result is alive during the next call
        out = tiler(a_in).views
        ptrs.add(out.data_ptr())
        assert torch.equal(out, keep)
    assert len(ptrs) <= 3  # recycled: at most two kept buffers (+ the first one freed above)


def test_tilers_pickle_without_their_buffers():
    import pickle

    tiler = cora_kit.create("tiler", "e2p", size=16)
    u8 = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8)
    held = tiler(u8).views
    clone = pickle.loads(pickle.dumps(tiler))
    assert torch.equal(clone(u8).views, held)
