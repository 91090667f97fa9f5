"""Loaded at interpreter start when this folder is on ``PYTHONPATH`` (scripts/rehearse_azure.py puts it there for
the rehearsed jobs only): with ``REHEARSAL_AML_STATE`` set, the rehearsal's Azure ML workspace stands in for
``MLClient`` and the job's identity for ``DefaultAzureCredential`` (tests/ci/aml_fake.py). Nothing else changes."""

import os
import sys

if os.environ.get("REHEARSAL_AML_STATE"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import aml_fake

    aml_fake.install()
