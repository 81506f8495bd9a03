"""The one image decoder (issue 18, case 5): confined to the dataset folder, a pixel limit
with a clear error, 16-bit PNGs and CMYK JPEGs converted correctly, and the same values
in training, caption, tile and serve (uploads)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cora_kit import serving
from cora_kit.cli import main
from cora_kit.data.csv_loaders import load_split
from cora_kit.data.dataset import CaptionDataset
from cora_kit.data.images import MAX_PIXELS, check_erp, read_erp, read_erp_hwc
from cora_kit.errors import DataError
from cora_kit.geometry import load_erp

FOGRA39 = Path("/usr/share/texlive/texmf-dist/tex/generic/colorprofiles/FOGRA39L_coated.icc")


def write_png(path: Path, width: int, height: int, bit_depth: int, colour_type: int,
              rows: object = None, chunk_rows: int = 512) -> None:
    """A PNG written chunk by chunk (filter 0); ``rows(y0, y1) -> bytes`` of raw pixel rows,
    or zeros. Lets a test make a 450-megapixel file of a few KB."""
    channels = {0: 1, 2: 3}[colour_type]
    row_bytes = (width * channels * bit_depth + 7) // 8
    comp = zlib.compressobj(9)
    idat = bytearray()
    for y0 in range(0, height, chunk_rows):
        y1 = min(y0 + chunk_rows, height)
        raw = rows(y0, y1) if rows is not None else bytes(row_bytes * (y1 - y0))
        lines = b"".join(b"\0" + raw[i * row_bytes:(i + 1) * row_bytes] for i in range(y1 - y0))
        idat += comp.compress(lines)
    idat += comp.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b""))


# --- confinement ------------------------------------------------------------------------


def _dataset(tmp: Path, urls: list[str]) -> Path:
    (tmp / "set" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 32), (1, 2, 3)).save(tmp / "set" / "images" / "a.png")
    Image.new("RGB", (64, 32), (1, 2, 3)).save(tmp / "outside.png")
    csv = tmp / "set" / "train.csv"
    csv.write_text("url,query,annotation\n" + "".join(f"{u},q{i},a\n" for i, u in enumerate(urls)))
    return csv


def test_image_paths_cannot_leave_the_dataset_folder(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, ["images/a.png", "../../../../../../etc/passwd", "../outside.png",
                              "images/../images/a.png", "http://host/x/.."])
    with pytest.raises(DataError, match=r"train.csv: row 3: image path '\.\./\.\./.*etc/passwd' resolves to /etc/passwd,"
                                        r" outside the dataset folder"):
        load_split(csv)
    report = load_split(csv, on_bad_row="skip")
    assert [s.rows for s in report] == [(2,), (5,)]  # inside, also after normalising '..'
    assert dict(report.skipped) == {"path outside the dataset folder": 2, "missing image": 1}
    assert "URL" in report.problems[-1]  # no image root: URLs map to nothing
    report = load_split(csv, image_root=tmp_path / "set" / "images", on_bad_row="skip")
    assert any("http://host/x/.." not in p and "outside the dataset folder" in p for p in report.problems)


def test_symlinks_inside_the_dataset_folder_are_followed(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, ["images/linked.png"])
    (tmp_path / "set" / "images" / "linked.png").symlink_to(tmp_path / "outside.png")
    assert len(load_split(csv)) == 1


# --- pixel limit ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30000x15000 1-bit PNG: 450 megapixels in a few KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    write_png(path, 30000, 15000, 1, 0)
    return path


def test_decompression_bomb_is_a_clear_error_and_skippable(bomb: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert bomb.stat().st_size < 200_000
    for fn in (check_erp, read_erp):
        with pytest.raises(DataError, match=r"bomb.png: (30000x15000 is )?450 megapixels, over the limit of 134"):
            fn(bomb)
    Image.new("RGB", (64, 32)).save(bomb.parent / "ok.png")
    csv = bomb.parent / "train.csv"
    csv.write_text("url,query,annotation\nok.png,q,a\nbomb.png,q,a\nok.png,q2,a\n")
    report = load_split(csv, on_bad_row="skip")
    assert len(report) == 2 and dict(report.skipped) == {"image too large": 1}
    assert main(["caption", str(bomb), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "megapixels" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pixel_limit_can_be_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (64, 32)).save(tmp_path / "small.png")
    monkeypatch.setenv("CORA_KIT_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match=r"small.png: 64x32 .* over the limit"):
        read_erp(tmp_path / "small.png")
    monkeypatch.setenv("CORA_KIT_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="whole number"):
        read_erp(tmp_path / "small.png")
    assert MAX_PIXELS == 16384 * 8192


# --- colour: 16-bit, CMYK ---------------------------------------------------------------


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 32).round().astype(np.uint16).reshape(32, 64)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    got = read_erp_hwc(tmp_path / "g16.png")
    want = np.round(values / 257.0).astype(np.uint8)
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 1], want)
    assert got.mean() == pytest.approx(127.5, abs=1)  # main decoded this as all white (254.4)


def test_16_bit_rgb_png_keeps_its_colours(tmp_path: Path) -> None:
    w, h = 64, 32
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(h, w, 3), dtype=np.uint16)
    write_png(tmp_path / "rgb16.png", w, h, 16, 2, rows=lambda y0, y1: rgb16[y0:y1].astype(">u2").tobytes())
    got = read_erp_hwc(tmp_path / "rgb16.png").astype(int)
    assert np.abs(got - rgb16 / 257.0).max() <= 1.0


def test_cmyk_jpeg_without_profile(tmp_path: Path) -> None:
    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[:, :32] = (200, 50, 10)
    rgb[:, 32:] = (20, 120, 240)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    got = read_erp_hwc(tmp_path / "c.jpg").astype(int)
    assert np.abs(got[4:-4, 4:28] - (200, 50, 10)).max() <= 3
    assert np.abs(got[4:-4, 36:-4] - (20, 120, 240)).max() <= 3


@pytest.mark.skipif(not FOGRA39.is_file(), reason=f"no CMYK ICC profile at {FOGRA39} (texlive colorprofiles)")
def test_cmyk_jpeg_with_icc_profile_is_colour_managed(tmp_path: Path) -> None:
    """A print-ready CMYK JPEG (FOGRA39 profile embedded): decoding through the profile
    gives back the sRGB colours it was made from; PIL's bare formula does not."""
    from PIL import ImageCms

    rgb = np.zeros((32, 64, 3), np.uint8)
    rgb[:, :32] = (200, 60, 40)
    rgb[:, 32:] = (60, 140, 90)
    to_cmyk = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), str(FOGRA39), "RGB", "CMYK",
                                      renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    cmyk = ImageCms.applyTransform(Image.fromarray(rgb), to_cmyk)
    cmyk.save(tmp_path / "print.jpg", quality=100, icc_profile=FOGRA39.read_bytes())
    got = read_erp_hwc(tmp_path / "print.jpg").astype(int)
    naive = np.asarray(Image.open(tmp_path / "print.jpg").convert("RGB")).astype(int)
    err = np.abs(got[4:-4, 4:-4] - rgb[4:-4, 4:-4]).mean()
    err_naive = np.abs(naive[4:-4, 4:-4] - rgb[4:-4, 4:-4]).mean()
    assert err < 6 and err_naive > 3 * err, (err, err_naive)


