"""Data versions: our hash of a site folder is DVC's, and the demo's data stage goes to an S3
remote (the real local server) and comes back with ``dvc pull`` in another checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from site_tasks.federation import StorageConfig
from site_tasks.site.versioning import dvc_dir_hash
from site_tasks.storage import S3Store

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def test_dvc_dir_hash_is_the_md5_of_the_sorted_file_listing(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.csv").write_text("x00,label\n1,0\n2,1\n")
    (tmp_path / "b" / "c.csv").write_text("x00,label\n3,1\n")
    first = dvc_dir_hash(tmp_path)
    assert first.endswith(".dir") and len(first) == 36
    (tmp_path / "a.csv").write_text("x00,label\n1,0\n2,0\n")  # one cell changed
    assert dvc_dir_hash(tmp_path) != first


def dvc(project: Path, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def project(root: Path) -> Path:
    """A checkout of what git holds for the data stage: dvc.yaml, params.yaml, .dvc/config and
    the packages holding the stage's dependencies (no data, no cache)."""
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    for package in ("fedmap", "site_tasks"):  # the stage's deps live in them
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return root


def test_demo_data_is_pushed_to_s3_and_pulled_into_another_checkout(
    tmp_path: Path, s3_server: Any
) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "DVC_NO_ANALYTICS": "1",
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
    }
    bucket = StorageConfig(
        "fedmap-dvc",
        s3_server.url,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
    )
    S3Store(bucket).ensure_bucket()
    # the committed remote is the local server on its default port; point this test at its own
    a = project(tmp_path / "a")
    dvc(a, "remote", "modify", "--local", "local", "endpointurl", s3_server.url, env=env)
    dvc(a, "repro", "demo_data", env=env)
    dvc(a, "push", "demo_data", env=env)
    lock = yaml.safe_load((a / "dvc.lock").read_text())["stages"]["demo_data"]["outs"]
    versions = {o["path"]: o["md5"] for o in lock}
    assert len(versions) == 15  # 14 sites and the held-back tier-3 outcomes
    for path, md5 in versions.items():
        assert dvc_dir_hash(a / path) == md5  # what a site reports is what DVC recorded

    b = project(tmp_path / "b")  # another clone: the committed files plus dvc.lock
    shutil.copy(a / "dvc.lock", b / "dvc.lock")
    dvc(b, "remote", "modify", "--local", "local", "endpointurl", s3_server.url, env=env)
    assert not (b / "data").exists()
    dvc(b, "pull", "demo_data", env=env)
    for path, md5 in versions.items():
        assert dvc_dir_hash(b / path) == md5
    assert (b / "data/demo/site-07/score.csv").read_bytes() == (
        a / "data/demo/site-07/score.csv"
    ).read_bytes()


@pytest.mark.parametrize("name", ["dvc.yaml"])
def test_every_demo_site_is_its_own_dvc_output(name: str) -> None:
    from site_tasks.local.demo_data import TIERS

    stage = yaml.safe_load((REPO / name).read_text())["stages"]["demo_data"]
    assert set(stage["outs"]) == {f"data/demo/{s}" for s in TIERS} | {"data/demo/truth"}
