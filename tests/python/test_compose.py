"""docker-compose.yml, checked as far as an engine-less machine allows: the file is valid for
`docker-compose config`, and every botmeter container runs a command line and environment the
botmeter binary accepts (the same binary the test suite runs)."""

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# The binary `cargo build` made: under CARGO_TARGET_DIR when it is set (relative to the repository).
BINARY = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "botmeter"


def services():
    return yaml.safe_load(COMPOSE.read_text())["services"]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="apt-get install docker-compose")
def test_compose_file_is_valid():
    for args in (["config", "-q"], ["--profile", "simulate", "config", "-q"]):
        result = subprocess.run(["docker-compose", "-f", str(COMPOSE), *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def botmeter_services():
    return {name: s for name, s in services().items() if s.get("image", "").startswith("botmeter")}


def run_help(*args):
    result = subprocess.run([str(BINARY), *args, "--help"], capture_output=True, text=True,
                            env={**os.environ, "BOTMETER_LOG": "error"})
    return result


def test_every_botmeter_service_runs_a_command_the_binary_accepts():
    assert BINARY.exists(), "build the binary first (cargo build)"
    found = botmeter_services()
    assert set(found) >= {"migrate", "run", "serve", "simulate"}
    known = run_help().stdout
    for name, service in found.items():
        command = service["command"]
        # --help after the real flags: clap rejects unknown flags before printing help.
        result = run_help(*command)
        assert result.returncode == 0, f"{name}: {command}: {result.stderr}"
        known += result.stdout
    # Every variable set for the containers is a setting of some botmeter command (no typos).
    for name, service in found.items():
        for variable in service["environment"]:
            assert variable in known, f"{name}: {variable} is not a setting of any botmeter command"
