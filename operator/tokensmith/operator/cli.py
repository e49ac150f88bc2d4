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


def admission_policy(params: dict[str, Any]) -> Any:
    """The AdmissionPolicy from `operator run`'s parsed flags (the chart's tests use this too)."""
    from tokensmith.operator import admission

    try:
        return admission.from_flags(
            params.get("allowed_volume_types"),
            params.get("image_prefixes", ()),
            params.get("allow_job_service_account", False),
            params.get("job_service_account_selector", ""),
            params.get("allowed_security_profiles"),
            params.get("capabilities", ()),
        )
    except ValueError as err:
        raise TokensmithError(str(err)) from None


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
    "--allowed-volume-types",
    metavar="LIST",
    help="Volume types jobs may mount, comma-separated [default: persistentVolumeClaim, csi, nfs, "
    "emptyDir, configMap, secret, projected, ephemeral, downwardAPI; never hostPath unless listed].",
)
@click.option(
    "--allowed-image-prefix",
    "image_prefixes",
    multiple=True,
    metavar="PREFIX",
    help="Images jobs may name must start with one of these (repeatable) [default: any].",
)
@click.option(
    "--allow-job-service-account",
    is_flag=True,
    help="Let jobs set cluster.serviceAccountName [default: no, the operator's per-job account].",
)
@click.option(
    "--job-service-account-selector",
    default="",
    metavar="KEY=VALUE,...",
    help="With --allow-job-service-account: only accounts carrying these labels.",
)
@click.option(
    "--allowed-security-profiles",
    metavar="LIST",
    help="cluster.securityProfile values jobs may use [default: restricted,baseline].",
)
@click.option(
    "--allow-capability",
    "capabilities",
    multiple=True,
    metavar="CAP",
    help="A capability jobs may add with securityProfile: baseline (repeatable) [default: none].",
)
@click.option(
    "--network-policy/--no-network-policy",
    default=False,
    show_default=True,
    help="Give jobs that do not set cluster.networkPolicy a NetworkPolicy.",
)
@click.option(
    "--scrape-namespace",
    envvar="POD_NAMESPACE",
    help="Namespace whose pods job NetworkPolicies admit (metrics scrape) [env: POD_NAMESPACE].",
)
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
    allowed_volume_types: str | None,
    image_prefixes: tuple[str, ...],
    allow_job_service_account: bool,
    job_service_account_selector: str,
    allowed_security_profiles: str | None,
    capabilities: tuple[str, ...],
    network_policy: bool,
    scrape_namespace: str | None,
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
    policy = admission_policy(click.get_current_context().params)
    if not _has_credentials():
        raise TokensmithError(
            "no Kubernetes credentials: not running in a pod and no kubeconfig "
            "(set KUBECONFIG or create ~/.kube/config, e.g. with `kind create cluster`)"
        )
    from tokensmith.operator.children import Defaults
    from tokensmith.operator.main import OperatorConfig, run_operator

    overrides: dict[str, Any] = {"network_policy": network_policy, "scrape_namespace": scrape_namespace}
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
        policy=policy,
        verbose=verbose,
        watch_nodes=watch_nodes,
    )
    run_operator(config)


@operator.command(name="render")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--namespace", "-n", default=None, help="Namespace [default: the manifest's, else 'default'].")
@click.option("--attempt", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--evaluation-step",
    type=click.IntRange(min=0),
    default=None,
    help="Also render the evaluation Job of this checkpoint step [default: the first checkpoint's, "
    "when the job has evaluation tasks].",
)
@click.option(
    "--network-policy/--no-network-policy",
    default=False,
    show_default=True,
    help="The operator's --network-policy default (a job's cluster.networkPolicy wins).",
)
@click.option("--output", type=click.Path(path_type=Path), help="Write the YAML stream here (atomically).")
def render(
    manifest: Path,
    namespace: str | None,
    attempt: int,
    evaluation_step: int | None,
    network_policy: bool,
    output: Path | None,
) -> None:
    """Print the objects the operator would create for a job (review before `kubectl apply`): the
    per-job objects, the workers of one attempt and, with evaluation tasks, one evaluation Job.

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
    defaults = children.Defaults(network_policy=network_policy)
    objs = children.job_children(job, spec, defaults=defaults) + children.worker_pods(
        job, spec, attempt, tuple(range(spec.cluster.nodes)), defaults
    )
    if spec.evaluation.tasks or evaluation_step is not None:
        from tokensmith.operator.names import eval_job_name
        from tokensmith.operator.spec import effective_trainer_config

        step = evaluation_step
        if step is None:
            step = effective_trainer_config(spec, name).checkpoint.every_steps or 1
        path = f"{children.checkpoint_dir(spec, name)}/step-{step:08d}"  # the trainer's layout
        objs.append(children.evaluation_job(job, spec, step, path, eval_job_name(name, step), defaults))
    # libyaml's emitter when PyYAML has it: a 4,096-node job renders in about a second instead of ten.
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    text = yaml.dump_all(objs, Dumper=dumper, sort_keys=False)
    if output is None:
        click.echo(text, nl=False)
        return
    from tokensmith.core.io import atomic_write_text

    atomic_write_text(output, text)
    click.echo(f"wrote {len(objs)} objects to {output}", err=True)


@operator.command(name="pod-security")
@click.argument("manifests", nargs=-1, type=click.File("r"))
@click.option(
    "--level",
    type=click.Choice(["restricted", "baseline"]),
    default="restricted",
    show_default=True,
    help="The Pod Security Standard every pod must pass.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def pod_security(manifests: tuple[Any, ...], level: str, fmt: str) -> None:
    """Check the pods in YAML manifests (Pods, Jobs, Deployments, ...) against the Kubernetes Pod
    Security Standards, as a namespace labelled pod-security.kubernetes.io/enforce=LEVEL would.
    Exits 3 when a pod fails, listing every broken control.

    \b
    tokensmith operator render job.yaml | tokensmith operator pod-security -
    helm template charts/tokensmith | tokensmith operator pod-security - --format json
    """
    import sys

    import yaml

    from tokensmith.operator import podsecurity

    streams: list[Any] = [*manifests]
    if not streams:
        streams.append(sys.stdin)
    rows: list[dict[str, Any]] = []
    for stream in streams:
        try:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: thousands of pods in seconds
            docs = [d for d in yaml.load_all(stream, Loader=loader) if isinstance(d, dict)]
        except yaml.YAMLError as err:
            raise TokensmithError(f"{stream.name}: not YAML: {str(err).splitlines()[0]}") from None
        for doc in docs:
            for pod in podsecurity.pods_of(doc):  # one pod per object at most
                strict = podsecurity.violations(doc, "restricted")  # baseline's controls included
                base = podsecurity.violations(doc, "baseline") if strict else []
                found = base if level == "baseline" else strict
                best = "restricted" if not strict else ("baseline" if not base else "privileged")
                rows.append({"object": pod.where, "level": best, "violations": found})
    if not rows:
        raise TokensmithError("no pods in the input (expected Pods, Jobs, Deployments, ... as YAML)")
    failed = [r for r in rows if r["violations"]]
    if fmt == "json":
        click.echo(json.dumps({"level": level, "pods": rows, "passed": not failed}, indent=2))
    else:
        for r in rows:
            mark = "ok  " if not r["violations"] else "FAIL"
            click.echo(f"{mark} {r['object']}: {r['level']}")
            for line in r["violations"]:
                click.echo(f"       {line.split(': ', 1)[-1]}")
        click.echo(f"{len(rows) - len(failed)}/{len(rows)} pod(s) pass {level}")
    if failed:
        sys.exit(3)
