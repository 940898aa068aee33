"""Image I/O round trips and metrics against scikit-image; LPIPS offline behaviour."""
import re
import warnings

import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ipsolve import metrics
from ipsolve.io import list_images, load_folder, load_image, save_image


def test_save_load_round_trip(tmp_path):
    x = (torch.arange(3 * 16 * 20).float().view(1, 3, 16, 20) % 255) / 127.5 - 1
    save_image(x, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png")
    assert back.shape == x.shape and (back - x).abs().max() <= 1 / 127.5
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind
    grey = load_image(tmp_path / "a.png", size=8, channels=1)
    assert grey.shape == (1, 1, 8, 8) and grey.min() >= -1 and grey.max() <= 1
    assert load_image(tmp_path / "a.png", channels=3).shape[1] == 3
    # a size or channel count of the wrong kind is one line (size="32" was "'>' not supported ...")
    for kw, needle in (({"size": "32"}, "size must be an integer >= 1 (pixels) or None, got '32'"),
                       ({"channels": 2}, "channels must be 1, 3 or None (as stored), got 2")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            load_image(tmp_path / "a.png", **kw)


def test_folder_reading_and_errors(tmp_path):
    for i in range(3):
        save_image(torch.zeros(1, 1, 8, 8) + i / 3, tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["img0.png", "img1.png", "img2.png"]
    assert load_folder(tmp_path, size=4).shape == (3, 1, 4, 4)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_images_as_they_are_meant_to_be_seen(tmp_path, caplog):
    """Own images a user brings (audit 2026-12-05): a phone photo's EXIF orientation is applied
    (was solved sideways), a 1-bit image is 0/1 (was all black), grey + alpha is composited (was
    skipped), a float TIFF outside [0, 1] is refused (was clipped to white), 12-bit data in a
    16-bit file is said."""
    import numpy as np
    from PIL import Image, ImageOps

    from ipsolve.io.images import image_channels, image_size

    rgb = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        im = Image.fromarray(rgb)
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(tmp_path / f"o{orientation}.jpg", exif=exif, quality=100)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"o{orientation}.jpg")))
        x = load_image(tmp_path / f"o{orientation}.jpg")
        assert (((x[0].permute(1, 2, 0) + 1) * 127.5).round().numpy() == shown).all(), orientation
        assert image_size(tmp_path / f"o{orientation}.jpg") == shown.shape[:2]
    bits = np.zeros((8, 8), bool)
    bits[:, :4] = True
    Image.fromarray(bits).save(tmp_path / "mask.png")
    assert load_image(tmp_path / "mask.png")[0, 0].tolist() == [[1.0] * 4 + [-1.0] * 4] * 8
    Image.fromarray(np.dstack([np.full((16, 16), 255, np.uint8), np.full((16, 16), 0, np.uint8)]), "LA").save(tmp_path / "la.png")
    import ipsolve.io.images as images

    images._TRANSPARENCY_SAID.clear()
    with caplog.at_level("WARNING", logger="ipsolve"):
        assert load_image(tmp_path / "la.png").shape == (1, 1, 16, 16)  # transparent: white
        load_image(tmp_path / "la.png")
    assert caplog.text.count("la.png has transparent pixels (alpha down to 0.00): composited on white") == 1
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert image_channels(tmp_path / "p.png") == 3 and load_image(tmp_path / "p.png").shape[1] == 3
    Image.fromarray(np.full((4, 4), 409.0, np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f.tif holds floating-point values in \[409, 409\]"):
        load_image(tmp_path / "f.tif")
    Image.fromarray(np.where(np.eye(4) > 0, np.nan, 0.5).astype(np.float32), "F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"nan.tif holds 4 NaN or inf value\(s\); expected finite \[0, 1\] intensities"):
        load_image(tmp_path / "nan.tif")  # (it was told to rescale its range: audit 2026-12-07)
    Image.fromarray(np.full((4, 4), 4000, np.uint16)).save(tmp_path / "twelve.png")
    with caplog.at_level("WARNING", logger="ipsolve"):
        load_image(tmp_path / "twelve.png")
    assert "12-bit data?" in caplog.text


def test_psnr_ssim_equal_scikit_image():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    x = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(-1, 1)
    a, b = ((x + 1) / 2).numpy(), ((ref + 1) / 2).numpy()
    for i in range(2):
        assert float(metrics.psnr(x, ref)[i]) == pytest.approx(peak_signal_noise_ratio(b[i], a[i], data_range=1))
        assert float(metrics.ssim(x, ref)[i]) == pytest.approx(
            structural_similarity(b[i], a[i], data_range=1, channel_axis=0))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x, ref[:1])


def test_lpips_unavailable_offline_returns_none_and_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(metrics, "_not_fetched", {})
    metrics._lpips_models.clear()
    metrics._warned.clear()
    x = torch.zeros(1, 3, 32, 32)
    with caplog.at_level("WARNING", logger="ipsolve"), warnings.catch_warnings():
        warnings.simplefilter("error")  # a log line, not a Python warning (which prints a source line)
        assert metrics.lpips(x, x) is None
        assert metrics.lpips(x, x) is None
    lines = [r.getMessage() for r in caplog.records if "LPIPS" in r.getMessage()]
    assert len(lines) == 1 and "alexnet-owt-7be5be79.pth" in lines[0] and "checkpoints" in lines[0]  # once
    with pytest.raises(ValueError, match="net"):
        metrics.lpips(x, x, net="squeezenet")


def test_lpips_backbone_is_downloaded_once_where_allowed(tmp_path, monkeypatch):
    """A missing backbone is downloaded into the hub cache (hash-checked) as lpips itself would — it was
    only looked for, so LPIPS was n/a on every run with a network too; tried once per process, not
    with HF_HUB_OFFLINE=1, and a failed download is named in the notice."""
    import urllib.error
    from pathlib import Path

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def no_network(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(metrics, "_not_fetched", {})
    assert not metrics.lpips_available("alex") and not metrics.lpips_available("alex")
    assert calls == [("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79")]  # once
    assert "(could not be downloaded from https://download.pytorch.org/models/alexnet-owt-7be5be79.pth: Name or service " \
           "not known)" in metrics.lpips_unavailable_message("alex")

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(b"weights")  # (what is loaded from the cache: test_lpips_with_backbone_in_cache)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not metrics.lpips_available("vgg") and len(calls) == 1  # offline: not tried
    assert "(HF_HUB_OFFLINE=1: not downloaded)" in metrics.lpips_unavailable_message("vgg")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    metrics._not_fetched.clear()
    assert metrics.lpips_available("vgg") and calls[-1] == ("https://download.pytorch.org/models/vgg16-397923af.pth",
                                                            "397923af")
    assert (tmp_path / "checkpoints" / "vgg16-397923af.pth").is_file()


def test_lpips_with_backbone_in_cache(tmp_path, monkeypatch):
    """With a backbone file in the hub cache, LPIPS is computed by the lpips package (here with
    a randomly initialised AlexNet saved as that file: it proves the code path, not the values)."""
    tv = pytest.importorskip("torchvision")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    torch.save(tv.models.alexnet().state_dict(), tmp_path / "checkpoints" / metrics.LPIPS_BACKBONES["alex"])
    metrics._lpips_models.clear()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    d = metrics.lpips(x, x.flip(-1))
    assert d is not None and d.shape == (2,) and torch.isfinite(d).all()
    assert float(metrics.lpips(x, x).abs().max()) < 1e-6
    metrics._lpips_models.clear()


def test_npy_arrays_images_and_measurement_folders(tmp_path):
    """A .npy holds exact values; a picture with a .npy of the same name beside it (a run's
    measurement/ folder) is left out for the array."""
    import numpy as np

    from ipsolve.io import load_array

    x = torch.rand(1, 1, 8, 8) * 2 - 1
    np.save(tmp_path / "a.npy", x[0].numpy())
    save_image(x, tmp_path / "a.png")
    save_image(x, tmp_path / "b.png")
    assert [p.name for p in list_images(tmp_path)] == ["a.npy", "b.png"]
    assert torch.allclose(load_image(tmp_path / "a.npy"), x, atol=1e-6)
    np.save(tmp_path / "big.npy", np.full((8, 8), 3.0))
    with pytest.raises(ValueError, match="outside \\[-1, 1\\]"):
        load_image(tmp_path / "big.npy")
    assert load_array(tmp_path / "big.npy").shape == (1, 1, 8, 8)  # a measurement: any values
    np.save(tmp_path / "c.npy", np.zeros((8, 8), dtype=np.complex64))
    with pytest.raises(ValueError, match="expected real numbers"):
        load_array(tmp_path / "c.npy")


def test_newcomers_inputs_to_metrics_and_image_files(tmp_path):
    """(audit 2026-12-07) [0, 255] or uint8 images scored as if on [-1, 1] came out 20 dB off unsaid; a
    numpy array and a 5-px SSIM were raw library errors; ``save_image`` to ``.npy`` wrote a TIFF under
    that name; a channels-last ``.npy`` was read as 32 channels of 3-px images."""
    import numpy as np

    x = torch.linspace(-1, 1, 2 * 32 * 32).reshape(2, 1, 32, 32)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    with pytest.raises(ValueError, match=r"ref has values up to 255: metrics take images on \[-1, 1\] \(from \[0, 255\]"):
        metrics.psnr((noisy + 1) * 127.5, (x + 1) * 127.5)
    with pytest.raises(TypeError, match="has dtype torch.uint8"):
        metrics.psnr(((noisy + 1) * 127.5).to(torch.uint8), ((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(TypeError, match="x is a ndarray"):
        metrics.psnr(noisy.numpy(), x)
    with pytest.raises(ValueError, match="SSIM needs images of at least 7×7 pixels"):
        metrics.ssim(noisy[..., :5, :5], x[..., :5, :5])
    metrics.psnr(noisy * 1.2, x)  # a reconstruction beyond [-1, 1] is scored clamped, as shown
    save_image(x[:1], tmp_path / "exact.npy")
    assert np.load(tmp_path / "exact.npy").shape == (1, 32, 32)
    torch.testing.assert_close(load_image(tmp_path / "exact.npy"), x[:1], atol=1e-6, rtol=0)  # float, not 8-bit
    np.save(tmp_path / "hwc.npy", np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"channels last \(H, W, C\); ipsolve's arrays are \(C, H, W\)"):
        load_image(tmp_path / "hwc.npy")


def test_cmyk_wide_integer_and_multi_page_files(tmp_path, caplog):
    """A CMYK JPEG was read as RGBA — its black channel taken for alpha — and came out white; an int32
    TIFF of 0…25500 was divided by 255 and clipped to white, scored and accepted; a multi-page TIFF gave
    its first page silently (an audit, 2026-12-07).  Now: CMYK as Pillow's RGB, the wide integers refused
    in one line, the pages said; a .npy's channels come from its header (its conversion is reported)."""
    import logging

    import numpy as np
    import tifffile
    from PIL import Image
    from skimage import data

    from ipsolve.io import load_image
    from ipsolve.io.images import image_channels

    rgb = data.astronaut()[::8, ::8]
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")  # (lossless: the same pixels as the PNG)
    assert torch.allclose(load_image(tmp_path / "cmyk.tif"), load_image(tmp_path / "rgb.png"), atol=2 / 255)
    assert image_channels(tmp_path / "cmyk.tif") == 3
    tifffile.imwrite(tmp_path / "wide.tif", data.camera()[::8, ::8].astype(np.int32) * 100)
    with pytest.raises(ValueError, match=r"wide.tif holds int32 values from \d+ to 25\d00; ipsolve reads 8-bit"):
        load_image(tmp_path / "wide.tif")
    tifffile.imwrite(tmp_path / "narrow.tif", data.camera()[::8, ::8].astype(np.int32))  # 8-bit values, wider type
    assert torch.allclose(load_image(tmp_path / "narrow.tif"), torch.from_numpy(data.camera()[::8, ::8] / 127.5 - 1)
                          .float()[None, None], atol=1e-6)
    page = Image.fromarray(data.camera()[::8, ::8])
    page.save(tmp_path / "pages.tif", save_all=True, append_images=[page, page])
    with caplog.at_level(logging.WARNING, logger="ipsolve"):
        assert load_image(tmp_path / "pages.tif").shape == (1, 1, 64, 64)
    assert "pages.tif holds 3 pages (a multi-page TIFF): only the first is read" in caplog.text
    np.save(tmp_path / "chw.npy", np.zeros((3, 8, 8), np.float32))
    np.save(tmp_path / "hw.npy", np.zeros((8, 8), np.float32))
    assert image_channels(tmp_path / "chw.npy") == 3 and image_channels(tmp_path / "hw.npy") == 1
