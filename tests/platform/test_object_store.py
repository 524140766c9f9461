"""The artifact store on an object store: an S3-compatible server (moto's) on 127.0.0.1, reached
over HTTP by s3fs, with two local caches standing in for two machines that share the data."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

pytest.importorskip("s3fs", reason="the object-store tests need s3fs and moto: pip install -e '.[dev]'")
pytest.importorskip("moto", reason="the object-store tests need s3fs and moto: pip install -e '.[dev]'")

from synthfactory.assets.checks import ASSET_CHECKS  # noqa: E402
from synthfactory.automation import all_shards_tags  # noqa: E402
from synthfactory.definitions import build_definitions  # noqa: E402
from synthfactory.ops.storage.atomic import sha256_file  # noqa: E402
from synthfactory.ops.storage.shards import finished_shards  # noqa: E402
from synthfactory.params import parse_params  # noqa: E402
from synthfactory.planning import materialize_plan  # noqa: E402
from synthfactory.resources.store import ArtifactStore  # noqa: E402
from tests.support import tiny_params  # noqa: E402

BUCKET = "synthfactory-test"
# moto accepts any credentials; real ones come from the environment, not from params.yaml.
CREDENTIALS = {"key": "testing", "secret": "testing"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1:<free port>, with one bucket."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto server did not start: {log.name}") from None
                time.sleep(0.3)
        import s3fs

        s3fs.S3FileSystem(endpoint_url=endpoint, **CREDENTIALS).mkdir(BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _store(endpoint: str, prefix: str, cache: Path) -> ArtifactStore:
    return ArtifactStore(root=f"s3://{BUCKET}/{prefix}", cache=str(cache),
                         storage_options={"endpoint_url": endpoint, **CREDENTIALS})


def _objects(endpoint: str, prefix: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, **CREDENTIALS)
    return sorted(path.split(f"{BUCKET}/{prefix}/", 1)[1] for path in fs.find(f"{BUCKET}/{prefix}"))


def test_units_travel_between_two_caches(s3_endpoint: str, tmp_path: Path) -> None:
    writer = _store(s3_endpoint, "units", tmp_path / "machine-a")
    reader = _store(s3_endpoint, "units", tmp_path / "machine-b")
    with pytest.raises(FileNotFoundError, match="materialize the asset 'model' first .*s3://"):
        reader.require("model")

    with writer.publish_dir("model") as directory:
        (directory / "weights.bin").write_bytes(b"v1")
        (directory / "old.txt").write_text("dropped in v2")
    with writer.publish_file("prompts", "prompts.jsonl") as temp:
        temp.write_text('{"class": 0}\n')
    assert _objects(s3_endpoint, "units") == [
        "_commits/model.json", "_commits/prompts/prompts.jsonl.json",
        "model/old.txt", "model/weights.bin", "prompts/prompts.jsonl"]
    commit = json.loads(_read(s3_endpoint, "units/_commits/model.json"))
    assert commit["files"]["weights.bin"]["sha256"] == hashlib.sha256(b"v1").hexdigest()

    # A file inside a directory unit brings the whole unit; the file unit comes alone.
    assert reader.require("model", "weights.bin").read_bytes() == b"v1"
    assert reader.require("prompts", "prompts.jsonl").read_text() == '{"class": 0}\n'

    # A new version replaces the cached one as a whole (old.txt is gone on both sides).
    with writer.publish_dir("model") as directory:
        (directory / "weights.bin").write_bytes(b"v2")
    assert "model/old.txt" not in _objects(s3_endpoint, "units")
    assert reader.require("model", "weights.bin").read_bytes() == b"v2"
    assert sorted(p.name for p in reader.path("model").iterdir()) == ["weights.bin"]

    # A partitioned asset: one unit per file; a retracted unit leaves the readers' caches.
    for name in ("part-0", "part-1"):
        with writer.publish_file("parts", name) as temp:
            temp.write_text(name)
    assert sorted(p.name for p in reader.require("parts").iterdir()) == ["part-0", "part-1"]
    writer.retract("parts", "part-1")
    assert sorted(p.name for p in reader.require("parts").iterdir()) == ["part-0"]

    # Bytes that are not the committed ones (changed mid-read, edited by hand) fail loudly.
    _write(s3_endpoint, "units/model/weights.bin", b"tampered")
    (tmp_path / "machine-c").mkdir()
    with pytest.raises(RuntimeError, match="does not match its commit"):
        _store(s3_endpoint, "units", tmp_path / "machine-c").require("model")
    assert not (tmp_path / "machine-c" / "model").exists()  # nothing half-downloaded


def test_local_root_never_touches_a_mirror(tmp_path: Path) -> None:
    store = ArtifactStore(root=str(tmp_path / "data"))
    assert not store.is_remote and store.path("a") == tmp_path / "data" / "a"
    store.push("a")  # a no-op for a local root
    with pytest.raises(ValueError, match="is a local path"):
        store.mirror()
    with pytest.raises(ValueError, match="store.root 'nosuchfs://bucket/x': cannot open"):
        ArtifactStore(root="nosuchfs://bucket/x", cache=str(tmp_path / "cache")).require("prompts")


def test_two_machines_share_the_graph_through_the_object_store(s3_endpoint: str,
                                                               tmp_path: Path) -> None:
    """Machine A makes the upstream assets and every shard; machine B, with an empty cache,
    runs the judge, the shard scores and the filter from what the object store holds."""
    options = {"endpoint_url": s3_endpoint, **CREDENTIALS}

    def config(machine: str) -> object:
        raw = tiny_params(tmp_path / machine)
        raw["store"] = {"root": f"s3://{BUCKET}/graph", "cache": str(tmp_path / machine / "data"),
                        "storage_options": options}
        return parse_params(raw)

    first, second = config("a"), config("b")
    defs = build_definitions(first)
    keys = defs.get_assets_def("synthetic_shards").partitions_def.get_partition_keys()
    result = dg.materialize(list(defs.assets), resources=defs.resources, tags=all_shards_tags(keys),
                            selection=["real_images", "prompts", "generator", "synthetic_shards"])
    assert result.success
    objects = _objects(s3_endpoint, "graph")
    assert {f"synthetic_shards/shard-{key}.{ext}" for key in keys for ext in ("tar", "json")} <= set(
        objects)
    assert "_commits/generator.json" in objects and "_commits/real_images.json" in objects

    defs_b = build_definitions(second)
    # With the checks: the shard integrity check reads the downloaded shards of machine B.
    result = dg.materialize([*defs_b.assets, *ASSET_CHECKS], resources=defs_b.resources,
                            selection=dg.AssetSelection.assets("judge", "shard_scores",
                                                               "filtered_set").without_checks()
                            | dg.AssetSelection.checks_for_assets("synthetic_shards", "filtered_set"),
                            tags=all_shards_tags(keys))
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {
        "judge", "shard_scores", "filtered_set"}
    assert result.success
    shards_a = finished_shards(tmp_path / "a" / "data" / "synthetic_shards")
    shards_b = finished_shards(tmp_path / "b" / "data" / "synthetic_shards")
    assert [p.name for p in shards_b] == [p.name for p in shards_a] and len(shards_b) == len(keys)
    assert [sha256_file(p) for p in shards_b] == [sha256_file(p) for p in shards_a]
    objects = _objects(s3_endpoint, "graph")
    assert "_commits/filtered_set.json" in objects
    assert {f"_commits/shard_scores/scores-{key}.safetensors.json" for key in keys} <= set(objects)
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks and all(checks.values()), checks


def test_two_machines_make_two_cells_and_a_third_reads_both(s3_endpoint: str,
                                                          tmp_path: Path) -> None:
    """Guards "runs of different cells never collide": machines A and B each make one cell of the
    table into the same store (as two GPU pods would); each cell is its own unit, and machine C's
    empty cache gets both, byte-identical. A commit of the whole directory (the layout before
    cells were partitions), which would be served instead of the cells, is withdrawn."""
    options = {"endpoint_url": s3_endpoint, **CREDENTIALS}
    table = {"methods": ["random", "dm"], "ipcs": [1], "sources": ["real"],
             "dm": {"iterations": 3, "batch_real": 16}}

    def defs(machine: str) -> dg.Definitions:
        raw = tiny_params(tmp_path / machine, distilled_set=table)
        raw["store"] = {"root": f"s3://{BUCKET}/cells", "storage_options": options,
                        "cache": str(tmp_path / machine / "data")}
        return build_definitions(parse_params(raw))

    assert materialize_plan(defs("a"), ["real_images", "distilled_set"],
                            "random-ipc1-real").success
    # An old whole-directory commit, as a store filled before the cells were partitions has.
    old = b"an old unpartitioned distilled set"
    _write(s3_endpoint, "cells/distilled_set/old.txt", old)
    _write(s3_endpoint, "cells/_commits/distilled_set.json", json.dumps({
        "unit": "distilled_set", "kind": "dir", "files": {"old.txt": {
            "sha256": hashlib.sha256(old).hexdigest(), "size": len(old)}}}).encode())
    assert materialize_plan(defs("b"), ["distilled_set"], "dm-ipc1-real").success
    objects = set(_objects(s3_endpoint, "cells"))
    assert {"_commits/distilled_set/cells/random-ipc1-real.json",
            "_commits/distilled_set/cells/dm-ipc1-real.json",
            "_commits/distilled_set/summary.json.json"} <= objects
    assert "_commits/distilled_set.json" not in objects

    reader = _store(s3_endpoint, "cells", tmp_path / "c" / "data")
    cells = reader.require("distilled_set") / "cells"
    assert sorted(p.name for p in cells.iterdir()) == ["dm-ipc1-real", "random-ipc1-real"]
    for machine, cell in (("a", "random-ipc1-real"), ("b", "dm-ipc1-real")):
        made = tmp_path / machine / "data" / "distilled_set" / "cells" / cell
        assert {p.name: sha256_file(p) for p in (cells / cell).iterdir()} == {
            p.name: sha256_file(p) for p in made.iterdir()}
    assert not (cells.parent / "old.txt").exists()


def _read(endpoint: str, path: str) -> bytes:
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True,
                             **CREDENTIALS).cat_file(f"{BUCKET}/{path}")


def _write(endpoint: str, path: str, data: bytes) -> None:
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True,
                      **CREDENTIALS).pipe_file(f"{BUCKET}/{path}", data)


# Two writers of one unit: each process pushes its own version of a directory unit several
# times, with every upload slowed down so that the pushes overlap.
WRITER = r"""
import json, sys, time
from pathlib import Path
from synthfactory.resources.store import ArtifactStore
endpoint, prefix, cache, tag, rounds = sys.argv[1:6]
store = ArtifactStore(root=f"s3://synthfactory-test/{prefix}", cache=cache,
                      storage_options={"endpoint_url": endpoint, "key": "testing",
                                       "secret": "testing"})
