"""Bootstrap: state backend, secrets provider and infra identities (run once per account/subscription)."""
