"""The bootstrap of one environment (once per account or subscription, by an administrator): where the
application stacks keep their state and encrypt their secrets, and who may preview and deploy them.

- AWS: a versioned, KMS-encrypted, TLS-only S3 bucket for state (``pulumi login s3://<bucket>``; Pulumi's
  S3 backend locks with lock files in the bucket itself), a KMS key as the secrets provider
  (``awskms://alias/<prefix>-pulumi-secrets``), the account's one GitHub OIDC provider (IAM holds one per
  URL; the application stacks look it up), and the infra-reader and infra-deployer roles, each trusting
  only its own GitHub environments.
- Azure: a resource group with a storage account (Entra ID only, blob versioning, soft delete) and the
  ``pulumi-state`` container (``pulumi login azblob://pulumi-state?storage_account=<name>``; blob leases
  lock), a Key Vault key as the secrets provider (``azurekeyvault://<vault>.vault.azure.net/keys/pulumi-secrets``),
  the application stacks' resource groups, and the two infra identities with federated credentials
  (GitHub environments, and Azure DevOps service connections when ``azure_devops`` is set).

No passphrase anywhere: CI signs in with OIDC and the secrets provider is a cloud key.
The bootstrap's own state stays with the administrator (``pulumi login --local``); docs/infra.md.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.settings import BootstrapSettings

STATE_CONTAINER = "pulumi-state"
SECRETS_KEY = "pulumi-secrets"


def create_bootstrap(settings: BootstrapSettings) -> dict[str, Any]:
    """Declare the bootstrap for ``settings.cloud``; return its outputs (login URL, secrets provider, identities)."""
    if settings.cloud == "aws":
        return _aws(settings)
    return _azure(settings)


def _aws(settings: BootstrapSettings) -> dict[str, Any]:
    import pulumi_aws as aws

    from infra.components.aws import (
        GITHUB_OIDC_HOST,
        GitHubRole,
        GitHubRoleArgs,
        ProjectKey,
        ProjectKeyArgs,
        SecureBucket,
        SecureBucketArgs,
        github_oidc_provider,
    )

    p = settings.name_prefix
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    provider = aws.Provider(
        f"{p}-aws", region=settings.region, allowed_account_ids=[settings.account_id],
        default_tags=aws.ProviderDefaultTagsArgs(tags=tags),
    )
    opts = pulumi.ResourceOptions(provider=provider)
    invoke = pulumi.InvokeOptions(provider=provider)
    account_id = aws.get_caller_identity_output(opts=invoke).account_id
    partition = aws.get_partition_output(opts=invoke).partition
    key = ProjectKey(
        f"{p}-secrets",
        ProjectKeyArgs(account_id=account_id, region=settings.region, partition=partition, alias=f"alias/{p}-{SECRETS_KEY}"),
        opts,
    )
    state = SecureBucket(
        f"{p}-state",
        SecureBucketArgs(
            bucket_name=pulumi.Output.concat(p, "-pulumi-state-", account_id, "-", settings.region), kms_key_arn=key.key.arn,
            noncurrent_days=365,
        ),
        opts,
    )
    provider_arn: pulumi.Input[str] = settings.github_oidc_provider_arn or github_oidc_provider(f"{p}-github-oidc", opts).arn
    bucket_arn, key_arn = state.bucket.arn, key.key.arn

    def iam_arn(kind: str, name: str) -> pulumi.Output[str]:
        return pulumi.Output.concat("arn:", partition, ":iam::", account_id, ":", kind, "/", name)

    reader = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListState", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [bucket_arn]},
            {"Sid": "ReadState", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [pulumi.Output.concat(bucket_arn, "/*")]},
            {"Sid": "DecryptSecrets", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": [key_arn]},
        ],
    }
    stack_roles = [iam_arn("role", f"{prefix}-*") for prefix in settings.stack_name_prefixes]
    deployer = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListState", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": [bucket_arn]},
            {
                "Sid": "WriteState",  # state files, backups and lock files
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": [pulumi.Output.concat(bucket_arn, "/*")],
            },
            {"Sid": "UseSecretsKey", "Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"], "Resource": [key_arn]},
            {
                # IAM is outside PowerUserAccess: only the application stacks' roles (and reading the GitHub provider).
                "Sid": "ManageStackRoles",
                "Effect": "Allow",
                "Action": [
                    "iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:UpdateRole", "iam:UpdateAssumeRolePolicy",
                    "iam:TagRole", "iam:UntagRole", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy",
                    "iam:ListRolePolicies", "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole",
                ],
                "Resource": stack_roles,
            },
            {
                # the application stacks look the account's GitHub provider up; only this bootstrap makes it
                "Sid": "ReadGitHubProvider",
                "Effect": "Allow",
                "Action": ["iam:GetOpenIDConnectProvider"],
                "Resource": [iam_arn("oidc-provider", GITHUB_OIDC_HOST)],
            },
        ],
    }
    roles = {
        "infra_reader": GitHubRole(
            f"{p}-infra-reader",
            GitHubRoleArgs(purpose="infra-reader", subjects=[], subject_patterns=settings.github.reader_patterns(),
                           provider_arn=provider_arn, policy=reader),
            opts,
        ),
        "infra_deployer": GitHubRole(
            f"{p}-infra-deployer",
            GitHubRoleArgs(
                purpose="infra-deployer", subjects=settings.github.subjects("infra_deployer"), provider_arn=provider_arn,
                policy=deployer, managed_policy_arns=["arn:aws:iam::aws:policy/PowerUserAccess"],
            ),
            opts,
        ),
    }
    return {
        "cloud": "aws",
        "environment": settings.environment,
        "state_bucket": state.bucket.bucket,
        "backend_url": pulumi.Output.concat("s3://", state.bucket.bucket),
        "secrets_provider": f"awskms://alias/{p}-{SECRETS_KEY}?region={settings.region}",
        "secrets_key_arn": key_arn,
        "github_oidc_provider_arn": provider_arn,
        "infra_reader_role_arn": roles["infra_reader"].role.arn,
        "infra_deployer_role_arn": roles["infra_deployer"].role.arn,
        # `detops settings ci-variables`: each infra environment's own role
        "CI_ENVIRONMENTS": {
            env: {"AWS_ROLE_ARN": role.role.arn}
            for purpose, role in roles.items()
            for env in getattr(settings.github.environments, purpose)
        },
    }


def _azure(settings: BootstrapSettings) -> dict[str, Any]:
    import pulumi_azure_native as azure_native
    from pulumi_azure_native import authorization, keyvault, resources

    from infra.components.azure import (
        ROLE_IDS,
        CiIdentity,
        CiIdentityArgs,
        KeyVault,
        KeyVaultArgs,
        RoleGrant,
        Storage,
        StorageArgs,
        role_definition_id,
    )

    p = settings.name_prefix
    subscription = settings.subscription_id
    assert subscription is not None
    tags = {"project": "detops", "environment": settings.environment, "managed-by": "pulumi", **settings.tags}
    provider = azure_native.Provider(f"{p}-azure", subscription_id=subscription)
    opts = pulumi.ResourceOptions(provider=provider)
    client = authorization.get_client_config_output(opts=pulumi.InvokeOptions(provider=provider))
    group = resources.ResourceGroup(f"{p}-state-rg", location=settings.region, tags=tags, opts=opts)
    # GitHub-hosted runners reach the state over the internet, with Entra ID tokens only (no keys).
    public = {**tags, "public-access-reason": "Pulumi state for GitHub-hosted runners; Entra ID only, no shared keys"}
    store = Storage(
        f"{p}state",
        StorageArgs(resource_group_name=group.name, location=settings.region, containers=[STATE_CONTAINER],
                    sku="Standard_ZRS", versioning=True, soft_delete_days=30, tags=public),
        opts,
    )
    vault = KeyVault(
        f"{p}-state-kv",
        KeyVaultArgs(resource_group_name=group.name, location=settings.region, tenant_id=client.tenant_id, tags=public),
        opts,
    )
    key = keyvault.Key(
        f"{p}-{SECRETS_KEY}",
        key_name=SECRETS_KEY,
        resource_group_name=group.name,
        vault_name=vault.vault.name,
        properties=keyvault.KeyPropertiesArgs(kty="RSA", key_size=3072, key_ops=["encrypt", "decrypt", "wrapKey", "unwrapKey"]),
        tags=tags,
        opts=opts,
    )
    # The application stacks' resource groups, so the infra deployer is scoped to them (and nothing else).
    stack_groups = {
        prefix: resources.ResourceGroup(f"{prefix}-rg", resource_group_name=f"{prefix}-rg", location=settings.region, tags=tags, opts=opts)
        for prefix in settings.stack_name_prefixes
    }
    container = store.containers[STATE_CONTAINER]
    reader_grants = [
        RoleGrant("Storage Blob Data Reader", container.id, "state-reader"),
        RoleGrant("Key Vault Crypto User", key.id, "secrets-key"),
        *[RoleGrant("Reader", g.id, f"{prefix}-reader") for prefix, g in stack_groups.items()],
    ]
    deployer_grants = [
        RoleGrant("Storage Blob Data Contributor", container.id, "state-contributor"),
        RoleGrant("Key Vault Crypto User", key.id, "secrets-key"),
        *[RoleGrant("Contributor", g.id, f"{prefix}-contributor") for prefix, g in stack_groups.items()],
    ]
    ado = settings.azure_devops

    def azure_devops(purpose: str) -> tuple[Any, str] | None:
        """(issuer, subject) of ``purpose``'s Azure DevOps service connection, when it has one."""
        subject = ado.subject(purpose) if ado else None
        return (client.tenant_id.apply(ado.issuer_url), subject) if ado and subject else None

    identities = {
        purpose: CiIdentity(
            f"{p}-{purpose.replace('_', '-')}",
            CiIdentityArgs(resource_group_name=group.name, location=settings.region, subscription_id=subscription,
                           github_subjects=settings.github.subjects(purpose), grants=grants,
                           azure_devops=azure_devops(purpose), purpose=purpose.replace("_", "-"), tags=tags),
            opts,
        )
        for purpose, grants in (("infra_reader", reader_grants), ("infra_deployer", deployer_grants))
    }
    # The deployer assigns roles to the stacks' identities: RBAC Administrator, limited by an ABAC
    # condition to exactly the roles the programs grant (never Owner, Contributor or access administration).
    assignable = ", ".join(ROLE_IDS[name] for name in sorted(ROLE_IDS))
    condition = (
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
        f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{assignable}}})) AND "
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR "
        f"(@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{assignable}}}))"
    )
    for prefix, g in stack_groups.items():
        authorization.RoleAssignment(
            f"{p}-infra-deployer-{prefix}-rbac",
            scope=g.id,
            role_definition_id=role_definition_id(subscription, "Role Based Access Control Administrator"),
            principal_id=identities["infra_deployer"].identity.principal_id,
            principal_type="ServicePrincipal",
            condition=condition,
            condition_version="2.0",
            description="detops infra-deployer: assign only the roles the programs grant",
            opts=opts,
        )
    return {
        "cloud": "azure",
        "environment": settings.environment,
        "state_storage_account": store.account.name,
        "backend_url": pulumi.Output.concat("azblob://", STATE_CONTAINER, "?storage_account=", store.account.name),
        "secrets_provider": pulumi.Output.concat("azurekeyvault://", vault.vault.name, ".vault.azure.net/keys/", SECRETS_KEY),
        "stack_resource_groups": {prefix: g.name for prefix, g in stack_groups.items()},
        "infra_reader_client_id": identities["infra_reader"].identity.client_id,
        "infra_deployer_client_id": identities["infra_deployer"].identity.client_id,
        # `detops settings ci-variables`: each infra environment's own identity
        "CI_ENVIRONMENTS": {
            env: {"AZURE_CLIENT_ID": identity.identity.client_id}
            for purpose, identity in identities.items()
            for env in getattr(settings.github.environments, purpose)
        },
    }
