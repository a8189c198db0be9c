"""The ``optimize`` command: argument parsing, progress, exit codes, output. No logic of its own."""

from __future__ import annotations

import argparse
import re
import sys

from rooftop import errors
from rooftop.limits import FOLD_LIMIT


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (examples: 1MiB, 512KB, 4096)")
    unit = (m.group(2) or "B").upper().replace("I", "").rstrip("B") or "B"
    mult = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
    return int(float(m.group(1)) * mult)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rooftop")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optimize",
        description="Rooftop: rewrite an ONNX model to move fewer bytes, verify "
        "it computes the same, and report what each pass saved.",
        epilog="Exit codes: 0 ok; 1 --check found changes; 2 bad usage "
        "or input; 3 verification failed (nothing written); "
        "4 internal error; 5 --audit gate failed.",
    )
    p.add_argument("model", nargs="?", help="input .onnx model (never modified)")
    p.add_argument("--version", action="version", version=f"rooftop {_version()}")
    p.add_argument("-o", "--output", help="where to write the optimized model (atomically)")
    p.add_argument(
        "--report",
        action="append",
        nargs="?",
        const="-",
        metavar="PATH",
        help="print the per-pass table; with PATH (.json, .md, .html) also write a report file. Repeatable.",
    )
    p.add_argument(
        "--check", action="store_true", help="analyze only: write nothing, exit 1 if any pass would change the model"
    )
    au = p.add_argument_group("audit (a CI gate)")
    au.add_argument(
        "--audit",
        action="store_true",
        help="list what makes the model slow, who can fix it (a pass "
        "or its author) and what is at stake; writes no model",
    )
    au.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="KIND,...",
        help="exit 5 when a finding of these kinds is present (repeatable)",
    )
    au.add_argument(
        "--max-traffic",
        type=parse_size,
        metavar="SIZE",
        help="exit 5 when the model moves more bytes per inference (cost model)",
    )
    au.add_argument(
        "--max-latency-ms",
        type=float,
        metavar="MS",
        help="exit 5 when the model's latency at the deploy level is above MS",
    )
    au.add_argument(
        "--baseline",
        metavar="AUDIT.json",
        help="exit 5 when nodes or traffic grew, or latency grew beyond "
        "the noise, against a previous --audit --report JSON",
    )
    g = p.add_argument_group("passes")
    g.add_argument("--passes", help="comma-separated pipeline to run instead of the default")
    g.add_argument("--skip", action="append", default=[], help="pass(es) to leave out (comma-separated, repeatable)")
    g.add_argument("--list-passes", action="store_true", help="list the passes and exit")
    g.add_argument(
        "--explain",
        metavar="PASS",
        action="append",
        default=[],
        help="after the run, print what PASS rewrote and every node "
        "it looked at and left, with the reason (repeatable)",
    )
    g.add_argument(
        "--plan",
        metavar="PLAN.json",
        help="replay a plan (from --save-plan, or a --report .json): exactly the passes it kept, with its options "
        "and shapes, nothing timed, verification on; byte-identical output with the same library versions",
    )
    g.add_argument(
        "--save-plan", metavar="PLAN.json", help="write this run's decisions (its plan) to a file, for --plan"
    )
    g.add_argument(
        "--fixed-point", action="store_true", help="repeat the pipeline until nothing changes (at most 4 times)"
    )
    g.add_argument(
        "--target",
        choices=("portable", "onnxruntime"),
        default="portable",
        help="portable: standard ops only (default); onnxruntime: com.microsoft fused ops allowed",
    )
    g.add_argument(
        "--fold-limit",
        type=parse_size,
        default=FOLD_LIMIT,
        metavar="SIZE",
        help="largest tensor constant folding may create (default 1MiB)",
    )
    g.add_argument("--channel-multiple", type=int, choices=(4, 8, 16, 32), help="pad channel counts to this multiple")
    g.add_argument(
        "--opset",
        type=int,
        metavar="N",
        help="convert the model to default-domain opset N first (onnx's version converter); "
        "makes old models runnable in onnxruntime, so they can be verified, and enables newer fused ops",
    )
    v = p.add_argument_group("verification")
    v.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DxDx..",
        help="the shape an input is run at, e.g. input=1x3x224x224; give an input again to add a shape set "
        "(every decision must hold at each set). Unbound dynamic dims get realistic defaults (batch 1, image "
        "sides 224, sequences 128)",
    )
    v.add_argument("--inputs", metavar="DATA.npz", help="verify on these inputs instead of seeded random data")
    v.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance for float outputs (default 1e-4)")
    v.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance for float outputs (default 1e-5)")
    v.add_argument("--no-verify", action="store_true", help="do not compare outputs (not recommended)")
    v.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 3, nothing written) if any pass changed the outputs, instead of rolling it back",
    )
    a = p.add_argument_group("analysis and timing")
    a.add_argument(
        "--hardware",
        default="host",
        metavar="NAME|FILE.json",
        help="roofline profile: host (measured here, cached), "
        "xeon-avx512, v100, a100, h100, cortex-a76, or a JSON file",
    )
    a.add_argument(
        "--measure-hardware",
        action="store_true",
        help="measure this machine's peak FLOP/s, bandwidth and per-op overhead, print them and exit",
    )
    a.add_argument("--no-analysis", action="store_true", help="skip the roofline cost analysis")
    a.add_argument("--no-time", action="store_true", help="skip onnxruntime latency measurements")
    a.add_argument(
        "--time-budget",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds of interleaved timing per comparison (default 1)",
    )
    a.add_argument("--threads", type=int, default=0, help="onnxruntime threads for timing (default: physical cores)")
    a.add_argument(
        "--deploy-level",
        choices=("disable", "basic", "extended", "all"),
        default="all",
        help="onnxruntime graph optimization level the model will run at; passes are kept or rejected by "
        "latency measured there (default all: what an InferenceSession does by default)",
    )
    a.add_argument(
        "--runtime",
        default="onnxruntime",
        metavar="NAME[:WHERE]",
        help="where verification and every decision are taken: onnxruntime (default), onnxruntime:PROVIDER "
        "(any execution provider of the installed onnxruntime), openvino, openvino:DEVICE",
    )
    cc = a.add_mutually_exclusive_group()
    cc.add_argument(
        "--cross-check",
        dest="cross_check",
        action="store_const",
        const=True,
        default=None,
        help="portable target: also load, run and compare every candidate in OpenVINO (the default where it "
        "is installed and the weights are under 1 GB)",
    )
    cc.add_argument(
        "--no-cross-check",
        dest="cross_check",
        action="store_const",
        const=False,
        help="portable target: do not check candidates in OpenVINO",
    )
    a.add_argument(
        "--keep-slower",
        action="store_true",
        help="keep passes and a final model that measure slower at the deploy level",
    )
    a.add_argument(
        "--noise-band",
        type=float,
        default=0.03,
        metavar="FRACTION",
        help="a measured ratio within 1 ± this (default 0.03) is noise: neither rejected nor claimed as a win",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--external-data",
        action="store_true",
        help="save weights to <output>.data beside the model (automatic above ~1.8 GB)",
    )
    o.add_argument("--force", action="store_true", help="allow -o to overwrite the input model")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    o.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _split(values: list[str]) -> list[str]:
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage line
        return errors.EXIT_INPUT if e.code not in (0, None) else errors.EXIT_OK
    try:
        return _main(args)
    except errors.RooftopError as e:
        if args.debug:
            import traceback

            traceback.print_exc()
        prefix = "rooftop: error: "
        if isinstance(e, errors.VerificationError):
            prefix = "rooftop: verification failed: "
        print(prefix + str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rooftop: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"rooftop: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return errors.EXIT_INTERNAL


def _consoles(args: argparse.Namespace):
    from rich.console import Console

    out = Console(soft_wrap=True)
    if not out.is_terminal:  # piped or in CI: $COLUMNS if set, else 100 columns (the narrow tables fit)
        out = Console(soft_wrap=True, width=_piped_width())
    err = Console(stderr=True)
    if not err.is_terminal:
        err = Console(stderr=True, width=_piped_width())
    return out, err


def _piped_width() -> int:
    import os

    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 100


def _options(args: argparse.Namespace, profile_nodes: bool):
    from rooftop import pipeline
    from rooftop.shapes import parse_shape_sets

    return pipeline.Options(
        passes=_split([args.passes]) if args.passes else None,
        skip=_split(args.skip),
        target=args.target,
        fold_limit=args.fold_limit,
        channel_multiple=args.channel_multiple,
        input_shapes=parse_shape_sets(args.input_shape),
        inputs_npz=args.inputs,
        rtol=args.rtol,
        atol=args.atol,
        verify=not args.no_verify,
        fixed_point=args.fixed_point,
        external_data=True if args.external_data else None,
        force=args.force,
        strict=args.strict,
        debug=args.debug,
        hardware=args.hardware,
        analyze=not args.no_analysis,
        time=not args.no_time and not args.check,
        time_budget=args.time_budget,
        threads=args.threads,
        deploy_level=args.deploy_level,
        opset=args.opset,
        keep_slower=args.keep_slower,
        noise_band=args.noise_band,
        profile_nodes=profile_nodes,  # per-operator times are only shown in a report
        time_all_levels=bool(args.report),  # so is the ORT_DISABLE_ALL comparison of the final model
        plan=getattr(args, "plan", None),
        runtime=args.runtime,
        cross_check=args.cross_check,
    )


def _validate(args: argparse.Namespace) -> None:
    from rooftop import pipeline
    from rooftop.report import check_path

    if not args.model:
        raise errors.UsageError("no model given (usage: optimize MODEL.onnx -o OUT.onnx --report)")
    for r in args.report or []:
        if r != "-":
            check_path(r)
    if args.check and args.output:
        raise errors.UsageError("--check writes nothing; drop -o or drop --check")
    if args.plan and (args.passes or args.skip):
        raise errors.UsageError("--plan replays the passes it recorded; drop --passes/--skip")
    if args.save_plan:
        from pathlib import Path

        if not Path(args.save_plan).resolve().parent.is_dir():
            raise errors.UsageError(
                f"--save-plan {args.save_plan}: folder {Path(args.save_plan).resolve().parent} does not exist"
            )
    unknown = [e for e in args.explain if e not in pipeline.REGISTRY]
    if unknown:
        raise errors.UsageError(f"--explain {unknown[0]}: no such pass (optimize --list-passes)")


class _Progress:
    """A spinner naming the running stage, and one line per pass as it ends (stderr, not with -q)."""

    def __init__(self, console, quiet: bool) -> None:
        self.console, self.quiet = console, quiet
        self.status = console.status("starting", spinner="dots") if not quiet and console.is_terminal else None

    def __enter__(self) -> _Progress:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.stop()

    def stage(self, s: str) -> None:
        if self.status is not None:
            self.status.update(s)

    def pass_start(self, name: str, it: int) -> None:
        self.stage(f"pass {name}" + (f" (iteration {it})" if it > 1 else ""))

    def pass_end(self, rec) -> None:
        from rooftop.report.text import progress_line

        line = progress_line(rec)
        if line and not self.quiet:
            self.console.print(line, highlight=False)


def _main(args: argparse.Namespace) -> int:
    from rooftop import pipeline
    from rooftop.report import terminal, text, write_report

    out, err = _consoles(args)
    if args.list_passes:
        for name, summary, default in pipeline.list_passes():
            out.print(f"{name:16s} {'(default) ' if default else '          '}{summary}")
        return errors.EXIT_OK
    if args.measure_hardware:
        return _measure_hardware(out, err)
    _validate(args)
    if args.audit:
        return _audit(args, out, err)
    reports = args.report or []
    files = [r for r in reports if r != "-"]
    opts = _options(args, profile_nodes=bool(reports))
    with _Progress(err, args.quiet) as progress:
        _model, report = pipeline.optimize(
            args.model,
            None if args.check else args.output,
            opts,
            on_pass_start=progress.pass_start,
            on_pass_end=progress.pass_end,
            on_stage=progress.stage,
        )
    shown = {f"pass {r.name} {r.status.value}: {r.reason}" for r in report.passes}  # printed as each pass ended
    for w in report.warnings:
        if not args.quiet and w not in shown:
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if "-" in reports or args.check:
        terminal.print_terminal(report, out)
    for name in args.explain:
        for line in text.explain_lines(report, name):
            out.print(line, highlight=False)
    for r in files:
        write_report(report, r)
        if not args.quiet:
            err.print(f"report written to {r}", highlight=False)
    if args.save_plan and report.plan is not None:
        report.plan.write(args.save_plan)
        if not args.quiet:
            err.print(
                f"plan written to {args.save_plan} (replay: optimize MODEL -o OUT --plan {args.save_plan})",
                highlight=False,
            )
    if args.check:
        lines = text.check_lines(report)
        for line in lines:
            out.print(line, highlight=False)
        return errors.EXIT_CHECK_CHANGES if text.would_change(report) else errors.EXIT_OK
    if not args.quiet and "-" not in reports:  # the terminal report already ends with what was written
        err.print(text.outcome_line(report, args.output), highlight=False)
    return errors.EXIT_OK


def _audit(args: argparse.Namespace, out, err) -> int:
    from rooftop import audit
    from rooftop.report.audit import print_audit, write_audit

    if args.output:
        raise errors.UsageError("--audit writes no model; drop -o (optimize the model in a separate run)")
    gate = audit.Gate(tuple(_split(args.fail_on)), args.max_traffic, args.max_latency_ms, args.baseline)
    gate.check()
    reports = args.report or []
    with _Progress(err, args.quiet) as progress:
        result = audit.audit(args.model, _options(args, profile_nodes=True), gate, on_stage=progress.stage)
    if "-" in reports or not reports:
        print_audit(result, out)
    for r in reports:
        if r != "-":
            write_audit(result, r)
            if not args.quiet:
                err.print(f"audit written to {r}", highlight=False)
    return errors.EXIT_AUDIT_FAILED if result.failures else errors.EXIT_OK


def _measure_hardware(out, err) -> int:
    from rooftop.analysis import hardware

    status = err.status("measuring this machine", spinner="dots") if err.is_terminal else None
    if status is not None:
        status.start()
    try:
        prof = hardware.host_profile(remeasure=True, progress=(lambda s: status.update(s)) if status else None)
    finally:
        if status is not None:
            status.stop()
    out.print(
        f"host: {prof.details.get('cpu', '?')}, {prof.details.get('threads')} threads (measured)", highlight=False
    )
    out.print(f"  peak fp32      {prof.peak('fp32') / 1e9:8.1f} GFLOP/s   (onnxruntime MatMul 2048^3)", highlight=False)
    out.print(
        f"  peak int8      {prof.peak('int8') / 1e9:8.1f} GOP/s     (onnxruntime MatMulInteger 2048^3)", highlight=False
    )
    out.print(
        f"  bandwidth      {prof.bandwidth / 1e9:8.1f} GB/s      (copy/add of 256 MiB arrays; numpy "
        f"{prof.details['bandwidth_numpy'] / 1e9:.1f}, onnxruntime {prof.details['bandwidth_onnxruntime'] / 1e9:.1f})",
        highlight=False,
    )
    out.print(f"  ridge point    {prof.ridge():8.1f} FLOP/byte", highlight=False)
    out.print(f"  per-op overhead {prof.overhead_s * 1e6:7.2f} µs", highlight=False)
    out.print(f"  channel multiple {prof.channel_multiple}", highlight=False)
    out.print(f"cached in {hardware.cache_dir()}", highlight=False)
    return errors.EXIT_OK


def entry() -> None:
    from rooftop._compat import exit_now

    exit_now(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
