"""The gate and the registry, run for real: `dvc repro`, git tags in GTO's convention, and
`mlcycle release` / `lineage` / `serve --version` in a temporary project; signed releases and
a service or `mlcycle predict` that trusts signed bundles only."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from mlcycle import registry, signing
from mlcycle.bundle import CHECKSUM_FILE, METADATA_FILE, load_bundle
from mlcycle.io import sha256_bytes
from tests.conftest import BIN, cli, free_port, git_commit, run, serving, set_params

NAME = "income-classifier"


def tags(project: Path) -> list[str]:
    return sorted(run(["git", "tag"], project).stdout.split())


@pytest.fixture(scope="module")
def released(small_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the small project whose model was released as v0.1.0, signed with a key
    made by `mlcycle keys generate` (:func:`signing_key`, beside the project; its public line
    in :func:`trusted_keys`), and put in prod."""
    project = tmp_path_factory.mktemp("released") / "project"
    shutil.copytree(small_project, project, symlinks=True)
    key, trusted = signing_key(project), trusted_keys(project)
    cli(project, "keys", "generate", "--out", key, "--name", "tests", "--trusted-keys", trusted)
    out = cli(project, "release", env={signing.SIGNING_KEY_ENV: str(key)})
    assert f"tags {NAME}@v0.1.0, {NAME}#prod#1)" in out.stdout, out.stdout
    return project


def signing_key(project: Path) -> Path:
    return project.parent / "keys" / "signing.pem"  # outside the project's work tree


def trusted_keys(project: Path) -> Path:
    return project.parent / "trusted.pub"


