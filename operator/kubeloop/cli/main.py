"""`kubectl kubeloop <command>`: the commands, their flags and their I/O (the logic is in pure modules)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubeloop.api import KINDS, MODEL_DEPLOYMENT, TRAINING_JOB
from kubeloop.cli.kube import CliError, Cluster, parse_ref
from kubeloop.cli.lineage import digest, lineage, render
from kubeloop.cli.predict import AnswerError, RowsError, answer_lines, infer_request, parse_rows
from kubeloop.cli.report import report_lines
from kubeloop.contract import ABORT_ANNOTATION, PROMOTE_ANNOTATION

DESCRIPTION = """\
Kubeloop from kubectl: follow a model's lineage, steer a canary, send rows to a model, read a training
run's report. Talks to the API server only (kubeconfig as kubectl finds it: --kubeconfig, $KUBECONFIG,
~/.kube/config)."""

EPILOG = """\
examples:
  kubectl kubeloop lineage modeldeployment/iris     # Dataset -> TrainingJob -> model -> deployment -> Monitor
  kubectl kubeloop lineage dset/iris -n ml          # kinds by any name: dataset, dset, trainingjob, tjob, ...
  kubectl kubeloop promote iris                     # promote the running canary now
  kubectl kubeloop abort iris                       # roll the running canary back now
  kubectl kubeloop predict iris -f rows.csv         # one answer per row (CSV with a header, or JSON)
  kubectl kubeloop report iris-lr                   # metrics and model card of a TrainingJob

Errors (object not found, no canary running, a bad rows file) print `error: ...` and exit with 1."""


def flags(default: Any) -> argparse.ArgumentParser:
    """The kubectl-like flags, taken before and after the command (after it they default to SUPPRESS, so
    that a flag given before the command is not overwritten)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kubeconfig",
        default=default,
        help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
    )
    common.add_argument(
        "--context", default=default, help="the kubeconfig context (default: the current one)"
    )
    common.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="the namespace of the objects (default: the context's, else default)",
    )
    return common


def parser() -> argparse.ArgumentParser:
    common = flags(argparse.SUPPRESS)
    top = argparse.ArgumentParser(
        prog="kubectl kubeloop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[flags(None)],
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    kinds = ", ".join(k.singular for k in KINDS)
    show = commands.add_parser(
        "lineage",
        parents=[common],
        help="the chain Dataset version -> TrainingJob -> model -> ModelDeployment -> Monitor, as a tree",
        description=f"The lineage of one object ({kinds}): what it came from and what came from it, read "
        "from the objects' status.",
    )
    show.add_argument("object", metavar="KIND/NAME", help="e.g. modeldeployment/iris, tjob/iris-lr")
    for name, verb, annotation in (
        ("promote", "promote it now", PROMOTE_ANNOTATION),
        ("abort", "roll it back now", ABORT_ANNOTATION),
    ):
        order = commands.add_parser(
            name,
            parents=[common],
            help=f"the ModelDeployment's running canary: {verb}",
            description=f"Annotate the ModelDeployment with {annotation}=<the canary's sha256> (from "
            "status.canary); the operator acts on its next look.",
        )
        order.add_argument("deployment", metavar="MODELDEPLOYMENT")
    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="send rows from a CSV or JSON file to a ModelDeployment, print one answer per row",
        description="Rows go through the API server's service proxy to the model's V2 infer endpoint. CSV: "
        "a header naming the features (other columns, such as the target, are left out) or no header and "
        'the features in the model\'s order. JSON: a list of objects or of lists, or {"instances": [...]}. '
        "A model with categorical features takes their values as text (sent as BYTES, one tensor per "
        "feature); its CSV needs the header.",
    )
    predict.add_argument("deployment", metavar="MODELDEPLOYMENT")
    predict.add_argument(
        "-f", "--filename", required=True, help="the rows: a .csv or .json file, or - (stdin)"
    )
    predict.add_argument(
        "--format", choices=("csv", "json"), help="the file's format (default: from its name)"
    )
    report = commands.add_parser(
        "report",
        parents=[common],
        help="the metrics and model card of a TrainingJob",
        description="The TrainingJob's status as a report: dataset version, metrics against the gate, the "
        "model (digest, URI, inputs, library versions) and the trials of a search.",
    )
    report.add_argument("trainingjob", metavar="TRAININGJOB")
    return top


def run_lineage(cluster: Cluster, ref: str) -> list[str]:
    kind, name = parse_ref(ref)
    cluster.get(kind, name)  # not found is said for the object asked for, not for the namespace
    objects = [obj for k in KINDS for obj in cluster.list(k)]
    return render(lineage(kind.kind, name, objects))


