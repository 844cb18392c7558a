"""The cluster files under deploy/: the command each one runs is one the CLI accepts.

The SLURM script's ``#SBATCH`` lines and its ``srun thaw ...`` line, and the Kubernetes
manifest's Job (indexed) and proxy Deployment, are parsed; their thaw commands go through the
real argument parser, with the environment variables they use filled in.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from thaw.search._cli import build_parser, cmd_run
from thaw.search._proxy import cmd_storage_proxy, parse_grpc_url

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "deploy" / "slurm" / "thaw-workers.sbatch"
MANIFEST = REPO / "deploy" / "kubernetes" / "thaw-workers.yaml"
SAMPLE_ENV = {
    "THAW_STORAGE": "grpc://proxy-host:13000",
    "STUDY_FILE": "studies/cluster.yaml",
    "DATABASE_URL": "postgresql://thaw:pw@db/thaw",
}


def parse_thaw(argv: list[str]) -> argparse.Namespace:
    """The real parser on a thaw command line (``thaw`` first); argparse exits on a bad one."""
    assert argv[0] == "thaw", argv
    return build_parser().parse_args(argv[1:])


def _expand_shell(word: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return SAMPLE_ENV[name]

    return re.sub(r"\$\{(\w+)[^}]*\}|\$(\w+)", value, word)


def sbatch_options() -> dict[str, str]:
    options: dict[str, str] = {}
    for line in SBATCH.read_text(encoding="utf-8").splitlines():
        if line.startswith("#SBATCH "):
            key, _, val = line[len("#SBATCH ") :].strip().partition("=")
            options[key] = val
    return options


def sbatch_command() -> list[str]:
    lines = [
        line for line in SBATCH.read_text(encoding="utf-8").splitlines() if line.startswith("srun ")
    ]
    assert len(lines) == 1, lines
    words = [_expand_shell(w) for w in shlex.split(lines[0])]
    return words[1:]  # after srun


def test_the_slurm_script_is_an_array_of_one_gpu_tasks() -> None:
    options = sbatch_options()
    assert re.fullmatch(r"\d+-\d+(%\d+)?", options["--array"]), options
    assert options["--gres"] == "gpu:1"
    assert options["--ntasks"] == "1"
    text = SBATCH.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/bash\n")
    # sbatch reads #SBATCH lines only before the first command
    first_command = next(
        i for i, line in enumerate(text.splitlines()) if line.strip() and not line.startswith("#")
    )
    last_option = max(i for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH "))
    assert last_option < first_command


def test_the_slurm_script_runs_a_thaw_worker_the_cli_accepts() -> None:
    args = parse_thaw(sbatch_command())
    assert args.func is cmd_run
    assert args.storage == SAMPLE_ENV["THAW_STORAGE"]
    assert args.no_progress
    assert args.study_file == SAMPLE_ENV["STUDY_FILE"]


def _documents() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]
    return {d["kind"]: d for d in docs}


def _k8s_command(container: dict[str, Any]) -> list[str]:
    env = {e["name"]: e.get("value", SAMPLE_ENV.get(e["name"], "")) for e in container["env"]}
    # Kubernetes expands $(VAR) from the container's env in command and args.
    return [
        re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], word)
        for word in [*container["command"], *container.get("args", [])]
    ]


def test_the_kubernetes_job_is_indexed_with_n_parallel_workers() -> None:
    job = _documents()["Job"]
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_kubernetes_workers_and_proxy_run_commands_the_cli_accepts() -> None:
    docs = _documents()
    (worker,) = docs["Job"]["spec"]["template"]["spec"]["containers"]
    args = parse_thaw(_k8s_command(worker))
    assert args.func is cmd_run
    host, port = parse_grpc_url(args.storage)

    (proxy,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    proxy_args = parse_thaw(_k8s_command(proxy))
    assert proxy_args.func is cmd_storage_proxy
    assert proxy_args.storage == SAMPLE_ENV["DATABASE_URL"]  # from the secret, not written here
    assert proxy_args.host == "0.0.0.0"  # inside the pod; the Service is what workers reach
    service = docs["Service"]
    assert host == service["metadata"]["name"]
    assert port == service["spec"]["ports"][0]["port"] == proxy_args.port
    assert proxy["ports"][0]["containerPort"] == proxy_args.port


@pytest.mark.parametrize(
    "argv",
    [
        ["thaw", "run", "s.yaml", "--storage", "x", "--no-such-flag"],
        ["thaw", "storage-proxy"],  # --storage is required
        ["thaw", "no-such-command"],
    ],
)
def test_the_check_refuses_a_command_the_cli_does_not_know(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_thaw(argv)
