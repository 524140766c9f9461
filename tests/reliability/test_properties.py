"""Property tests (hypothesis): the shard round trip and params validation on generated inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synthfactory.ops.storage.shards import Sample, read_samples, read_shard_info, verify_shard, write_shard
from synthfactory.params import ParamsError, parse_params

# Any printable character but the two WebDataset and tar give a meaning to.
KEY_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="./\\")
keys = st.text(KEY_CHARS, min_size=1, max_size=40).filter(lambda k: len(k.encode()) <= 95)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**31, 2**31) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """uint8 images of random size in the three layouts a shard accepts: H×W, H×W×1, H×W×3."""
    height = draw(st.integers(1, 24))
    width = draw(st.integers(1, 24))
    layout = draw(st.sampled_from(["grey", "grey1", "rgb"]))
    shape = {"grey": (height, width), "grey1": (height, width, 1), "rgb": (height, width, 3)}[layout]
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@st.composite
def sample_lists(draw: st.DrawFn) -> list[Sample]:
    chosen = draw(st.lists(keys, min_size=0, max_size=6, unique=True))
    return [Sample(key=key, image=draw(images()), label=draw(st.integers(0, 10**6)),
                   meta=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4)))
            for key in chosen]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(samples=sample_lists())
def test_shard_round_trip_keeps_every_key_pixel_label_and_meta(samples: list[Sample]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "shard.tar"
        info = write_shard(path, samples)
        assert info.count == len(samples) and info.keys == [s.key for s in samples]
        assert read_shard_info(path) == info and verify_shard(path) == []
        back = list(read_samples([path]))
        assert [s.key for s in back] == [s.key for s in samples]
        for written, read in zip(samples, back, strict=True):
            expected = written.image[:, :, 0] if written.image.ndim == 3 and \
                written.image.shape[2] == 1 else written.image
            np.testing.assert_array_equal(read.image, expected)
            assert read.label == written.label and read.meta == written.meta
        # Same samples, same bytes: a rerun of a shard reproduces it exactly.
        again = write_shard(Path(directory) / "again.tar", samples)
        assert again.sha256 == info.sha256


@settings(max_examples=40, deadline=None)
@given(key=st.text(min_size=0, max_size=8).filter(lambda k: not k or "." in k or "/" in k))
def test_keys_webdataset_would_misread_are_refused(key: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "shard.tar"
        with pytest.raises(ValueError, match="sample key"):
            write_shard(path, [Sample(key=key, image=np.zeros((2, 2), np.uint8), label=0)])
        assert list(Path(directory).iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(key=st.text(KEY_CHARS, min_size=20, max_size=120))
def test_keys_too_long_for_a_tar_name_are_refused_by_name(key: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "shard.tar"
        sample = Sample(key=key, image=np.zeros((2, 2), np.uint8), label=0)
        if len(key.encode()) <= 95:
            assert write_shard(path, [sample]).keys == [key]
        else:
            with pytest.raises(ValueError, match="too long for a tar member name"):
                write_shard(path, [sample])
            assert list(Path(directory).iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(samples=sample_lists().filter(bool), position=st.floats(0, 1, exclude_max=True),
       flip=st.integers(1, 255))
def test_any_corrupted_byte_of_a_finished_shard_is_detected(samples: list[Sample], position: float,
                                                            flip: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "shard.tar"
        write_shard(path, samples)
        data = bytearray(path.read_bytes())
        data[int(position * len(data))] ^= flip
        path.write_bytes(bytes(data))
        problems = verify_shard(path)
        assert len(problems) == 1 and "sha256" in problems[0] and "shard.tar" in problems[0]


# Every count of params.yaml, with the rule it follows: (section, key, smallest valid value).
COUNTS = [("prompts", "images_per_class", 1), ("synthetic_shards", "shard_size", 1),
          ("synthetic_shards", "steps", 1), ("synthetic_shards", "batch_size", 1),
          ("distilled_set", "repeats", 1), ("distilled_set", "eval_models", 1),
          ("classifiers", "n_seeds", 1), ("classifiers", "epochs", 1), ("judge", "epochs", 1),
          ("real_images", "shard_size", 1), ("real_images", "resolution", 4)]


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(COUNTS), value=st.integers(-10**6, 10**6))
def test_counts_are_accepted_exactly_when_valid(field: tuple[str, str, int], value: int) -> None:
    section, key, smallest = field
    raw: dict[str, Any] = {section: {key: value}}
    # Keep the rule across sections (ipcs ≤ what images_per_class can leave a class) out of the
    # way: test_ipc_is_accepted_exactly_when_the_prompts_can_cover_it checks it.
    if key == "images_per_class":
        raw["distilled_set"] = {"ipcs": [1]}
    if value >= smallest and not (key == "resolution" and value > 1024):
        config = parse_params(raw)
        assert getattr(getattr(config.params, section), key) == value
    else:
        with pytest.raises(ParamsError) as error:
            parse_params(raw)
        message = str(error.value)
        assert f"{section}.{key} = {value}" in message and "\n" not in message


@settings(max_examples=40, deadline=None)
@given(images_per_class=st.integers(1, 400), ipc=st.integers(1, 400),
       top_fraction=st.none() | st.floats(0.01, 1.0), confidence=st.booleans())
def test_ipc_is_accepted_exactly_when_the_prompts_can_cover_it(
        images_per_class: int, ipc: int, top_fraction: float | None, confidence: bool) -> None:
    """The filter keeps at most all of a class's images (or max(1, round(n × top_fraction)) of
    them when the confidence filter keeps a top fraction): more than that per class is refused."""
    raw = {"prompts": {"images_per_class": images_per_class}, "distilled_set": {"ipcs": [ipc]},
           "filtered_set": {"top_fraction": top_fraction, "confidence": confidence}}
    fraction = top_fraction if confidence else None
    kept = images_per_class if fraction is None else max(1, round(images_per_class * fraction))
    if ipc <= kept:
        parse_params(raw)
        return
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    message = str(error.value)
    assert f"prompts.images_per_class = {images_per_class}" in message and "\n" not in message
    assert f"distilled_set.ipcs {ipc}" in message
    needed = int(message.split("to at least ")[1].split(" ")[0])
    # The fix it names works, and is the smallest that does.
    assert parse_params({**raw, "prompts": {"images_per_class": needed}})
    with pytest.raises(ParamsError):
        parse_params({**raw, "prompts": {"images_per_class": needed - 1}})


# pydantic's lax mode reads "+1", " 2" and "-3" as integers: signed digit strings are not wrong.
WRONG_TYPES = st.one_of(st.text(min_size=1, max_size=5).filter(lambda t: not t.strip().lstrip("+-")
                                                               .isdigit()),
                        st.lists(st.integers(), min_size=1, max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2))


@settings(max_examples=80, deadline=None)
@given(field=st.sampled_from(COUNTS), value=WRONG_TYPES)
def test_wrong_types_name_the_key(field: tuple[str, str, int], value: Any) -> None:
    section, key, _ = field
    with pytest.raises(ParamsError) as error:
        parse_params({section: {key: value}})
    message = str(error.value)
    assert f"{section}.{key}" in message and "\n" not in message


SECTIONS = ["real_images", "prompts", "generator", "synthetic_shards", "judge", "filtered_set",
            "distilled_set", "classifiers", "eval_report"]


@settings(max_examples=80, deadline=None)
@given(section=st.sampled_from(SECTIONS),
       key=st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd")), min_size=1, max_size=12)
       .map(lambda k: "x_" + k))
def test_unknown_keys_are_named_in_the_error(section: str, key: str) -> None:
    with pytest.raises(ParamsError) as error:
        parse_params({section: {key: 1}})
    assert f"{section}.{key} = 1: unknown key" in str(error.value)
