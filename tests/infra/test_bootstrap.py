"""infra/bootstrap under mocks: the state backend (versioned, encrypted, locked by the backend), a cloud key
as the secrets provider, and the infra identities, each trusting only its own environments; the policy pack
accepts all of it."""

from __future__ import annotations

import json

import pytest
from infra_helpers import bootstrap_settings, run_bootstrap
from infra_mocks import AWS_ACCOUNT_ID, ProgramRun
from test_programs import one, violations

from infra.components.azure import INFRA_ROLE_IDS, ROLE_IDS
from infra.policies import rules

CASES = [(cloud, stack) for cloud in ("aws", "azure") for stack in ("dev", "prod")]


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, str], ProgramRun]:
    return {case: run_bootstrap(bootstrap_settings(*case)) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_bootstrap_passes_the_policy_pack(runs, case) -> None:
    assert violations(runs[case]) == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_state_backend_and_secrets_key(runs, stack: str) -> None:
    run = runs["aws", stack]
    out = run.outputs
    assert out["backend_url"] == f"s3://{out['state_bucket']}"
    assert out["secrets_provider"] == f"awskms://alias/detops{stack}-pulumi-secrets?region=eu-west-1"
    bucket = out["state_bucket"]
    assert one(run, rules.AWS_VERSIONING).inputs == {"bucket": bucket, "versioningConfiguration": {"status": "Enabled"}}
    assert one(run, rules.AWS_KMS_KEY).inputs["enableKeyRotation"] is True
    provider = next(r for r in run.resources if r.type == "pulumi:providers:aws")
    assert json.loads(provider.inputs["allowedAccountIds"]) == [AWS_ACCOUNT_ID]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_infra_roles_trust_their_environments_only(runs, stack: str) -> None:
    run = runs["aws", stack]
    settings = bootstrap_settings("aws", stack)
    for purpose in ("infra_reader", "infra_deployer"):
        role = next(r for r in run.of_type(rules.AWS_ROLE) if r.name.endswith(purpose.replace("_", "-")))
        (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        if purpose == "infra_reader":  # read only, pull requests: its workflow file, any ref
            expected = settings.github.reader_patterns()
            assert expected and all(p.endswith("/.github/workflows/infra.yml@*") for p in expected)
            assert statement["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"] == expected
        else:
            expected = settings.github.subjects(purpose)
            assert expected and all(s.endswith("/.github/workflows/infra.yml@refs/heads/main") for s in expected)
            assert statement["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"] == expected
    reader = next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "infra-reader" in r.name)
    actions = {a for s in json.loads(reader.inputs["policy"])["Statement"] for a in s["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "kms:Decrypt", "kms:DescribeKey"}  # read only
    deployer = next(r for r in run.of_type(rules.AWS_ROLE_POLICY) if "infra-deployer" in r.name)
    iam = next(s for s in json.loads(deployer.inputs["policy"])["Statement"] if s["Sid"] == "ManageStackRoles")
    assert iam["Resource"] == [f"arn:aws:iam::{AWS_ACCOUNT_ID}:role/detops-{stack}-*"]


def test_one_github_oidc_provider_per_account_made_by_the_bootstrap(runs) -> None:
    """IAM holds one OIDC provider per URL in an account: the bootstrap creates it, the application stack
    of the same account looks it up (by its ARN) and trusts exactly it; the infra deployer, which runs the
    application stacks' `pulumi up`, may read it and nothing more."""
    from iam_eval import evaluate
    from infra_helpers import run_cloud, stack_settings

    bootstrap, app = runs["aws", "dev"], run_cloud("aws", stack_settings("aws", "dev"))
    providers = [*bootstrap.of_type(rules.AWS_OIDC_PROVIDER), *app.of_type(rules.AWS_OIDC_PROVIDER)]
    assert [p.name for p in providers] == ["detopsdev-github-oidc"]  # the bootstrap's, and only it
    arn = bootstrap.outputs["github_oidc_provider_arn"]
    assert arn == f"arn:aws:iam::{AWS_ACCOUNT_ID}:oidc-provider/token.actions.githubusercontent.com"
    assert "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider" in app.calls
    trusted = {json.loads(r.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]["Federated"]
               for r in app.of_type(rules.AWS_ROLE) if "sagemaker" not in r.name}
    assert trusted == {arn}
    deployer = json.loads(next(r for r in bootstrap.of_type(rules.AWS_ROLE_POLICY) if "infra-deployer" in r.name).inputs["policy"])
    assert evaluate([deployer], "iam:GetOpenIDConnectProvider", arn).allowed
    for action in ("iam:CreateOpenIDConnectProvider", "iam:DeleteOpenIDConnectProvider"):
        assert not evaluate([deployer], action, arn).allowed, action


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_azure_state_backend_and_infra_identities(runs, stack: str) -> None:
    run = runs["azure", stack]
    out = run.outputs
    account = one(run, rules.AZ_STORAGE)
    assert out["backend_url"] == f"azblob://pulumi-state?storage_account={account.outputs['name']}"
    assert out["secrets_provider"].startswith("azurekeyvault://") and out["secrets_provider"].endswith("/keys/pulumi-secrets")
    assert account.inputs["allowSharedKeyAccess"] is False
    assert one(run, rules.AZ_BLOB_SERVICE).inputs["isVersioningEnabled"] is True
    key = one(run, "azure-native:keyvault:Key")
    assert key.inputs["properties"]["kty"] == "RSA" and key.inputs["properties"]["keySize"] == 3072
    by_guid = {v: k for k, v in {**ROLE_IDS, **INFRA_ROLE_IDS}.items()}
    identities = {r.inputs["tags"]["detops-purpose"]: r for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity")}
    assert set(identities) == {"infra-reader", "infra-deployer"}
    grants = {
        purpose: {by_guid[a.inputs["roleDefinitionId"].rsplit("/", 1)[-1]] for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["principalId"] == identity.outputs["principalId"]}
        for purpose, identity in identities.items()
    }
    assert grants["infra-reader"] == {"Storage Blob Data Reader", "Key Vault Crypto User", "Reader"}
    assert grants["infra-deployer"] == {"Storage Blob Data Contributor", "Key Vault Crypto User", "Contributor", "Role Based Access Control Administrator"}
    rbac = next(a for a in run.of_type(rules.AZ_ROLE_ASSIGNMENT) if a.inputs["roleDefinitionId"].endswith(INFRA_ROLE_IDS["Role Based Access Control Administrator"]))
    assert rbac.inputs["conditionVersion"] == "2.0"
    assert INFRA_ROLE_IDS["Contributor"] not in rbac.inputs["condition"] and ROLE_IDS["AcrPull"] in rbac.inputs["condition"]
    groups = {r.inputs["resourceGroupName"] for r in run.of_type("azure-native:resources:ResourceGroup") if r.inputs.get("resourceGroupName")}
    assert groups == {f"{prefix}-rg" for prefix in bootstrap_settings("azure", stack).stack_name_prefixes}


def test_azure_infra_identities_are_federated_with_azure_devops_too() -> None:
    """.azure-pipelines/infra.yml signs in through the service connections detops-azureml-infra-reader /
    -infra-deployer: the bootstrap federates them with the infra identities (Entra issuer)."""
    from infra_helpers import with_settings
    from infra_mocks import TENANT_ID

    subjects = {"infra_reader": "/eid1/c/pub/t/a/a/sc/o/reader", "infra_deployer": "/eid1/c/pub/t/a/a/sc/o/deployer"}
    settings = with_settings(bootstrap_settings("azure", "dev"), azure_devops={
        "organization": "contoso", "project": "detops", "subjects": subjects,
        "service_connections": {"infra_reader": "detops-azureml-infra-reader", "infra_deployer": "detops-azureml-infra-deployer"},
    })
    run = run_bootstrap(settings)
    names = {r.inputs["tags"]["detops-purpose"]: r.outputs["name"] for r in run.of_type("azure-native:managedidentity:UserAssignedIdentity")}
    ado = {(c.inputs["resourceName"], c.inputs["issuer"], c.inputs["subject"]) for c in run.of_type(rules.AZ_FEDERATED)
           if "githubusercontent" not in c.inputs["issuer"]}
    issuer = f"https://login.microsoftonline.com/{TENANT_ID}/v2.0"
    assert ado == {(names["infra-reader"], issuer, subjects["infra_reader"]), (names["infra-deployer"], issuer, subjects["infra_deployer"])}
    assert violations(run) == []


def test_privileged_grants_are_refused_outside_the_bootstrap_shape() -> None:
    sub = "/subscriptions/00000000-1111-2222-3333-444444444444"
    role = f"{sub}/providers/Microsoft.Authorization/roleDefinitions/"
    rbac = role + INFRA_ROLE_IDS["Role Based Access Control Administrator"]
    check = lambda props: rules.check_resource(rules.AZ_ROLE_ASSIGNMENT, props)  # noqa: E731
    assert check({"roleDefinitionId": role + INFRA_ROLE_IDS["Contributor"], "scope": f"{sub}/resourceGroups/rg"}) == []
    assert check({"roleDefinitionId": role + INFRA_ROLE_IDS["Contributor"], "scope": sub})  # a subscription
    assert check({"roleDefinitionId": rbac, "scope": f"{sub}/resourceGroups/rg"})  # no ABAC condition
    assert check({"roleDefinitionId": rbac, "scope": f"{sub}/resourceGroups/rg",
                  "condition": "@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {x}"}) == []
    assert check({"roleDefinitionId": role + "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "scope": f"{sub}/resourceGroups/rg"})  # Owner


@pytest.mark.parametrize("case", CASES)
def test_infra_environments_get_their_identity_as_ci_variables(runs, case) -> None:
    from detops.contract import ci_variables

    settings = bootstrap_settings(*case)
    variables = ci_variables(runs[case].outputs)
    reader_env, deployer_env = settings.github.environments.infra_reader[0], settings.github.environments.infra_deployer[0]
    key = "AWS_ROLE_ARN" if case[0] == "aws" else "AZURE_CLIENT_ID"
    assert set(variables.environments) == {reader_env, deployer_env}
    assert variables.environments[reader_env][key] != variables.environments[deployer_env][key]
