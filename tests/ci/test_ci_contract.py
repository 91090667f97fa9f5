"""The CI contract over every workflow and pipeline (issue 10, items 3, 5, 6), and the checker
failing on planted mismatches (the AZUREML_RESOURCE_GROUP of the first real deploy among them)."""

from __future__ import annotations

import copy

import pytest
from ci_contract import azure_problems, github_problems
from cicd_helpers import AZURE_DIR, GITHUB_DIR, load_yaml

#: Which identity each cloud job runs as.
GITHUB_IDENTITY = {
    "train": {"train": "trainer", "wait": "trainer", "evaluate": "trainer", "register": "registrar"},
    "images": {"build": "trainer"},
    "release": {"staging": "deployer", "production": "deployer"},
    "infra": {"preview": "infra-reader", "up": "infra-deployer"},
    "ci": {},
}
AZURE_IDENTITY = {
    "train": {"Images/Build": "trainer", "Train/Submit": "trainer", "Train/Wait": "trainer",
              "Train/Evaluate": "trainer", "Register/Register": "registrar"},
    "release": {"Images/Build": "trainer", "Staging/Deploy": "deployer", "Production/Deploy": "deployer"},
    "infra": {"Preview/Preview": "infra-reader", "Up/Up": "infra-deployer"},
    "ci": {},
}


def _gh(name):
    return load_yaml(GITHUB_DIR / f"{name}.yml")


def _az(name):
    return load_yaml(AZURE_DIR / f"{name}.yml")


@pytest.mark.parametrize("name", sorted(GITHUB_IDENTITY))
def test_github_workflow_keeps_the_contract(name):
    assert github_problems(_gh(name), name, GITHUB_IDENTITY[name]) == []


@pytest.mark.parametrize("name", sorted(AZURE_IDENTITY))
def test_azure_pipeline_keeps_the_contract(name):
    assert azure_problems(_az(name), name, AZURE_IDENTITY[name], AZURE_DIR) == []


def test_every_workflow_file_is_covered():
    assert {p.stem for p in GITHUB_DIR.glob("*.yml")} == set(GITHUB_IDENTITY)
    assert {p.stem for p in AZURE_DIR.glob("*.yml")} == set(AZURE_IDENTITY)


# -- planted mismatches: the checker must catch each ------------------------------------------------


def test_planted_azureml_resource_group_fails():
    doc = load_yaml(GITHUB_DIR / "train.yml")
    doc["env"]["AZUREML_RESOURCE_GROUP"] = "${{ vars.AZUREML_RESOURCE_GROUP }}"
    del doc["env"]["AZURE_RESOURCE_GROUP"]
    problems = "\n".join(github_problems(doc, "train", GITHUB_IDENTITY["train"]))
    assert "AZUREML_RESOURCE_GROUP is not a setting" in problems
    assert "submit configs/bccd.yaml --backend ${DETOPS_BACKEND} --no-wait` (azureml) needs AZURE_RESOURCE_GROUP" in problems


def test_planted_renamed_variable_fails():
    doc = _gh("release")
    doc["env"]["AZUREML_WORKSPACE"] = "${{ vars.AML_WORKSPACE }}"
    assert any("reads vars.AML_WORKSPACE" in p for p in github_problems(doc, "release", GITHUB_IDENTITY["release"]))


def test_planted_missing_image_handoff_fails_on_both_systems():
    doc = _gh("train")
    del doc["jobs"]["train"]["env"]["DETOPS_TRAINING_IMAGE"]
    assert any("needs DETOPS_TRAINING_IMAGE" in p for p in github_problems(doc, "train", GITHUB_IDENTITY["train"]))
    az = _az("train")
    train = next(s for s in az["stages"] if s["stage"] == "Train")
    train["variables"] = [v for v in train["variables"] if v.get("name") != "DETOPS_TRAINING_IMAGE"]
    assert any("needs DETOPS_TRAINING_IMAGE" in p for p in azure_problems(az, "train", AZURE_IDENTITY["train"], AZURE_DIR))


def test_planted_wrong_identity_fails_on_both_systems():
    doc = _gh("train")
    doc["jobs"]["register"]["environment"] = "training"
    assert any("register: logs in as trainer" in p for p in github_problems(doc, "train", GITHUB_IDENTITY["train"]))
    az = _az("train")
    reg = next(s for s in az["stages"] if s["stage"] == "Register")
    reg["jobs"][0]["steps"][1]["parameters"]["identity"] = "trainer"
    problems = azure_problems(az, "train", AZURE_IDENTITY["train"], AZURE_DIR)
    assert any("runs as trainer, expected registrar" in p for p in problems)


def test_planted_write_identity_on_a_pull_request_fails():
    doc = _gh("infra")
    doc["jobs"]["preview"]["environment"] = "infra-production"
    assert any("may run on a pull request with the write identity infra-deployer" in p
               for p in github_problems(doc, "infra", {}))
    az = _az("infra")
    preview = next(s for s in az["stages"] if s["stage"] == "Preview")
    preview["jobs"][0]["steps"][1]["parameters"]["identity"] = "infra-deployer"
    assert any("pull request with the write identity infra-deployer" in p for p in azure_problems(az, "infra", {}, AZURE_DIR))


def test_planted_missing_policy_pack_fails_on_both_systems():
    doc = _gh("infra")
    for job in doc["jobs"].values():
        for step in job["steps"]:
            (step.get("with") or {}).pop("policyPacks", None)
    assert len([p for p in github_problems(doc, "infra", {}) if "policy pack" in p]) == 2
    az = copy.deepcopy(_az("infra"))
    text = str(az).replace("--policy-pack", "--no-policy")
    assert "--policy-pack" not in text
    for stage in az["stages"]:
        for job in stage["jobs"]:
            for step in job.get("steps") or job["strategy"]["runOnce"]["deploy"]["steps"]:
                params = step.get("parameters") or {}
                if "script" in params:
                    params["script"] = params["script"].replace("--policy-pack", "--no-policy")
    assert len([p for p in azure_problems(az, "infra", {}, AZURE_DIR) if "policy-pack" in p]) == 2


def test_planted_identity_variable_at_workflow_level_fails():
    doc = _gh("train")
    doc["env"]["AZURE_CLIENT_ID"] = "${{ vars.AZURE_CLIENT_ID }}"
    assert any("AZURE_CLIENT_ID is per identity" in p for p in github_problems(doc, "train", GITHUB_IDENTITY["train"]))
