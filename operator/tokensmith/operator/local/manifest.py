"""Reading an `LLMTrainingJob` manifest for a local run: the same file `kubectl apply` takes.

The file may hold several YAML documents (the examples carry a PersistentVolumeClaim); the one of
kind `LLMTrainingJob` is used. The spec is validated by the operator's own models
(`spec.parse_manifest`), so a file the CRD rejects is rejected here too, with the same field paths.

Paths in a manifest are the paths the pods see. Locally:
- the checkpoint volume becomes a directory: `checkpoint.mountPath` is replaced by `--workdir`, so
  the checkpoints land in `WORKDIR/<subPath or job name>` (exactly where the pods would put them
  under the mount) and `status.json` sits beside them;
- other container paths (the token shards, the tokenizer) are rewritten with `--mount
  CONTAINER_PATH=LOCAL_PATH` prefixes, as `docker run -v` maps them.
`--set KEY=VALUE` changes one spec field before validation (dotted camelCase path under `spec`,
the value parsed as YAML), e.g. `--set data.tokens=327680 --set restartPolicy.backoffSeconds=2`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokensmith.core.errors import TokensmithError
from tokensmith.operator.spec import (
    KIND,
    LLMTrainingJobSpec,
    checkpoint_dir,
    effective_trainer_config,
    format_validation_error,
    parse_manifest,
)
from tokensmith.trainer.config import TrainerConfig

STATUS_FILE = "status.json"
JOB_FILE = "job.json"  # the job as run (after --set and --mount), beside status.json: plan --from-run


@dataclass(frozen=True)
class LocalJob:
    """A validated job, with every path rewritten for this machine."""

    name: str
    spec: LLMTrainingJobSpec
    source: Path
    mapped: tuple[tuple[str, str], ...] = ()  # (local path, the manifest's path) rewritten by --mount
    annotations: tuple[tuple[str, str], ...] = ()  # metadata.annotations (the plan's predictions: emit.py)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(checkpoint_dir(self.spec, self.name))

    @property
    def status_path(self) -> Path:
        return self.checkpoint_dir / STATUS_FILE

    @property
    def job_path(self) -> Path:
        return self.checkpoint_dir / JOB_FILE

    def document(self) -> dict[str, Any]:
        """The job as run, as a manifest (what `kubectl get llmjob -o yaml` shows, less the status)."""
        from tokensmith.operator.spec import build_manifest

        return build_manifest(self.name, self.spec, annotations=dict(self.annotations) or None)

    @property
    def run_dir(self) -> Path:
        """The runner's own files (process logs, report streams, evaluation outputs)."""
        return self.checkpoint_dir / "local"

    def trainer_config(self, skip_samples: tuple[tuple[int, int], ...] = ()) -> TrainerConfig:
        return effective_trainer_config(self.spec, self.name, skip_samples)


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise TokensmithError(f"{flag} {text!r}: expected KEY=VALUE")
    return key.strip(), value


def apply_set(spec: dict[str, Any], key: str, raw: str) -> None:
    """Set one dotted key of the spec dict (creating sections); the value is parsed as YAML."""
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = spec
    parts = key.removeprefix("spec.").split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TokensmithError(f"--set {key}: spec.{part} is not a section")
        node = child
    node[parts[-1]] = value


def _rewrite(path: str | None, mounts: list[tuple[str, str]]) -> str | None:
    if path is None:
        return None
    for inside, outside in mounts:
        inside = inside.rstrip("/") or "/"
        if path == inside or path.startswith(inside.rstrip("/") + "/"):
            rest = path[len(inside) :].lstrip("/")
            return str((Path(outside) / rest).resolve()) if rest else str(Path(outside).resolve())
    return path