def copy_of(released: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(released, dest, symlinks=True)
    return dest


def test_release_tags_the_commit_in_gto_convention(released: Path) -> None:
    """Two tags in GTO's convention, and the signature's tag beside them (a release with a
    signing key): no DVC output changes, and it travels with `git push --tags`."""
    head = run(["git", "rev-parse", "HEAD"], released).stdout.strip()
    key_id = signing.key_id(signing.load_signing_key(signing_key(released)).public_key())
    sig_tag = f"mlcycle-sig/{NAME}@v0.1.0/{key_id}"
    assert tags(released) == [f"{NAME}#prod#1", f"{NAME}@v0.1.0", sig_tag]
    signed = run(["git", "rev-list", "-n", "1", sig_tag], released).stdout.strip()
    assert signed == head
    assert run(["dvc", "status", "package"], released).stdout.strip().endswith("up to date.")
    tagged = run(["git", "rev-list", "-n", "1", f"{NAME}@v0.1.0"], released).stdout.strip()
    assert tagged == head
    gate = json.loads((released / "metrics/gate.json").read_text())
    assert gate["passed"] is True and gate["champion_version"] is None


def test_lineage_matches_dvc_lock_and_the_commit(released: Path) -> None:
    out = cli(released, "lineage", "--json", process=True).stdout  # the console script
    lineage = json.loads(out)
    head = run(["git", "rev-parse", "HEAD"], released).stdout.strip()
    assert lineage["commit"] == head and lineage["model"] == f"{NAME}@v0.1.0"
    assert [(e["action"], e["stage"]) for e in lineage["stages"]] == [("assigned", "prod")]
    lock = yaml.safe_load((released / "dvc.lock").read_text())
    train_split = next(
        o for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/prepared/train.parquet"
    )
    assert lineage["data"]["data/prepared/train.parquet"] == train_split["md5"]
    assert (
        lineage["params"]["train"]
        == yaml.safe_load((released / "params.yaml").read_text())["train"]
    )
    assert lineage["metrics"] == json.loads((released / "metrics/evaluate.json").read_text())


def test_shadow_canary_promote_and_rollback_are_tags_with_who_and_why(
    released: Path, tmp_path: Path
) -> None:
    """A challenger released as canary (its share in the tag), replaced by a shadow release,
    promoted; then a rollback with nothing to roll back, and production's own rollback: every
    move a GTO tag, `mlcycle history` saying who did what, when and why."""
    p = copy_of(released, tmp_path)

    def release_next(*how: str) -> str:
        run(["git", "commit", "-q", "--allow-empty", "-m", "next"], p)
        return cli(p, "release", *how).stdout

    assert "--canary 150" in cli(p, "release", "--canary", "150", check=False).stderr
    out = release_next("--canary", "20")
    assert f"released {NAME}@v0.1.1 as canary, answering 20% of requests" in out, out
    assert registry.challenger(p, NAME) == registry.Challenger(
        registry.find_version(p, NAME, "v0.1.1"), "canary", 0.2
    )
    assert registry.production(p, NAME).version == "v0.1.0"
    out = release_next("--shadow")
    assert f"{NAME}@v0.1.1 is no longer canary" in out, out
    assert registry.challenger(p, NAME).version.version == "v0.1.2"
    out = cli(p, "promote", "--reason", "ahead by 0.02 ROC AUC").stdout
    assert f"promoted {NAME}@v0.1.2 to prod" in out
    assert registry.production(p, NAME).version == "v0.1.2"
    assert registry.challenger(p, NAME) is None
    failed = cli(p, "rollback", check=False)
    assert failed.returncode == 1 and "no shadow or canary version" in failed.stderr
    out = cli(p, "rollback", "--production", "--reason", "worse online").stdout
    assert registry.production(p, NAME).version == "v0.1.0", out
    moves = [
        (e["version"], e["action"], e["stage"])
        for e in json.loads(cli(p, "history", "--json").stdout)
        if e["action"] != "registered"
    ]
    assert moves == [
        ("v0.1.0", "assigned", "prod"),
        ("v0.1.1", "assigned", "canary"),
        ("v0.1.1", "unassigned", "canary"),
        ("v0.1.2", "assigned", "shadow"),
        ("v0.1.2", "assigned", "prod"),
        ("v0.1.2", "unassigned", "shadow"),
        ("v0.1.2", "unassigned", "prod"),
    ]
    text = cli(p, "history").stdout
    assert "mlcycle tests" in text and "ahead by 0.02 ROC AUC" in text and "worse online" in text


def test_a_gate_that_passes_against_the_champion(released: Path, tmp_path: Path) -> None:
    p = copy_of(released, tmp_path)
    run(["dvc", "repro", "-f", "-s", "gate"], p)
    gate = json.loads((p / "metrics/gate.json").read_text())
    assert gate["passed"] and gate["champion_version"] == "v0.1.0"
    assert any("production" in r for r in gate["reasons"])


def test_a_gate_failing_an_objective_leaves_production_alone(
    released: Path, tmp_path: Path
) -> None:
    p = copy_of(released, tmp_path)
    before = tags(p)
    set_params(p, {"objectives": {"minimum": 0.999}})
    proc = run(["dvc", "repro"], p, check=False)
    assert proc.returncode != 0
    assert "model rejected" in proc.stderr + proc.stdout and "roc_auc" in proc.stderr + proc.stdout
    # The failed gate leaves metrics/gate.json as it was; the rejection is in reports/.
    assert (p / "metrics/gate.json").read_bytes() == (released / "metrics/gate.json").read_bytes()
    gate = json.loads((p / "reports/gate.json").read_text())
    assert gate["passed"] is False
    git_commit(p, "rejected model")
    refused = cli(p, "release", check=False)
    assert refused.returncode != 0 and "was not packaged from its metrics/evaluate.json" in (
        refused.stderr
    )
    assert tags(p) == before


def test_a_gate_failing_against_a_better_champion(released: Path, tmp_path: Path) -> None:
    p = copy_of(released, tmp_path)
    before = tags(p)
    set_params(
        p,
        {
            # The objectives within reach of a weak model: the champion alone rejects it.
            "objectives": {"minimum": 0.5, "minimums": {"accuracy": 0.5}},
            "gate": {"tolerance": 0.0, "degenerate": "warn"},
            "train": {"xgb": {"max_depth": 1, "n_estimators": 3, "early_stopping_rounds": None}},
        },
    )
    proc = run(["dvc", "repro"], p, check=False)
    assert proc.returncode != 0
    gate = json.loads((p / "reports/gate.json").read_text())
    assert gate["passed"] is False and gate["champion_version"] == "v0.1.0"
    assert any(r.startswith("FAIL") and "production" in r for r in gate["reasons"])
    assert gate["champion_only"] is True
    assert tags(p) == before
    prod = cli(p, "lineage", "--json").stdout
    assert json.loads(prod)["model"] == f"{NAME}@v0.1.0"
    # The rejection names the way to retire a production model that is itself at fault (one
    # that learned from a leak scores what no honest model can): package this one with its
    # rejection recorded, commit, and release it with --force and a reason.
    said = proc.stderr + proc.stdout
    assert "gate.fail_on_reject: false" in said and "mlcycle release --force --reason" in said
    set_params(p, {"gate": {"fail_on_reject": False}})
    run(["dvc", "repro"], p)
    git_commit(p, "the honest model, rejected against a leaky production model")
    refused = cli(p, "release", check=False)
    assert refused.returncode != 0 and "`mlcycle release --force --reason TEXT`" in refused.stderr
    unexplained = cli(p, "release", "--force", check=False)
    assert unexplained.returncode != 0 and "--force needs --reason" in unexplained.stderr
    assert tags(p) == before
    why = "v0.1.0 learned from a leak (status is set after the outcome)"
    cli(p, "release", "--force", "--reason", why)
    assert json.loads(cli(p, "lineage", "--json").stdout)["model"] == f"{NAME}@v0.1.1"
    (moved,) = [e for e in registry.history(p, NAME) if e["tag"] == f"{NAME}#prod#2"]
    assert moved["version"] == "v0.1.1" and moved["message"].endswith(f": {why}")
    assert "past the gate's comparison with production (roc_auc " in moved["message"]
    assert why in cli(p, "history").stdout


def test_serve_and_predict_load_the_production_model_by_default(
    released: Path, tmp_path: Path
) -> None:
    test_split = released / "data/prepared/test.parquet"
    out = tmp_path / "scored.parquet"
    cli(released, "predict", str(test_split), str(out))
    named = tmp_path / "named.parquet"
    cli(released, "predict", str(test_split), str(named), "--version", "v0.1.0")
    assert out.read_bytes() == named.read_bytes()
    missing = cli(
        released, "predict", str(test_split), str(named), "--version", "v9.9.9", check=False
    )
    assert missing.returncode != 0 and "v9.9.9" in missing.stderr


def test_commands_fetching_one_version_at_once_each_get_all_of_it(
    released: Path, tmp_path: Path
) -> None:
    """Four fetches of a version not yet in the registry's cache, at the same time (a service
    starting while `mlcycle predict` runs): each gets the whole bundle, and nothing else is
    left in the cache's folder."""
    p = copy_of(released, tmp_path)
    shutil.rmtree(p / registry.CACHE_DIR, ignore_errors=True)
    version = registry.resolve(p, NAME, "v0.1.0")
    with ThreadPoolExecutor(4) as pool:
        fetched = list(pool.map(lambda _: registry.fetch_bundle(p, version), range(4)))
    dest = p / registry.CACHE_DIR / NAME / "v0.1.0"
    assert fetched == [dest] * 4
    assert load_bundle(dest).model.kind  # every file there, every checksum right
    assert [child.name for child in dest.parent.iterdir()] == ["v0.1.0"]


def test_a_version_is_fetched_without_dvc_on_path(released: Path, tmp_path: Path) -> None:
    """`.venv/bin/mlcycle predict --version` without the virtualenv activated: the registry
    runs the DVC installed beside mlcycle, not whatever `dvc` PATH finds (here none)."""
    p = copy_of(released, tmp_path)
    shutil.rmtree(p / registry.CACHE_DIR, ignore_errors=True)
    scored = tmp_path / "scored.parquet"
    test_split = str(p / "data/prepared/test.parquet")
    cli(p, "predict", test_split, str(scored), "--version", "v0.1.0",
        process=True, env={"PATH": os.defpath})  # fmt: skip
    assert scored.is_file() and (p / registry.CACHE_DIR / NAME / "v0.1.0").is_dir()


@pytest.mark.server
def test_status_says_when_the_service_and_production_disagree(
    released: Path, tmp_path: Path
) -> None:
    """`mlcycle status --service URL`: the model the service says it serves, beside the
    registry's production version; exit 3 when production moved and the service did not.
    `mlcycle release --service URL` moves both: it reloads the service to the new version."""
    p = copy_of(released, tmp_path)
    token = {"MLCYCLE_ADMIN_TOKEN": "release-admin-token-0123"}
    with serving(p, "--workers", "1", "--no-log", env=token) as served:
        agree = cli(p, "status", "--service", served.url)
        assert f"{served.url} serves {NAME}@v0.1.0" in agree.stdout
        assert "the production version" in agree.stdout
        (p / "NOTES.md").write_text("a change that is no model change\n")
        git_commit(p, "notes")
        cli(p, "release")  # production moves to v0.1.1; the service still serves v0.1.0
        moved = cli(p, "status", "--service", served.url, check=False)
        assert moved.returncode == 3, moved.stdout + moved.stderr
        assert f"DISAGREES with production {NAME}@v0.1.1" in moved.stdout

        (p / "NOTES.md").write_text("another change\n")
        git_commit(p, "more notes")
        before = tags(p)
        untokened = cli(p, "release", "--service", served.url, check=False)
        assert untokened.returncode == 1 and "MLCYCLE_ADMIN_TOKEN" in untokened.stderr
        assert tags(p) == before  # refused before anything was released
        both = cli(p, "release", "--service", served.url, env=token)
        assert f"{served.url} serves {NAME}@v0.1.2" in both.stdout, both.stdout + both.stderr
        assert cli(p, "status", "--service", served.url).returncode == 0
    gone = cli(p, "status", "--service", served.url, check=False)
    assert gone.returncode == 1 and "no answer from GET /health" in gone.stderr


def tampered_copy(bundle: Path, dest: Path) -> Path:
    """A copy of ``bundle`` with its decision threshold moved to 0.01 and SHA256SUMS written
    again to match: what whoever can write a bundle can do."""
    shutil.copytree(bundle, dest)
    edit_threshold(dest)
    return dest


def edit_threshold(bundle: Path) -> None:
    meta = json.loads((bundle / METADATA_FILE).read_text())
    (bundle / METADATA_FILE).write_text(json.dumps({**meta, "decision": 0.01}))
    lines = (bundle / CHECKSUM_FILE).read_text().splitlines()
    sums = "".join(
        f"{sha256_bytes((bundle / name).read_bytes())}  {name}\n"
        for name in (line.split("  ", 1)[1] for line in lines)
    )
    (bundle / CHECKSUM_FILE).write_text(sums)


def reload(url: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/admin/reload", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health") as resp:
        return json.loads(resp.read())


def test_predict_with_trusted_keys_refuses_an_edit_the_checksums_hide(
    released: Path, tmp_path: Path
) -> None:
    """The threshold edited and SHA256SUMS rewritten: without trusted keys `mlcycle predict`
    scores with the forged threshold; with them it refuses, naming the bundle."""
    p = copy_of(released, tmp_path)
    test_split, out = str(p / "data/prepared/test.parquet"), str(tmp_path / "scored.csv")
    trusted = {signing.TRUSTED_KEYS_ENV: str(trusted_keys(released))}
    cli(p, "predict", test_split, out, "--version", "v0.1.0", env=trusted)  # signed: scored
    fetched = registry.fetch_bundle(p, registry.resolve(p, NAME, "v0.1.0"))
    assert (fetched / signing.SIGNATURES_FILE).is_file()  # the tag's copy, with the bundle
    forged = tampered_copy(fetched, tmp_path / "forged")
    cli(p, "predict", test_split, out, "--bundle", forged)  # no keys: corruption checks only
    refused = cli(p, "predict", test_split, out, "--bundle", forged, check=False, env=trusted)
    assert refused.returncode == 1 and f"model bundle {forged}" in refused.stderr
    assert "the bundle was changed after it was signed" in refused.stderr


@pytest.mark.server
def test_a_service_with_trusted_keys_serves_signed_bundles_only(
    released: Path, tmp_path: Path
) -> None:
    """`serve` with trusted keys: a tampered bundle is refused before any worker starts; the
    signed production version serves; a reload to an unsigned release, or to a fetched copy
    edited with SHA256SUMS rewritten, is a 409 and the model in service keeps serving;
    `mlcycle keys sign` makes the unsigned release acceptable."""
    p = copy_of(released, tmp_path)
    token = "release-admin-token-0123"
    env = {signing.TRUSTED_KEYS_ENV: str(trusted_keys(released)), "MLCYCLE_ADMIN_TOKEN": token}
    fetched = registry.fetch_bundle(p, registry.resolve(p, NAME, "v0.1.0"))
    forged = tampered_copy(fetched, tmp_path / "forged")
    start = [str(BIN / "mlcycle"), "serve", "--bundle", str(forged), "--port", str(free_port())]
    refused = run(start, p, check=False, env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"model bundle {forged}" in refused.stderr and "Started server" not in refused.stderr
    assert "changed after it was signed" in refused.stderr

    with serving(p, "--workers", "1", "--no-log", env=env) as served:
        assert health(served.url)["model"]["version"] == "v0.1.0"
        (p / "NOTES.md").write_text("a change that is no model change\n")
        git_commit(p, "notes")
        unsigned = cli(p, "release")  # no signing key: released unsigned, and says so
        assert f"{NAME}@v0.1.1 is not signed" in unsigned.stdout
        status, body = reload(served.url, token)
        assert status == 409 and "not signed (no SHA256SUMS.sig)" in body["detail"], body
        assert health(served.url)["model"]["version"] == "v0.1.0"

        cli(p, "keys", "sign", "v0.1.1", env={signing.SIGNING_KEY_ENV: str(signing_key(released))})
        status, model = reload(served.url, token)
        assert status == 200 and model["version"] == "v0.1.1", model

        edit_threshold(p / registry.CACHE_DIR / NAME / "v0.1.1")  # the fetched copy, in place
        status, body = reload(served.url, token)
        assert status == 409 and "changed after it was signed" in body["detail"], body
        assert health(served.url)["model"] == model  # the signed model, its own threshold
        assert model["decision"] != 0.01
