"""`tokensmith operator run` and `tokensmith crd` (kopf is imported only when the operator runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from tokensmith.core.errors import TokensmithError


def _has_credentials() -> bool:
    """In a pod (service-account token) or with a kubeconfig: what kopf's login can use."""
    import os

    if (
        os.environ.get("KUBERNETES_SERVICE_HOST")
        and Path("/var/run/secrets/kubernetes.io/serviceaccount/token").is_file()
    ):
        return True
    paths = [*os.environ.get("KUBECONFIG", "").split(os.pathsep), str(Path.home() / ".kube" / "config")]
    return any(p and Path(p).is_file() for p in paths)


@click.command(name="crd", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--output", type=click.Path(path_type=Path), help="Write the CRD here (atomically).")
def crd(fmt: str, output: Path | None) -> None:
    """Print the LLMTrainingJob CustomResourceDefinition generated from the models.

    \b
    tokensmith crd | kubectl apply -f -
    tokensmith crd --output charts/tokensmith/crds/llmtrainingjobs.tokensmith.dev.yaml
    """
    from tokensmith.operator.crd import build_crd, crd_yaml

    text = crd_yaml() if fmt == "yaml" else json.dumps(build_crd(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    from tokensmith.core.io import atomic_write_text

    atomic_write_text(output, text)
    click.echo(f"wrote {output}", err=True)


@click.group(name="operator", context_settings={"help_option_names": ["-h", "--help"]})
def operator() -> None:
    """Run the Kubernetes operator for LLMTrainingJob resources."""


@operator.command(name="run")
@click.option(
    "--namespace",
    "-n",
    "namespaces",
    multiple=True,
    help="Watch only these namespaces (repeatable). Default: all namespaces (needs a ClusterRole).",
)
@click.option(
    "--peering",
    default="tokensmith",
    show_default=True,
    help="kopf peering name: replicas with the same name elect one active operator.",
)
@click.option("--standalone", is_flag=True, help="No peering (a single replica; no kopf.dev CRDs needed).")
@click.option("--priority", type=int, default=0, show_default=True, help="Peering priority of this replica.")
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=9090, show_default=True, help="0 disables."
)
@click.option(
    "--liveness",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="kopf's liveness endpoint URL ('' disables).",
)
@click.option(
    "--interval", type=float, default=10.0, show_default=True, help="Seconds between periodic reconciles."
)
@click.option("--trainer-image", envvar="TOKENSMITH_TRAINER_IMAGE", help="Default trainer image [env].")
@click.option("--evaluator-image", envvar="TOKENSMITH_EVALUATOR_IMAGE", help="Default evaluator image [env].")
@click.option(
    "--watch-nodes/--no-watch-nodes",
    default=True,
    show_default=True,
    help="Watch nodes (cluster-wide read): lost nodes, stuck pods, cordons and taints.",
)
@click.option("--verbose", is_flag=True)
def run(
    namespaces: tuple[str, ...],
    peering: str,
    standalone: bool,
    priority: int,
    metrics_port: int,
    liveness: str,
    interval: float,
    trainer_image: str | None,
    evaluator_image: str | None,
    watch_nodes: bool,
    verbose: bool,
) -> None:
    """Reconcile LLMTrainingJobs into gangs of worker pods (a thin wrapper over kopf).

    \b
    tokensmith operator run --namespace ml-training
    tokensmith operator run --standalone --metrics-port 9090
    """
    if interval <= 0:
        raise TokensmithError(f"--interval must be positive, got {interval}")
    if not _has_credentials():
        raise TokensmithError(
            "no Kubernetes credentials: not running in a pod and no kubeconfig "
            "(set KUBECONFIG or create ~/.kube/config, e.g. with `kind create cluster`)"
        )
    from tokensmith.operator.children import Defaults
    from tokensmith.operator.main import OperatorConfig, run_operator

    overrides: dict[str, Any] = {}
    if trainer_image:
        overrides["trainer_image"] = trainer_image
    if evaluator_image:
        overrides["evaluator_image"] = evaluator_image
    config = OperatorConfig(
        namespaces=namespaces,
        peering=None if standalone else peering,
        priority=priority,
        metrics_port=metrics_port or None,
        liveness=liveness or None,
        interval=interval,
        defaults=Defaults(**overrides),
        verbose=verbose,
        watch_nodes=watch_nodes,
    )
    run_operator(config)


@operator.command(name="render")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--namespace", "-n", default=None, help="Namespace [default: the manifest's, else 'default'].")
@click.option("--attempt", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--output", type=click.Path(path_type=Path), help="Write the YAML stream here (atomically).")
def render(manifest: Path, namespace: str | None, attempt: int, output: Path | None) -> None:
    """Print the objects the operator would create for a job (review before `kubectl apply`).

    \b
    tokensmith operator render job.yaml | kubectl apply --dry-run=server -f -
    """
    import yaml
    from pydantic import ValidationError

    from tokensmith.operator import children
    from tokensmith.operator.local.manifest import read_documents
    from tokensmith.operator.reconcile import check_spec
    from tokensmith.operator.spec import format_validation_error, parse_manifest

    try:
        doc = read_documents(manifest)  # the LLMTrainingJob of a multi-document file (PVC + job)
        meta, spec = parse_manifest(doc)
    except ValidationError as err:
        raise TokensmithError(f"{manifest}: {format_validation_error(err)}") from None
    except (ValueError, yaml.YAMLError) as err:
        raise TokensmithError(f"{manifest}: {str(err).splitlines()[0]}") from None
    name = meta["name"]
    problem = check_spec(name, spec)
    if problem is not None:
        raise TokensmithError(f"{manifest}: {problem}")
    job = children.JobRef(
        name=name, namespace=namespace or meta.get("namespace") or "default", uid="<job-uid>"
    )
    objs = children.job_children(job, spec) + children.worker_pods(
        job, spec, attempt, tuple(range(spec.cluster.nodes)), children.Defaults()
    )
    # libyaml's emitter when PyYAML has it: a 4,096-node job renders in about a second instead of ten.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump_all(objs, Dumper=dumper, sort_keys=False)
    if output is None:
        click.echo(text, nl=False)
        return
    from tokensmith.core.io import atomic_write_text

    atomic_write_text(output, text)
    click.echo(f"wrote {len(objs)} objects to {output}", err=True)
