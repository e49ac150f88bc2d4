"""images/build.py's decisions, as pure functions: the engine, the tags the chart pulls, the bases,
and how the host's pip configuration reaches a build without entering a layer. No engine needed:
these run in `make test`."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, build

PIP_CONFIG_LIST = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='https://mirror.example/simple file:///opt/pypi/simple'
global.find-links='/opt/wheels'
:env:.find-links='/opt/wheels /nonexistent/wheels'
:env:.default-timeout='180'
install.no-compile='1'
"""


@pytest.mark.parametrize(
    ("docker", "podman", "requested", "expected"),
    [
        (True, True, None, "docker"),
        (False, True, None, "podman"),
        (False, False, None, None),
        (True, True, "podman", "podman"),
        (True, False, "podman", None),
    ],
)
def test_docker_first_then_podman(
    docker: bool, podman: bool, requested: str | None, expected: str | None
) -> None:
    assert build.choose_engine(docker, podman, requested) == expected


def test_chart_default_images_are_the_tags_make_images_produces() -> None:
    chart = REPO / "charts" / "tokensmith"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    version = build.project_version((REPO / "pyproject.toml").read_text())

    def ref(spec: dict) -> str:
        return f"{spec['repository']}:{spec['tag'] or app_version}"

    pulled = {"operator": ref(values["image"])}
    pulled |= {name: ref(values["defaultImages"][name]) for name in ("trainer", "evaluator")}
    assert pulled == {name: build.image_ref(name, version) for name in build.IMAGES}


def test_local_bases_replace_every_upstream_base() -> None:
    bases = build.local_bases("2.13.0")
    assert build.base_args("operator", bases) == {"BASE_IMAGE": bases["python"]}
    assert build.base_args("evaluator", bases) == {"BASE_IMAGE": bases["torch"]}
    trainer = build.base_args("trainer", bases)
    assert trainer["BUILD_IMAGE"] == trainer["RUNTIME_IMAGE"] == bases["torch"]
    assert trainer["DEEPSPEED_AOT_OPS"] == "0"  # no nvcc in a CPU base
    assert build.base_args("trainer", None) == {}
    for image in build.IMAGES:  # every argument set is one the Dockerfile declares
        text = (REPO / "images" / image / "Dockerfile").read_text()
        for key in build.base_args(image, bases):
            assert f"ARG {key}" in text, (image, key)


def test_pip_config_list_merges_files_then_environment() -> None:
    settings = build.parse_pip_config_list(PIP_CONFIG_LIST)
    assert settings["global"]["find-links"] == "/opt/wheels /nonexistent/wheels"  # PIP_FIND_LINKS wins
    assert settings["install"] == {"no-compile": "1"}


def test_pip_plan_serves_local_paths_and_moves_the_ca(tmp_path: Path) -> None:
    wheels, index, constraints = tmp_path / "wheels", tmp_path / "pypi" / "simple", tmp_path / "c.txt"
    wheels.mkdir()
    index.mkdir(parents=True)
    constraints.write_text("torch<=2.14\n")
    settings = {
        "global": {
            "cert": "/etc/ssl/certs/ca-certificates.crt",
            "find-links": f"{wheels} /nonexistent/wheels",
            "extra-index-url": f"https://mirror.example/simple file://{index}",
            "constraint": str(constraints),
        }
    }
    url = "http://127.0.0.1:4321"
    plan = build.plan_pip(settings, url)
    assert plan.ca == "/etc/ssl/certs/ca-certificates.crt"
    assert plan.conf.splitlines() == [
        "[global]",
        "cert = /run/secrets/ca.crt",
        f"find-links = {url}{wheels}/",
        f"extra-index-url = https://mirror.example/simple {url}{index}/",
        f"constraint = {url}{constraints}",
        "trusted-host = 127.0.0.1",
    ]
    # a local index links to files beside it (../../files/...): its repository is served
    assert plan.served == (str(wheels), str(index.parent), str(constraints))
    assert plan.dropped == ("global.find-links=/nonexistent/wheels",)
    args = build.pip_build_args("podman", plan, "/tmp/x/pip.conf", {"nofile": 1024}, "runc")
    assert args[:4] == ["--secret", "id=pip.conf,src=/tmp/x/pip.conf", "--secret", "id=ca.crt,src=" + plan.ca]
    assert "--volume" not in args and args[4:6] == ["--network", "host"]
    assert "nofile=1024:1024" in args and args[-2:] == ["--runtime", "runc"]


def test_only_the_served_paths_are_readable(tmp_path: Path) -> None:
    (tmp_path / "wheels").mkdir()
    (tmp_path / "secret").write_text("x")
    roots = (str(tmp_path / "wheels"),)
    assert build.is_served(str(tmp_path / "wheels" / "torch.whl"), roots)
    assert build.is_served(str(tmp_path / "wheels"), roots)
    assert not build.is_served(str(tmp_path / "wheels" / ".." / "secret"), roots)
    assert not build.is_served(str(tmp_path / "wheels-other"), roots)


def test_pip_plan_without_a_server_drops_local_paths(tmp_path: Path) -> None:
    plan = build.plan_pip({"global": {"find-links": str(tmp_path), "timeout": "60"}}, None)
    assert plan.served == () and plan.dropped == (f"global.find-links={tmp_path}",)
    assert plan.conf == "[global]\ntimeout = 60\n"
    assert build.pip_build_args("docker", plan, "/p", {"nofile": 1024}) == ["--secret", "id=pip.conf,src=/p"]


@pytest.mark.parametrize(
    ("nofile", "nproc", "pid_max", "expected"),
    [
        (20000, 96365, 32768, {"nofile": 20000, "nproc": 32768}),  # this machine: runc refuses > pid_max
        (1048576, 4096, 4194304, {"nofile": 1048576, "nproc": 4096}),
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, 32768, {"nproc": 32768}),
    ],
)
def test_container_limits_never_exceed_the_hosts(
    nofile: int, nproc: int, pid_max: int, expected: dict
) -> None:
    assert build.container_limits(nofile, nproc, pid_max) == expected


def test_torch_index_is_skipped_when_a_find_links_dir_has_the_cpu_wheel(tmp_path: Path) -> None:
    settings = {"global": {"find-links": str(tmp_path)}}
    assert build.torch_index_url(settings, "2.13.0") == "https://download.pytorch.org/whl/cpu"
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").touch()
    assert build.torch_index_url(settings, "2.13.0") == ""


def test_upstream_defaults_are_read_from_the_dockerfiles() -> None:
    for image in build.IMAGES:
        defaults = build.dockerfile_defaults((REPO / "images" / image / "Dockerfile").read_text())
        refs = [v for k, v in defaults.items() if k.endswith("_IMAGE")]
        assert refs, image


def test_changing_labels_are_also_given_on_the_command_line() -> None:
    args = {
        "VERSION": "0.1.0",
        "REVISION": "abc",
        "CREATED": "2026-01-01T00:00:00Z",
        "BASE_DIGEST": "sha256:1",
    }
    labels = build.dynamic_labels(args, "localhost/base:1")
    assert labels["org.opencontainers.image.revision"] == "abc"
    assert labels["org.opencontainers.image.base.name"] == "localhost/base:1"
    assert labels["org.opencontainers.image.base.digest"] == "sha256:1"