# --- one decoder everywhere -------------------------------------------------------------


def _zoo(tmp: Path) -> list[Path]:
    """Files of every kind the decoder converts."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    files = {}
    files["rgb.png"] = Image.fromarray(rgb)
    files["rgba.png"] = Image.fromarray(np.dstack([rgb, rgb[..., :1]]))
    files["palette.png"] = Image.fromarray(rgb).convert("P")
    files["la.png"] = Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), mode="LA")
    files["g16.png"] = Image.fromarray(rng.integers(0, 65536, size=(32, 64), dtype=np.uint16))
    files["cmyk.jpg"] = Image.fromarray(rgb).convert("CMYK")
    files["near.png"] = Image.fromarray(rng.integers(0, 256, size=(80, 161, 3), dtype=np.uint8))  # within tolerance
    out = []
    for name, img in files.items():
        img.save(tmp / name)
        out.append(tmp / name)
    return out


def test_training_caption_tile_and_serve_decode_identically(tmp_path: Path) -> None:
    from cora_kit.data.csv_loaders import Sample

    def as_uint8(erp: torch.Tensor) -> torch.Tensor:
        return erp if erp.dtype == torch.uint8 else (erp * 255).round().to(torch.uint8)

    for path in _zoo(tmp_path):
        train = CaptionDataset([Sample("x", str(path), str(path), "q", ("a",), (2,))])[0]["erp"]
        caption = serving.read_panorama(path)
        tile = load_erp(path)  # cora-kit tile and the tilers' file input (uint8)
        upload = read_erp(io.BytesIO(path.read_bytes()))  # the server decodes uploaded bytes
        assert train.shape[0] == 3 and train.shape[2] == 2 * train.shape[1], path.name
        assert torch.equal(train, caption) and torch.equal(train, upload), path.name
        assert torch.equal(as_uint8(train), tile.contiguous()), path.name
