"""The whole graph on the pretrained path: a tiny Stable Diffusion pipeline generates, a tiny CLIP
judges, and the user's real images come from WebDataset shards — all through `dg.materialize`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfactory.definitions import build_definitions
from synthfactory.ops.curation.judges import load_judge
from synthfactory.ops.evaluation.arms import read_filter_records
from synthfactory.ops.storage.shards import finished_shards, read_samples
from synthfactory.params import parse_params
from synthfactory.planning import PlanResult, materialize_plan
from tests.support import tiny_params, write_labelled_webdataset

CLASSES = ["red_apple", "green_leaf", "blue_sky"]


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path,
                   tiny_clip_dir: Path) -> tuple[Path, PlanResult]:
    root = tmp_path_factory.mktemp("pretrained")
    shards = write_labelled_webdataset(root / "user-shards", CLASSES, 8, size=40)
    params = tiny_params(
        root,
        real_images={"source": "webdataset", "root": str(shards), "resolution": 16,
                     "test_fraction": 0.25},
        prompts={"strategy": "templates", "templates": ["a photo of a {name}", "a {name}"],
                 "images_per_class": 4, "guidance": [1.0], "guidance_range": [1.0, 4.0],
                 "negative_prompt": "blurry"},
        generator={"backend": "diffusers", "model": str(tiny_sd_dir), "local_files_only": True},
        # Rendered at 24×24 and fitted to the real images' 16×16.
        synthetic_shards={"shard_size": 6, "steps": 2, "batch_size": 4, "scheduler": "euler",
                          "height": 24, "width": 24},
        judge={"backend": "clip", "model": str(tiny_clip_dir), "local_files_only": True,
               "templates": ["a photo of a {name}."], "batch_size": 8},
        filtered_set={"threshold": None, "top_fraction": 0.75, "clip_score": -1.0,
                      "dedup_threshold": 0.999},
        distilled_set={"methods": ["dm"], "ipcs": [1], "eval_models": 1,
                       "dm": {"features": "judge", "iterations": 3, "batch_real": 8}},
        # With a CLIP judge: its zero-shot reference row, and retrieval by the class's text.
        classifiers={"arms": ["real", "zero_shot", "retrieved", "synthetic", "filtered",
                              "distilled", "mixed"]},
    )
    params["generator"].pop("ddpm")
    result = materialize_plan(build_definitions(parse_params(params)))  # every asset, all runs
    assert result.success
    return root, result


def test_every_asset_materializes_and_the_report_names_the_models(
        pretrained_run: tuple[Path, PlanResult], tiny_sd_dir: Path,
        tiny_clip_dir: Path) -> None:
    root, result = pretrained_run
    metrics = json.loads((root / "reports" / "eval" / "metrics.json").read_text())
    assert metrics["classes"] == CLASSES
    # The tiny random CLIP sends every pool image to one class: the retrieved set lacks the
    # other two, so that arm is reported as not built (its classifier could not predict them).
    assert sorted(metrics["arms"]) == ["distilled", "filtered", "mixed", "real", "synthetic",
                                       "zero_shot"]
    assert metrics["missing_arms"]["retrieved"].startswith("the retrieved arm has no image of")
    zero_shot = metrics["arms"]["zero_shot"]
    assert zero_shot["n_train"] == 0 and zero_shot["seeds"] == 1 and zero_shot["accuracy_std"] == 0
    assert 0.0 <= zero_shot["accuracy_mean"] <= 1.0 and "val_accuracy_mean" in zero_shot
    retrieval = json.loads((root / "data" / "retrieved_set" / "summary.json").read_text())
    assert retrieval["query"] == "CLIP text embedding of the class" and retrieval["per_class"] == 4
    assert sum(retrieval["shortfall"].values()) == 2 * 4  # two classes got no pool image
    assert metrics["arms"]["synthetic"]["n_train"] == 12
    assert metrics["arms"]["distilled"]["n_train"] == 3
    assert metrics["judge"]["kind"] == "clip"
    assert metrics["lineage"]["generator_source"] == str(tiny_sd_dir)
    events = {e.asset_key.to_user_string(): e.materialization.metadata
              for e in result.get_asset_materialization_events()}
    assert events["generator"]["pipeline_class"].value == "StableDiffusionPipeline"
    assert events["judge"]["kind"].value == "clip"
    assert events["judge"]["source"].value == str(tiny_clip_dir)
    assert events["synthetic_shards"]["bad_images"].value == {}


def test_shards_hold_fitted_images_with_their_prompts(
        pretrained_run: tuple[Path, PlanResult]) -> None:
    root, _ = pretrained_run
    shards = finished_shards(root / "data" / "synthetic_shards")
    assert [p.name for p in shards] == ["shard-00000.tar", "shard-00001.tar"]
    samples = list(read_samples(shards))
    assert len(samples) == 12 and {s.image.shape for s in samples} == {(16, 16, 3)}
    first = samples[0].meta
    assert first["generated_shape"] == [24, 24, 3]
    assert first["prompt"]["text"] == "a photo of a red apple"
    assert first["sampler"]["scheduler"] == "euler"
    assert len({s.meta["prompt"]["guidance"] for s in samples}) > 1  # drawn per image


def test_filtered_set_records_clip_scores_and_zero_shot_margins(
        pretrained_run: tuple[Path, PlanResult]) -> None:
    root, _ = pretrained_run
    records = read_filter_records(root / "data" / "filtered_set")
    assert len(records) == 12
    # Each recorded CLIP score is the cosine of that sample's image and its own prompt's text,
    # recomputed here from the judge's embeddings (a mix-up of keys or prompts would show).
    judge = load_judge(root / "data" / "judge", torch.device("cpu"))
    samples = {s.key: s for s in read_samples(finished_shards(root / "data" / "synthetic_shards"))}
    images = np.stack([samples[r["key"]].image for r in records])
    texts = [samples[r["key"]].meta["prompt"]["text"] for r in records]
    cosines = np.sum(judge.embed(images) * judge.embed_texts(texts), axis=1)
    assert [r["clip_score"] for r in records] == pytest.approx(cosines.tolist(), abs=1e-5)
    # The zero-shot margin is positive exactly when the prompt's class is the prediction.
    assert all((r["margin"] > 0) == (r["predicted"] == r["label"]) for r in records)
    assert all(r["margin"] <= r["confidence"] for r in records)
    assert sum(r["keep"] for r in records) == 9  # top 75% of each class of 4
    summary = json.loads((root / "data" / "distilled_set" / "summary.json").read_text())
    assert summary["n_images"] == 3
    cell = json.loads((root / "data" / "distilled_set" / "cells" / "dm-ipc1-filtered"
                       / "cell.json").read_text())
    assert cell["settings"]["features"] == "judge"