mirror = store.mirror()
put = mirror.fs.put_file
def slow_put(*args, **kwargs):
    time.sleep(0.05)  # a slow network: the other writer's pushes get in between
    return put(*args, **kwargs)
mirror.fs.put_file = slow_put
log = []
for round_ in range(int(rounds)):
    unit = Path(cache) / "eval_report"
    unit.mkdir(parents=True, exist_ok=True)
    for name in "abcde":
        (unit / f"{name}.txt").write_text(f"{tag}-{round_}")
    mirror.push("eval_report")
    with store.lock("shard_scores", "00001"):  # the partition lease of shard_scores
        start = time.time()
        time.sleep(0.2)
        log.append((start, time.time()))
print(json.dumps(log))
"""


def test_two_processes_pushing_one_unit_take_turns(s3_endpoint: str, tmp_path: Path) -> None:
    """Each push holds the unit's lease: the final commit lists exactly the files under it (one
    writer's version), and two holders of a partition's lease never overlap. Without the lease
    the same two processes leave a commit over a mix of both writers' files (sha256 mismatch)."""
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, s3_endpoint, "race",
                                 str(tmp_path / f"cache-{tag}"), tag, "4"],
                                stdout=subprocess.PIPE, text=True) for tag in ("A", "B")]
    logs = [json.loads(writer.communicate(timeout=300)[0]) for writer in writers]
    assert all(writer.returncode == 0 for writer in writers)
    reader = _store(s3_endpoint, "race", tmp_path / "reader")
    path = reader.require("eval_report")  # checks every file against the commit
    contents = {p.read_text() for p in path.glob("*.txt")}
    assert len(contents) == 1 and contents.pop() in {"A-3", "B-3"}
    intervals = sorted(interval for log in logs for interval in log)
    assert len(intervals) == 8
    assert all(end <= next_start for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False))
    assert not _objects(s3_endpoint, "race/_locks")  # every lease was released


def test_two_processes_racing_for_an_s3_lease_never_both_hold_it(s3_endpoint: str) -> None:
    """The lease on an object store is a conditional create (If-None-Match: *): in 100 trials of
    two processes trying at the same instant, exactly one holds it each time."""
    from tests.ops.storage.lease_race import race

    spec = {"protocol": "s3", "endpoint_url": s3_endpoint, **CREDENTIALS}
    holders = race(spec, f"{BUCKET}/lease-race/_locks/unit.json", trials=100)
    print(f"S3 lease race: holders per trial {dict(sorted((n, holders.count(n)) for n in set(holders)))}")
    assert holders == [1] * 100, f"trials with two holders: {[i for i, n in enumerate(holders) if n > 1]}"
    assert not _objects(s3_endpoint, "lease-race/_locks")  # released every time
