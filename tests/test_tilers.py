"""Tilers: agreement with py360convert / pytorch360convert, seam and pole wrap, inputs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cora_kit
from cora_kit.errors import PluginParamsError

py360 = pytest.importorskip("py360convert")


@pytest.fixture(autouse=True)
def py360convert_exact(monkeypatch):
    """py360convert's scipy ``map_coordinates`` path (exact bilinear): with OpenCV installed
    it would use ``cv2.remap``, whose 1/32-pixel position grid is not the float reference
    these tests compare the torch backend against (the OpenCV backend is compared with
    py360convert's OpenCV path in test_tilers_opencv.py)."""
    import py360convert.utils as utils

    monkeypatch.setattr(utils, "cv2", None)
    samplers = (utils.EquirecSampler.from_perspective, utils.EquirecSampler.from_cubemap)
    for cached in samplers:
        cached.cache_clear()
    yield
    for cached in samplers:
        cached.cache_clear()


def smooth_erp(h: int = 256, w: int = 512) -> np.ndarray:
    """A smooth RGB image on the sphere in [0, 1] (constant at the poles), ``[h, w, 3]`` float32."""
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, np.arange(w) / w, indexing="ij")
    pole = np.sin(np.pi * yy) ** 2
    base = 0.5 + 0.25 * np.sin(2 * np.pi * 3 * xx) * pole + 0.2 * np.cos(2 * np.pi * (2 * xx + yy)) * pole
    return np.stack([base, base**2, 1 - base], -1).astype(np.float32)


def to_batch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()


def py360_tile(img: np.ndarray, view, size: int) -> np.ndarray:
    yaw = (view.yaw_deg + 180) % 360 - 180
    return py360.e2p(img, view.fov_deg, yaw, view.pitch_deg, (size, size))


def test_registered_and_output_contract():
    names = {p.name for p in cora_kit.list_plugins("tiler")}
    assert {"e2p", "cubemap"} <= names
    tiler = cora_kit.create("tiler", "e2p", size=32)
    out = tiler(torch.rand(2, 3, 64, 128))
    assert out.views.shape == (2, 9, 3, 32, 32) and out.views.dtype == torch.float32
    assert out.layout is tiler.layout
    assert tiler.plan((64, 128)) is tiler.plan((64, 128))  # cached per ERP size and device


@pytest.mark.parametrize("spacing,mean_tol,max_tol", [("centres", 2e-3, 2e-2), ("py360convert", 1e-5, 1e-4)])
def test_matches_py360convert_on_smooth_image(spacing, mean_tol, max_tol):
    img = smooth_erp(512, 1024)
    tiler = cora_kit.create("tiler", "e2p", ray_spacing=spacing, pitch_rings=[60, -60])
    views = tiler(to_batch(img)).views[0].permute(0, 2, 3, 1).numpy()  # float input: torch backend
    for i in (1, 4, 5, 8, 9, 14):  # yaws 0, 135, 180 (the seam), 315 and the +-60 rings
        diff = np.abs(views[i] - py360_tile(img, tiler.layout.views[i], 256))
        assert diff.mean() < mean_tol and diff.max() < max_tol, (tiler.layout.views[i], diff.mean(), diff.max())


def test_cubemap_faces_match_py360convert():
    img = smooth_erp()
    tiler = cora_kit.create("tiler", "cubemap", size=64, ray_spacing="py360convert")
    assert [(v.yaw_deg, v.pitch_deg) for v in tiler.layout.views[1:]] == [
        (0, 0), (90, 0), (180, 0), (270, 0), (0, 90), (0, -90)]
    views = tiler(to_batch(img)).views[0].permute(0, 2, 3, 1).numpy()
    for i in tiler.layout.tile_indices:  # the up/down faces sample across the poles
        assert np.abs(views[i] - py360_tile(img, tiler.layout.views[i], 64)).max() < 1e-4


def test_real_panorama_vs_py360convert(real_panoramas):
    """Mars: edge-to-edge spacing reproduces py360convert; true centres differ by half a pixel."""
    tiler_py = cora_kit.create("tiler", "e2p", ray_spacing="py360convert")
    tiler_c = cora_kit.create("tiler", "e2p")
    img = np.asarray(__import__("PIL.Image").Image.open(real_panoramas["mars"]).convert("RGB"), np.float32) / 255
    x = tiler_py(to_batch(img)).views[0]  # float input: the torch backend (exact bilinear)
    y = tiler_c(to_batch(img)).views[0]
    for i in (1, 5):  # yaw 0 and 180 (the seam)
        ref = torch.from_numpy(py360_tile(img, tiler_py.layout.views[i], 256)).permute(2, 0, 1)
        d_py, d_c = (x[i] - ref).abs(), (y[i] - ref).abs()
        assert float(d_py.mean()) < 5e-4 and float(d_py.max()) < 2e-2
        assert float(d_c.mean()) < 1.5e-2 and float(d_c.max()) < 0.6


