"""The `synthfactory` command: materialize the graph in-process on a params file."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthfactory.ops.report import METRICS_JSON
from synthfactory.ops.report.tables import ordered_arms

if TYPE_CHECKING:  # dagster is imported when a command runs, so `--help` stays instant
    import dagster as dg

    from synthfactory.params import ProjectConfig
    from synthfactory.planning import PlanResult

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input, with a one-line message)."""
    parser = argparse.ArgumentParser(prog="synthfactory", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize assets in-process and print a summary")
    run.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    run.add_argument("--select", default="*",
                     help="Dagster asset selection, e.g. 'real_images+' or 'key:prompts' "
                          "(default: everything)")
    run.add_argument("--partitions", default=None,
                     help="KEY or FIRST...LAST of one partitions definition: shards (00001...00003),"
                          " distillation cells (dm-ipc10-real) or experts (real-expert-0); the "
                          "other partitioned assets run all their keys (default: all)")
    run.add_argument("--processes", type=int, default=1,
                     help="1 (default): every step in this process; N > 1: the multiprocess "
                          "executor, a process per step, at most N at once (GPU steps still "
                          "wait for the instance's gpu pool slot)")
    run.add_argument("--fan-out", default=None, metavar="N|auto",
                     help="spread each partition range over N GPUs at once: N concurrent runs of "
                          "contiguous sub-ranges, each step on its own GPU (auto: the GPUs this "
                          "machine or the Ray cluster has); needs --processes > 1 or "
                          "executor.kind ray")
    run.add_argument("--strict", action="store_true",
                     help="exit 1 when an arm could not be built or a non-blocking check failed "
                          "(by default the report is made from the other arms, a warning names "
                          "each missing arm and failed check, and the exit code is 0)")
    run.add_argument("--no-checks", action="store_true",
                     help="skip the asset checks (by default every run executes the checks of "
                          "what it materializes, and a failed blocking check stops what is "
                          "downstream of it)")
    run.add_argument("--max-runtime", type=float, default=None, metavar="SECONDS",
                     help="stop and fail a run that takes longer (default: executor.max_runtime_s "
                          "of the params file)")
    doctor = commands.add_parser("doctor", help="list pool slots held by runs that are no longer "
                                                "alive (finished, gone, or a dead step); --fix "
                                                "frees them")
    doctor.add_argument("--fix", action="store_true", help="free the stale slots it lists")
    sync = commands.add_parser("dvc-sync", help="write dvc.yaml (one stage per asset) from the "
                                                 "Dagster definitions")
    sync.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    sync.add_argument("--output", default="dvc.yaml", help="where to write (default dvc.yaml)")
    sync.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 when the file differs from the definitions")
    export = commands.add_parser("export", help="write a distilled cell as PNG class folders "
                                                 "or one .npz, for other tools")
    export.add_argument("asset", choices=["distilled_set"], help="what to export")
    export.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    export.add_argument("--cell", default=None,
                        help="<method>-ipc<N>-<source>, e.g. dm-ipc10-real (default: the first "
                             "cell of the params)")
    export.add_argument("--repeat", type=int, default=0, help="which repeat (default 0)")
    export.add_argument("--format", default="imagefolder", choices=["imagefolder", "npz"])
    export.add_argument("directory", help="where to write (created; must be empty if it exists)")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            return export_command(Path(args.params), args.cell, args.repeat, args.format,
                                  Path(args.directory))
        if args.command == "dvc-sync":
            return dvc_sync_command(args.params, Path(args.output), args.check)
        if args.command == "doctor":
            _use_project_instance()
            # deferred: dagster, loaded only when the command runs (`--help` stays instant)
            from synthfactory.runguard import doctor_command

            return doctor_command(_instance, args.fix)
        if args.processes < 1:
            raise ValueError(f"--processes {args.processes}: give 1 (in-process) or more")
        if args.max_runtime is not None and args.max_runtime <= 0:
            raise ValueError(f"--max-runtime {args.max_runtime}: give a positive number of seconds")
        _use_project_instance()
        return run_command(Path(args.params), args.select, args.partitions, args.processes,
                           debug=args.debug, strict=args.strict, checks=not args.no_checks,
                           max_runtime_s=args.max_runtime, fan_out=args.fan_out)
    except (ValueError, FileNotFoundError) as error:
        if args.debug:
            raise
        print(f"synthfactory: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run_command(params_path: Path, select: str, partitions: str | None, processes: int = 1,
                debug: bool = False, strict: bool = False, checks: bool = True,
                max_runtime_s: float | None = None, fan_out: str | None = None) -> int:
    """Materialize the selection; print what ran, how long it took and where outputs are.

    The selection runs as the ordered runs of `synthfactory.planning.plan_runs` (one Dagster run
    holds one partitions definition: shards, cells, experts), each printed as it starts.
    `processes` 1 runs every step in this process; more use the multiprocess executor; with
    `executor.kind: ray` every step is a Ray task. `fan_out` (N or auto) spreads each partition
    range over N concurrent runs (`synthfactory.fanout`). Returns
    0 on success, 2 when a step failed on bad input (its message printed on one line), 1 when
    it failed otherwise. Tracebacks are shown only with `debug`. Before a selection that reads
    the user's images, a preflight counts them per class (without decoding) and refuses too few.
    An arm that could not be built is a warning line (exit 0), or exit 1 with `strict`.

    With `checks` (the default) each run executes the asset checks of what it materializes; a
    failed blocking check fails its run (exit 1), and the summary names the check, its message
    and the selected assets that did not run. Every run carries a time limit (`max_runtime_s`,
    else `executor.max_runtime_s`) that `synthfactory.runguard.RunGuard` enforces, and a step
    process that dies without reporting its end has its pool slot freed.
    """
    import dagster as dg

    # deferred: these import dagster and numpy; `--help` stays instant without them
    from synthfactory.console import concise_console, failure_line, step_failures
    from synthfactory.ops.evaluation.missing import missing_arm_lines
    from synthfactory.params import load_params
    from synthfactory.planning import (execute_in_processes, execute_plan, materialize_plan,
                                       plan_runs)
    from synthfactory.runguard import RunGuard

    config = load_params(params_path)
    # Importing the definitions module builds its `defs` from the file this variable names (else
    # ./params.yaml): it must be the same file, or a run from another directory fails on a file
    # it was not asked to read.
    os.environ["SYNTHFACTORY_PARAMS"] = str(params_path.resolve())
    # deferred: importing the definitions builds `defs` from the variable set just above
    from synthfactory.definitions import build_definitions

    defs = build_definitions(config)
    graph = defs.resolve_asset_graph()
    names = sorted(k.to_user_string() for k in graph.get_all_asset_keys())
    try:
        selection = (dg.AssetSelection.from_string(select) if select != "*"
                     else dg.AssetSelection.all())
        keys = selection.resolve(graph)
    except dg.DagsterError as error:  # a typo in the selection is bad input, not a crash
        raise ValueError(f"--select {select!r}: {error}; assets are {names}") from None
    if not keys:
        raise ValueError(f"--select {select!r} matches no asset; assets are {names}")
    if dg.AssetKey("real_images") in keys:
        _preflight(config)
    if dg.AssetKey("retrieved_set") in keys and config.params.retrieval.pool is not None:
        from synthfactory.ops.data.preflight import preflight_pool  # deferred: numpy, as above

        preflight_pool(config.params.retrieval.pool)  # before any work, like the real images'
    plan = plan_runs(graph, keys, partitions)  # a bad --partitions fails here, before any run

    def announce(number: int, run: Any) -> None:
        print(f"run {number + 1}/{len(plan)}: {run.describe()}", flush=True)

    started = time.perf_counter()
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    limit = max_runtime_s if max_runtime_s is not None else config.executor.max_runtime_s
    with _instance() as instance, RunGuard(instance, limit).watch() as guard:
        if fan_out is not None or config.executor.kind == "ray":
            # deferred: the Ray executor imports ray, loaded only when it is asked for
            from synthfactory.fanout import run_fanned

            result = run_fanned(config, params_path, plan, graph, instance, run_config,
                                processes, fan_out, checks=checks, tags=guard.tags)
        elif processes == 1:
            # Dagster's own console logger with --debug, else the concise one.
            result = materialize_plan(defs, keys, partitions, instance=instance,
                                      run_config=run_config, checks=checks, raise_on_error=False,
                                      loggers=None if debug else {"console": concise_console},
                                      on_start=announce, tags=guard.tags)
        else:
            run_config["execution"] = {"config": {"multiprocess": {"max_concurrent": processes}}}
            if instance.is_ephemeral:
                raise ValueError(f"--processes {processes} needs a persistent Dagster instance: "
                                 "run from the project root (it has dagster_home/) or set "
                                 "DAGSTER_HOME")

            def execute(run: Any) -> dg.JobExecutionResult:
                return execute_in_processes(run, params_path, instance, run_config,
                                            checks=checks, tags=guard.tags)

            result = execute_plan(plan, execute, on_start=announce)
        seconds = time.perf_counter() - started
        _print_summary(result, seconds, config.store.root, config.params.eval_report.output_dir)
    blocked, warned = _print_checks(result, keys, checks)
    for run_id in guard.timed_out:
        print(f"synthfactory: error: run {run_id} was stopped at its time limit of {limit:.0f}s",
              file=sys.stderr)
    report_dir = Path(config.params.eval_report.output_dir)
    if result.success and dg.AssetKey("eval_report") in keys:
        _print_arm_table(report_dir / METRICS_JSON)
    if result.success:
        missing = _missing_arms(result, report_dir / METRICS_JSON,
                                dg.AssetKey("eval_report") in keys)
        for line in missing_arm_lines(missing):
            print(f"synthfactory: warning: {line}", file=sys.stderr)
        if strict and missing:
            print(f"synthfactory: error: --strict: {len(missing)} arm(s) not built "
                  f"({', '.join(sorted(missing))})", file=sys.stderr)
            return 1
        if strict and warned:
            print(f"synthfactory: error: --strict: {len(warned)} check(s) failed", file=sys.stderr)
            return 1
        return 0
    if blocked:  # the check's own line names it and its message; not bad input: exit 1
        return 1
    failures = step_failures(result)
    for failure in failures:
        print(f"synthfactory: error: {failure_line(failure)}", file=sys.stderr)
    return EXIT_BAD_INPUT if failures and all(f.bad_input for f in failures) else 1


def _preflight(config: ProjectConfig) -> None:
    """Count the user's images per class and split without decoding; refuse too few (exit 2)."""
    # deferred: these import numpy and PIL; `--help` stays instant without them
    from synthfactory.ops.data.preflight import preflight_counts
    from synthfactory.ops.data.real_images import list_classes

    source = config.params.real_images
    preflight_counts(source.source, source.root, source.test_root,
                     list_classes(source.source, source.root, source.class_names),
                     source.test_fraction, source.val_fraction, config.runtime.seed,
                     config.params.train_images_needed())


def _missing_arms(result: PlanResult, metrics_path: Path, reported: bool) -> dict[str, str]:
    """arm → reason for the arms not built: from the report when it ran, and from the arms'
    classifier assets (the registry's) that this run published as not built."""
    import json

    from synthfactory.ops.evaluation.arms import ARMS  # deferred: numpy; `--help` stays instant

    arm_of = {arm.classifier_asset: name for name, arm in ARMS.items() if arm.classifier_asset}
    missing: dict[str, str] = {}
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        reason = event.materialization.metadata.get("not_built_reason")
        if name in arm_of and reason is not None:
            missing[arm_of[name]] = str(reason.value)
    if reported and metrics_path.is_file():
        missing.update(json.loads(metrics_path.read_text()).get("missing_arms") or {})
    return missing


def export_command(params_path: Path, cell: str | None, repeat: int, fmt: str,
                   directory: Path) -> int:
    """Export one repeat of one distilled cell (uint8; soft labels in JSON or the npz)."""
    # deferred: these import torch, numpy and dagster; `--help` stays instant without them
    from synthfactory.ops.data.real_images import read_classes
    from synthfactory.ops.distillation.cells import parse_cell
    from synthfactory.ops.distillation.cellstore import cell_dir, read_cell, read_cell_record
    from synthfactory.ops.distillation.export import export_card, export_distilled
    from synthfactory.params import load_params

    config = load_params(params_path)
    store, distilled = config.store, config.params.distilled_set
    key = cell or f"{distilled.methods[0]}-ipc{distilled.ipcs[0]}-{distilled.sources[0]}"
    parse_cell(key)
    source = cell_dir(store.path("distilled_set"), key)
    if not source.is_dir():
        raise FileNotFoundError(f"cell {key} is not in {store.path('distilled_set')}: add it to "
                                "distilled_set.methods/ipcs/sources and materialize distilled_set")
    repeats = read_cell(source)
    if not 0 <= repeat < len(repeats):
        raise ValueError(f"--repeat {repeat}: cell {key} has repeats 0..{len(repeats) - 1}")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty: give a new or empty directory")
    chosen = repeats[repeat]
    summary = export_distilled(chosen.images, chosen.labels,
                               read_classes(store.require("real_images")), directory, fmt,
                               soft_labels=chosen.soft_labels,
                               info={"cell": key, "repeat": repeat},
                               card=export_card(
                                   key, repeat, read_cell_record(source),
                                   chosen.soft_labels is not None, evaluation={
                                       "architecture": distilled.architecture,
                                       "cross_architectures": list(distilled.cross_architectures),
                                       "models": distilled.eval_models,
                                       "dsa": distilled.dsa.model_dump(),
                                       **distilled.eval.model_dump()},
                                   metrics_path=Path(config.params.eval_report.output_dir)
                                   / METRICS_JSON))
    print(f"exported {key} repeat {repeat}: {summary['count']} images as {fmt} to {directory} "
          f"({summary['pixels_clipped_fraction']:.1%} of pixels clipped to [0, 255])")
    return 0


def dvc_sync_command(params_file: str, output: Path, check: bool) -> int:
    """Generate dvc.yaml from the definitions; with `check`, compare instead of writing."""
    # deferred: these import dagster; `--help` stays instant without them
    from synthfactory.definitions import build_definitions
    from synthfactory.dvc_stages import build_stages, render_dvc_yaml
    from synthfactory.params import load_params

    config = load_params(params_file)
    text = render_dvc_yaml(build_stages(build_definitions(config), config, params_file), config,
                           params_file)
    current = output.read_text() if output.is_file() else None
    if check:
        if current != text:
            fix = "synthfactory dvc-sync" + ("" if params_file == "params.yaml"
                                             else f" --params {params_file}")
            print(f"synthfactory: {output} does not match the asset graph: run `{fix}`",
                  file=sys.stderr)
            return 1
        print(f"{output} matches the asset graph")
        return 0
    output.write_text(text)
    print(f"{'unchanged' if current == text else 'wrote'} {output}: "
          f"{text.count(chr(10) + '    cmd: ')} stages")
    return 0


PROJECT_DAGSTER_HOME = "dagster_home"


def _use_project_instance() -> None:
    """Point DAGSTER_HOME at the project's `dagster_home/` (pool limit, run monitoring, no
    telemetry) when it is not set and the working directory is the project root."""
    config = Path(PROJECT_DAGSTER_HOME) / "dagster.yaml"
    if not os.environ.get("DAGSTER_HOME") and config.is_file():
        os.environ["DAGSTER_HOME"] = str(config.parent.resolve())


def _instance() -> dg.DagsterInstance:
    """The persistent instance under DAGSTER_HOME when set (runs show in the UI), else ephemeral."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _print_summary(result: PlanResult, seconds: float, store_root: str, report_dir: str) -> None:
    """What ran (over every run of the plan), how long each step took, and where its output is."""
    durations: dict[str, float] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_SUCCESS":  # a step of one run per cell: summed
            durations[event.step_key] = (durations.get(event.step_key, 0.0)
                                         + event.event_specific_data.duration_ms / 1000)
    materialized: dict[str, list[str]] = {}
    for event in result.get_asset_materialization_events():
        name = event.asset_key.to_user_string()
        materialized.setdefault(name, [])
        if event.partition:
            materialized[name].append(event.partition)
    # In the plan's order (its definitions' key order), not in the order steps finished.
    order = {key: index for index, key in enumerate(
        key for run, _ in result.runs for key in run.partition_keys)}
    for partition_keys in materialized.values():
        partition_keys.sort(key=lambda key: order.get(key, len(order)))
    print(f"\n{'asset':<20} {'seconds':>8}  output")
    for name, partition_keys in materialized.items():
        where = report_dir if name == "eval_report" else str(Path(store_root) / name)
        if partition_keys:
            shown = (", ".join(partition_keys) if len(partition_keys) <= 3
                     else f"{partition_keys[0]} … {partition_keys[-1]}")
            where += f"  ({len(partition_keys)} partition(s): {shown})"
        print(f"{name:<20} {durations.get(name, float('nan')):>8.1f}  {where}")
    failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    status = "succeeded" if result.success else f"FAILED in {failed}"
    runs = len(result.runs)
    skipped = result.not_started
    print(f"\n{runs} run(s) {status} in {seconds:.1f}s; outputs under {store_root}/")
    for run in skipped:
        print(f"not started (an earlier run failed): {run.describe()}")


def _print_checks(result: PlanResult, selected: Any, checks: bool
                  ) -> tuple[list[Any], list[Any]]:
    """The checks' verdicts after the summary: each failed check on one line (blocking ones as
    errors, with the selected assets that did not run), or that checks were skipped. Returns the
    failed blocking checks and the other failed checks."""
    if not checks:
        print("asset checks: skipped (--no-checks): nothing was verified or blocked")
        return [], []
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed]
    blocked = [e for e in failed if e.blocking and e.severity.value == "ERROR"]
    warned = [e for e in failed if e not in blocked]
    passed = len(evaluations) - len(failed)
    print(f"asset checks: {passed} passed, {len(blocked)} failed and blocking, {len(warned)} "
          "failed without blocking")
    made = {event.asset_key for event in result.get_asset_materialization_events()}
    not_run = sorted(key.to_user_string() for key in selected if key not in made)
    for evaluation in blocked:
        print(f"synthfactory: error: blocking check {evaluation.check_name} of "
              f"{evaluation.asset_key.to_user_string()} failed: {evaluation.description}",
              file=sys.stderr)
    if blocked:
        print(f"synthfactory: error: not run because a blocking check failed: "
              f"{', '.join(not_run) or 'nothing else was selected'}", file=sys.stderr)
    for evaluation in warned:
        print(f"synthfactory: warning: check {evaluation.check_name} of "
              f"{evaluation.asset_key.to_user_string()} failed ({evaluation.severity.value}, "
              f"does not block): {evaluation.description}", file=sys.stderr)
    return blocked, warned


def _print_arm_table(metrics_path: Path) -> None:
    """The answer: accuracy per arm on the real test split."""
    import json

    metrics = json.loads(metrics_path.read_text())
    print(f"\naccuracy on {metrics['n_test']} real test images ({metrics['dataset']}):")
    print(f"{'arm':<14} {'n_train':>8}  {'accuracy':>16}  seeds")
    for arm in ordered_arms(metrics):  # refined/uniform only with refinement rounds
        row = metrics["arms"][arm]
        spread = f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
        print(f"{arm:<14} {row['n_train']:>8}  {spread:>16}  {row['seeds']}")
    for arm in sorted(metrics.get("missing_arms") or {}):
        print(f"{arm:<14} {'-':>8}  {'not built':>16}  -")
    contamination = metrics.get("contamination")
    if contamination:
        print(f"near-copies of real test images: {contamination['count']} of "
              f"{contamination['n_synthetic']} synthetic images")
    print(f"report: {metrics_path.parent / 'report.html'}")


if __name__ == "__main__":
    sys.exit(main())
