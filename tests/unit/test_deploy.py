"""Offline checks of deploy/: syntax, key settings, and that every smcast command line in the
deployment files parses with the real CLI (click parses without running anything)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from configparser import ConfigParser
from itertools import takewhile
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from apscheduler.triggers.cron import CronTrigger

from smcast.cli import main
from smcast.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("smcast-*.*"))
SERVICES = [p for p in UNITS if p.suffix == ".service"]
SHELL_STOP = {">", ">>", "2>&1", "|", "||", "&&", ";"}


def parse_cli(args: list[str]) -> click.Context:
    """Parse ``smcast ARGS`` with the real CLI; return the subcommand's context."""
    ctx = main.make_context("smcast", list(args))
    name, cmd, rest = main.resolve_command(ctx, list(args))
    assert cmd is not None and name is not None  # resolve_command raises on unknown commands
    return cmd.make_context(name, rest, parent=ctx)


def smcast_args(tokens: list[str]) -> list[str] | None:
    """The arguments after the ``smcast`` executable up to a shell operator; None without one."""
    exe = [i for i, tok in enumerate(tokens) if tok == "smcast" or tok.endswith("/bin/smcast")]
    return list(takewhile(lambda t: t not in SHELL_STOP, tokens[exe[0] + 1:])) if exe else None


def unit(path: Path) -> ConfigParser:
    """A systemd unit file as a ConfigParser (keys case-sensitive, no interpolation)."""
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def cron_jobs() -> list[tuple[list[str], str]]:
    """The crontab's jobs as (five time fields, command); comments and variables skipped."""
    lines = [ln.split(None, 5) for ln in (DEPLOY / "crontab").read_text().splitlines()
             if ln.strip() and not re.match(r"\s*(#|[A-Za-z_]\w*\s*=)", ln)]
    return [(parts[:5], parts[5] if len(parts) > 5 else "") for parts in lines]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, comments dropped, continuations joined."""
    text = re.sub(r"(?m)^\s*#.*\n", "", (DEPLOY / "Dockerfile").read_text())
    lines = re.sub(r"\\\n", " ", text).splitlines()
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1].strip()) for ln in lines if ln.strip()]


def exec_form(value: str) -> list[str]:
    """Arguments of a Dockerfile JSON (exec) form or shell form."""
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def k8s() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All documents of the Kubernetes YAML and the CronJob's pod spec."""
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()))
    cron = next(d for d in docs if d["kind"] == "CronJob")
    return docs, cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def command_lines() -> dict[str, list[str]]:
    """Every smcast invocation in deploy/, as the arguments after ``smcast``."""
    found = {f"crontab {i}": smcast_args(shlex.split(cmd.replace("\\%", "%")))
             for i, (_, cmd) in enumerate(cron_jobs())}
    found |= {p.name: smcast_args(shlex.split(unit(p)["Service"]["ExecStart"])) for p in SERVICES}
    found["kubernetes"] = list(k8s()[1]["containers"][0]["args"])
    ins = dict(dockerfile())
    found["docker CMD"] = smcast_args(exec_form(ins["ENTRYPOINT"]) + exec_form(ins["CMD"]))
    found["docker HEALTHCHECK"] = smcast_args(shlex.split(ins["HEALTHCHECK"].split(" CMD ")[1]))
    return {where: args for where, args in found.items() if args is not None}


COMMANDS = command_lines()


def test_every_smcast_command_line_is_found() -> None:
    assert sorted(a[0] for a in COMMANDS.values()) == 3 * ["forecast"] + 2 * ["schedule"] + [
        "status"]