def run_order(cluster: Cluster, ref: str, order: str) -> list[str]:
    _, name = parse_ref(ref, MODEL_DEPLOYMENT)
    deployment = cluster.get(MODEL_DEPLOYMENT, name)
    canary = (deployment.get("status") or {}).get("canary")
    if not canary:
        raise CliError(f"modeldeployment {name!r} runs no canary: nothing to {order}")
    annotation = PROMOTE_ANNOTATION if order == "promote" else ABORT_ANNOTATION
    cluster.annotate(MODEL_DEPLOYMENT, name, {annotation: canary["sha256"]})
    where = f"step {canary.get('step', 0) + 1}, weight {canary.get('weight')}%, {canary.get('phase')}"
    done = "promotion" if order == "promote" else "rollback"
    return [
        f"modeldeployment/{name}: {done} of canary {digest(canary['sha256'])} requested ({where}); "
        f"annotated {annotation}={canary['sha256']}"
    ]


def service_of(deployment: dict[str, Any]) -> tuple[str, str]:
    """The Service and port the operator advertises in status.url (http://<service>.<namespace>.svc:<port>)."""
    url = (deployment.get("status") or {}).get("url")
    name = deployment["metadata"]["name"]
    if not url:
        raise CliError(f"modeldeployment {name!r} has no status.url yet: it is not serving")
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise CliError(f"modeldeployment {name!r} has a status.url without host and port: {url!r}")
    return parts.hostname.split(".")[0], str(parts.port)


def read_rows(path: str, fmt: str | None) -> tuple[str, str]:
    if fmt is None:
        suffix = Path(path).suffix.lower().lstrip(".")
        if suffix not in ("csv", "json"):
            raise CliError(
                f"{path}: cannot tell the format from the name; pass --format csv or --format json"
            )
        fmt = suffix
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {path}: {e}") from None
    return text, fmt


def run_predict(cluster: Cluster, ref: str, path: str, fmt: str | None) -> list[str]:
    _, name = parse_ref(ref, MODEL_DEPLOYMENT)
    if path == "-" and fmt is None:
        raise CliError("rows from stdin need --format csv or --format json")
    text, fmt = read_rows(path, fmt)
    deployment = cluster.get(MODEL_DEPLOYMENT, name)
    if (deployment.get("spec") or {}).get("auth"):
        # The API server takes the Authorization header as the caller's own credentials and never passes
        # it on, so the server's bearer-token check cannot be met through the proxy.
        raise CliError(
            f"modeldeployment {name!r} requires bearer tokens (spec.auth), which the API server's service "
            f"proxy does not pass on; call {(deployment.get('status') or {}).get('url', 'its URL')} from "
            "inside the cluster instead"
        )
    service, port = service_of(deployment)
    # The server is started with --model-name <the ModelDeployment's name>.
    metadata = cluster.service_proxy(service, port, f"v2/models/{name}")
    features = metadata.get("features") or []
    inputs = metadata.get("inputs") or [{}]
    if not features or not inputs[0].get("name"):
        raise CliError(f"the model's metadata names no features or input: {json.dumps(metadata)[:300]}")
    try:
        strings = {i.get("name") for i in inputs if i.get("datatype") == "BYTES"}
        rows, left_out = parse_rows(text, fmt, features, strings)
    except RowsError as e:
        raise CliError(f"{path}: {e}") from None
    if left_out:
        print(
            f"note: columns not among the model's features were left out: {', '.join(left_out)}",
            file=sys.stderr,
        )
    answer = cluster.service_proxy(
        service, port, f"v2/models/{name}/infer", infer_request(rows, inputs[0]["name"], inputs)
    )
    try:
        return answer_lines(answer, metadata.get("classes") or ())
    except AnswerError as e:
        raise CliError(str(e)) from None


def run_report(cluster: Cluster, ref: str) -> list[str]:
    _, name = parse_ref(ref, TRAINING_JOB)
    return report_lines(cluster.get(TRAINING_JOB, name))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cluster = Cluster(args.kubeconfig, args.context, args.namespace)
        if args.command == "lineage":
            lines = run_lineage(cluster, args.object)
        elif args.command in ("promote", "abort"):
            lines = run_order(cluster, args.deployment, args.command)
        elif args.command == "predict":
            lines = run_predict(cluster, args.deployment, args.filename, args.format)
        else:
            lines = run_report(cluster, args.trainingjob)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