def _map_paths(spec: dict[str, Any], mounts: list[tuple[str, str]], workdir: Path) -> list[tuple[str, str]]:
    mapped: list[tuple[str, str]] = []
    data = spec.get("data") or {}
    tdata = (spec.get("trainer") or {}).get("data") or {}
    for section, keys in (
        (data, ("trainPath", "validPath", "tokenizerPath", "train_path", "valid_path", "tokenizer_path")),
        (tdata, ("train_path", "valid_path", "tokenizer_path")),
    ):
        for key in keys:
            if isinstance(section.get(key), str):
                local = _rewrite(section[key], mounts)
                if local != section[key]:
                    mapped.append((str(local), section[key]))
                section[key] = local
        for source in section.get("sources") or []:  # a weighted mixture: every source's path
            if isinstance(source, dict) and isinstance(source.get("path"), str):
                local = _rewrite(source["path"], mounts)
                if local != source["path"]:
                    mapped.append((str(local), source["path"]))
                source["path"] = local
    ckpt = spec.setdefault("checkpoint", {})
    # The checkpoint volume is this directory; its mount path becomes the directory itself.
    ckpt["mountPath"] = str(workdir.resolve())
    ckpt.pop("mount_path", None)
    return mapped


def read_documents(path: Path) -> dict[str, Any]:
    """The LLMTrainingJob document of a (multi-document) YAML file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TokensmithError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise TokensmithError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from err
    jobs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(jobs) != 1:
        kinds = [d.get("kind") if isinstance(d, dict) else type(d).__name__ for d in docs]
        raise TokensmithError(
            f"{path} must hold exactly one document of kind {KIND}, found {len(jobs)} (kinds: {kinds})"
        )
    return jobs[0]


def load_job(
    path: str | Path,
    workdir: str | Path,
    mounts: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
) -> LocalJob:
    """Read, override, map and validate a manifest (TokensmithError, exit 2, on any problem)."""
    from pydantic import ValidationError

    source = Path(path)
    doc = read_documents(source)
    spec = dict(doc.get("spec") or {})
    for assignment in sets:
        key, raw = parse_assignment(assignment, "--set")
        apply_set(spec, key, raw)
    pairs = [parse_assignment(m, "--mount") for m in mounts]
    for inside, _ in pairs:
        if not inside.startswith("/"):
            raise TokensmithError(f"--mount {inside}: the container path must be absolute")
    mapped = _map_paths(spec, pairs, Path(workdir))
    try:
        metadata, model = parse_manifest({**doc, "spec": spec})
    except ValidationError as err:
        raise TokensmithError(f"{source}: {format_validation_error(err)}") from err
    except ValueError as err:
        raise TokensmithError(f"{source}: {err}") from err
    notes = metadata.get("annotations") or {}
    annotations = tuple((str(k), str(v)) for k, v in notes.items()) if isinstance(notes, dict) else ()
    return LocalJob(
        name=str(metadata["name"]), spec=model, source=source, mapped=tuple(mapped), annotations=annotations
    )


def check_local_paths(job: LocalJob) -> None:
    """Data the gang needs must exist here; say which `--mount` would fix it (exit 2)."""
    try:
        cfg = job.trainer_config()
    except ValueError:
        return  # reconcile's check_spec reports it as InvalidSpec, like the operator does
    sources = [(f"data.sources[{i}].path", s.path) for i, s in enumerate(cfg.data.sources)]
    for what, value in (
        ("data.trainPath", cfg.data.train_path),
        *sources,
        ("data.validPath", cfg.data.valid_path),
        ("data.tokenizerPath", cfg.data.tokenizer_path),
    ):
        if value and not Path(value).exists():
            inside = dict(job.mapped).get(value)
            if inside is not None:
                raise TokensmithError(
                    f"{what} {inside} is {value} here (--mount), which does not exist; point --mount at "
                    "the --out directory of `tokensmith curate`"
                )
            parent = str(Path(value).parent)
            raise TokensmithError(
                f"{what} {value} does not exist on this machine; map the container path to a local "
                f"directory with --mount {parent}=DIR (e.g. the --out of `tokensmith curate`)"
            )