@pytest.mark.parametrize("where", sorted(COMMANDS))
def test_command_line_parses_with_the_real_cli(where: str) -> None:
    ctx = parse_cli(COMMANDS[where])
    if ctx.info_name == "forecast":  # the daily job
        assert ctx.params["issue_date"] == "today"
        assert {"--catch-up", "--verify"} <= set(COMMANDS[where])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Syntax errors are only warnings for systemd-analyze: any line on our files fails."""
    exe = shutil.which("smcast", path=Path(sys.executable).parent) or shutil.which("smcast")
    assert exe, "the smcast entry point of this environment"
    for path in UNITS:
        text = re.sub(r"^ExecStart=\S+", f"ExecStart={exe}", path.read_text(), flags=re.MULTILINE)
        (tmp_path / path.name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *(p.name for p in UNITS)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "smcast-" not in out, out  # no line about our files


def test_systemd_key_directives() -> None:
    job = unit(DEPLOY / "systemd" / "smcast-forecast.service")["Service"]
    assert job["Type"] == "oneshot" and job["User"] == "smcast"
    assert {"7", "75"} <= set(job["SuccessExitStatus"].split())
    assert "SMCAST_TRIGGER=systemd" in job["Environment"].split()
    assert job["EnvironmentFile"].lstrip("-") == "/etc/smcast/cds.env"
    assert job["NoNewPrivileges"] == "yes" and job["ProtectSystem"] == "strict"
    timer = unit(DEPLOY / "systemd" / "smcast-forecast.timer")["Timer"]
    assert timer["Persistent"] == "true" and timer["OnCalendar"] == "*-*-* 06:30:00 UTC"
    daemon = unit(DEPLOY / "systemd" / "smcast-schedule.service")["Service"]
    assert daemon["Type"] == "simple" and daemon["Restart"] == "on-failure"
    assert daemon["KillSignal"] == "SIGTERM" and int(daemon["TimeoutStopSec"]) >= 90


def test_crontab() -> None:
    variables = set((DEPLOY / "crontab").read_text().splitlines())
    assert {"SMCAST_TRIGGER=cron", "SMCAST_CONFIG=/etc/smcast/smcast.yaml"} <= variables
    for fields, command in (jobs := cron_jobs()):
        CronTrigger.from_crontab(" ".join(fields), timezone="UTC")  # raises when invalid
        assert command and not re.search(r"(?<!\\)%", command), "unescaped % in " + command
    (time, daily), = [(f, c) for f, c in jobs if smcast_args(shlex.split(c.replace("\\%", "%")))]
    assert time == ["30", "6", "*", "*", "*"] and daily.startswith("flock -n ") and ">>" in daily


def test_kubernetes_cronjob() -> None:
    docs, pod = k8s()
    (spec,) = [d["spec"] for d in docs if d["kind"] == "CronJob" and d["apiVersion"] == "batch/v1"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "Etc/UTC"
    CronTrigger.from_crontab(spec["schedule"], timezone="UTC")
    assert spec["startingDeadlineSeconds"] > 0 and spec["jobTemplate"]["spec"]["backoffLimit"] <= 3
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsUser"] == 10001
    (box,) = pod["containers"]
    assert "command" not in box and box["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in box["env"]}
    assert env["CDSAPI_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "CDSAPI_KEY"
    assert env["SMCAST_TRIGGER"]["value"] == "kubernetes"
    volumes = {m["mountPath"]: v for v in pod["volumes"] for m in box["volumeMounts"]
               if m["name"] == v["name"]}
    assert "configMap" in volumes["/etc/smcast"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    used = {v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
    assert used - {None} <= claims and len(used - {None}) == 2


def test_dockerfile() -> None:
    ins = dockerfile()
    for base in [args.split()[0] for name, args in ins if name == "FROM"]:
        m = re.fullmatch(r"python:3\.(\d+)(\.\d+)?-slim(-\w+)?", base)
        assert m and int(m[1]) >= 11, base
    last = dict(ins)  # the last of each instruction
    assert last["USER"].split(":")[0] in {"smcast", "10001"}
    assert exec_form(last["ENTRYPOINT"]) == ["smcast"] and "smcast status" in last["HEALTHCHECK"]
    env = dict(tok.split("=", 1) for name, arg in ins if name == "ENV" for tok in shlex.split(arg))
    assert env["SMCAST_CONFIG"] == "/etc/smcast/smcast.yaml" and env["SMCAST_TRIGGER"]
    assert any(args.endswith("config/operational-cds.yaml /etc/smcast/smcast.yaml")
               for name, args in ins if name == "COPY")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "smcast-data", "*.egg-info"} <= set(ignored) and "**/.venv" in ignored


def test_data_and_forecast_dirs_are_persistent_and_writable() -> None:
    """The config's data and forecast directories lie on volumes and in ReadWritePaths."""
    cfg = load_config(ROOT / "config" / "operational-cds.yaml", environ={})
    places = {"docker": exec_form(dict(dockerfile())["VOLUME"]),
              "kubernetes": [m["mountPath"] for m in k8s()[1]["containers"][0]["volumeMounts"]]}
    places |= {p.name: unit(p)["Service"]["ReadWritePaths"].split() for p in SERVICES}
    for name, roots in places.items():
        for where in cfg.data_dir, cfg.output_dir, Path("/srv/smcast/forecasts"):
            assert any(where.is_relative_to(root) for root in roots), (name, where)


def test_readme_names_every_deploy_file() -> None:
    files = [p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()]
    for rel in [*files, ".dockerignore"]:
        assert rel == "README.md" or rel in (DEPLOY / "README.md").read_text(), rel