def test_seam_has_no_artefact():
    """A tile across the +-180 deg seam equals the same tile of the half-rolled ERP, taps included."""
    h, w = 64, 128
    erp = torch.rand(1, 3, h, w)
    rolled = torch.roll(erp, w // 2, dims=3)
    a = cora_kit.create("tiler", "e2p", num_tiles=2, size=27, include_global=False)  # yaws 0, 180
    assert a.plan((h, w)).fix_out.numel() > 0  # taps beyond the seam are exercised
    va, vb = a(erp).views[0], a(rolled).views[0]
    assert torch.allclose(va[1], vb[0], atol=1e-5) and torch.allclose(va[0], vb[1], atol=1e-5)


def test_pytorch360convert_conventions():
    """Same conventions away from the seam; at the seam pytorch360convert clamps instead of wrapping."""
    p3 = pytest.importorskip("pytorch360convert")
    img = smooth_erp(128, 256)
    x = to_batch(img)
    tiler = cora_kit.create("tiler", "e2p", size=64, ray_spacing="py360convert")
    ours = tiler(x).views[0]
    for i, yaw in ((2, 45.0), (5, 180.0)):
        theirs = p3.e2p(x, 90.0, yaw if yaw <= 180 else yaw - 360, 0.0, (64, 64))[0]
        ref = torch.from_numpy(py360_tile(img, tiler.layout.views[i], 64)).permute(2, 0, 1)
        assert float((ours[i] - theirs).abs().mean()) < 1e-3
        assert float((ours[i] - ref).abs().max()) <= float((theirs - ref).abs().max()) + 1e-6


def test_global_view_is_a_box_filter():
    erp = torch.rand(2, 3, 64, 128)
    views = cora_kit.create("tiler", "e2p", size=16)(erp).views
    assert torch.allclose(views[:, 0], erp.reshape(2, 3, 16, 4, 16, 8).mean(dim=(3, 5)), atol=1e-6)
    aa = cora_kit.create("tiler", "e2p", size=16, global_resize="bilinear-aa")(erp).views
    assert torch.allclose(aa[:, 0], F.interpolate(erp, size=(16, 16), mode="bilinear", antialias=True), atol=1e-6)


def test_input_kinds_and_errors(tmp_path):
    from PIL import Image

    tiler = cora_kit.create("tiler", "e2p", size=16, backend="torch")
    u8 = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8)
    assert torch.allclose(tiler(u8).views, tiler(u8.float() / 255).views, atol=1e-6)
    auto = cora_kit.create("tiler", "e2p", size=16)  # uint8: OpenCV (test_tilers_opencv.py)
    assert float((auto(u8).views - tiler(u8).views).abs().max()) < 3e-2
    assert tiler(u8[0]).views.shape == (1, 9, 3, 16, 16)
    Image.fromarray(u8[0].permute(1, 2, 0).numpy()).save(tmp_path / "pano.png")
    assert torch.allclose(tiler(tmp_path / "pano.png").views, tiler(u8).views)
    assert torch.allclose(tiler(str(tmp_path / "pano.png")).views, tiler(u8).views)
    with pytest.raises(ValueError, match=r"\[B,3,H,W\].*\[1, 4, 32, 64\]"):
        tiler(torch.rand(1, 4, 32, 64))
    with pytest.raises(ValueError, match="W == 2H"):
        tiler(torch.rand(1, 3, 32, 32))
    with pytest.raises(PluginParamsError):
        cora_kit.create("tiler", "e2p", fov_deg=200)
    with pytest.raises(PluginParamsError):
        cora_kit.create("tiler", "e2p", ray_spacing="edges")


def test_layout_options():
    t = cora_kit.create("tiler", "e2p", num_tiles=6, fov_deg=100, pitch_rings=[60, -60], ring_tiles=3, include_global=False)
    views = t.layout.views
    assert len(views) == 12 and t.layout.global_index is None
    assert [v.yaw_deg for v in views[:6]] == [60.0 * i for i in range(6)]
    assert [v.pitch_deg for v in views[6:]] == [60.0] * 3 + [-60.0] * 3


def test_tile_command(tmp_path):
    from PIL import Image

    from cora_kit.cli import main

    pano = tmp_path / "pano.png"
    Image.fromarray((np.clip(smooth_erp(64, 128), 0, 1) * 255).astype(np.uint8)).save(pano)
    out = tmp_path / "sheet.png"
    assert main(["tile", str(pano), "--out", str(out), "--tiler", "cubemap", "--show-overlap"]) == 0
    assert Image.open(out).size[0] > 200
    Image.new("RGB", (100, 70)).save(tmp_path / "odd.png")
    assert main(["tile", str(tmp_path / "odd.png"), "--out", str(out)]) == 2
    assert main(["tile", str(pano), "--out", str(out), "--tiler", "e2q"]) == 2
