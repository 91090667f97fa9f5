"""Post a text file (a ``pulumi preview`` diff) as a comment thread on the current Azure Repos pull request.

Used by .azure-pipelines/infra.yml; the GitHub twin is pulumi/actions' ``comment-on-pr``. Standard
library only, so it runs before (or without) the project's virtualenv.

Reads the predefined pipeline variables, which Azure Pipelines exports as environment variables:
``SYSTEM_COLLECTIONURI`` (``https://dev.azure.com/<org>/``), ``SYSTEM_TEAMPROJECTID``,
``BUILD_REPOSITORY_ID``, ``SYSTEM_PULLREQUEST_PULLREQUESTID``, and the job token
``SYSTEM_ACCESSTOKEN``, which the step must map explicitly (``env: SYSTEM_ACCESSTOKEN:
$(System.AccessToken)``). The project's build service identity needs "Contribute to pull requests"
on the repository.

REST call: ``POST {collection}{project}/_apis/git/repositories/{repo}/pullRequests/{id}/threads
?api-version=7.1`` (Azure DevOps Services REST API, Pull Request Threads - Create), body
``{"comments": [{"parentCommentId": 0, "content": ..., "commentType": 1}], "status": "closed"}``.

Exit codes: 0 posted; 2 bad usage or a missing variable (named in the message); 6 the service refused
or could not be reached (status and response body printed). The file's text is cut to
``MAX_CHARS`` characters, keeping its end (where Pulumi prints the summary), and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

#: Comment bodies are limited by the service (about 150,000 characters); stay well under it.
MAX_CHARS = 60_000
REQUIRED_ENV = (
    "SYSTEM_COLLECTIONURI",
    "SYSTEM_TEAMPROJECTID",
    "BUILD_REPOSITORY_ID",
    "SYSTEM_PULLREQUEST_PULLREQUESTID",
    "SYSTEM_ACCESSTOKEN",
)


def comment_body(title: str, text: str, max_chars: int = MAX_CHARS) -> str:
    """Markdown body: a heading and the text in a code block, cut to its last ``max_chars`` characters."""
    note = ""
    if len(text) > max_chars:
        note = f"_(first {len(text) - max_chars} characters cut; the full output is in the pipeline log)_\n\n"
        text = text[-max_chars:]
    return f"### {title}\n\n{note}```\n{text.rstrip()}\n```\n"


def threads_url(env: dict[str, str]) -> str:
    """The Pull Request Threads - Create URL built from the pipeline's predefined variables."""
    parts = urllib.parse.urlsplit(env["SYSTEM_COLLECTIONURI"].rstrip("/") + "/")
    base = urllib.parse.urlunsplit(parts._replace(path=urllib.parse.quote(urllib.parse.unquote(parts.path))))
    project = urllib.parse.quote(env["SYSTEM_TEAMPROJECTID"], safe="")
    repo = urllib.parse.quote(env["BUILD_REPOSITORY_ID"], safe="")
    pr = urllib.parse.quote(env["SYSTEM_PULLREQUEST_PULLREQUESTID"], safe="")
    return f"{base}{project}/_apis/git/repositories/{repo}/pullRequests/{pr}/threads?api-version=7.1"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, post the comment and return a process exit code (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="text file to post (e.g. the output of pulumi preview)")
    parser.add_argument("--title", default="pulumi preview", help="heading of the comment")
    args = parser.parse_args(argv)

    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(
            f"error: missing pipeline variable(s): {', '.join(missing)} (run inside a PR build; "
            "map SYSTEM_ACCESSTOKEN in the step's env)",
            file=sys.stderr,
        )
        return 2
    try:
        text = args.file.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"error: cannot read {args.file}: {e}", file=sys.stderr)
        return 2

    body = {
        "comments": [{"parentCommentId": 0, "content": comment_body(args.title, text), "commentType": 1}],
        "status": "closed",
    }
    request = urllib.request.Request(
        threads_url(dict(os.environ)),
        data=json.dumps(body).encode("utf-8"),
        method="POST",
        headers={
            "Authorization": f"Bearer {os.environ['SYSTEM_ACCESSTOKEN']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            thread = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", errors="replace")[:2000]
        print(f"error: posting the comment failed: HTTP {e.code}: {detail}", file=sys.stderr)
        return 6
    except (urllib.error.URLError, TimeoutError, ValueError) as e:
        print(f"error: cannot reach {request.full_url}: {e}", file=sys.stderr)
        return 6
    print(
        f"posted comment thread {thread.get('id', '?')} on pull request "
        f"{os.environ['SYSTEM_PULLREQUEST_PULLREQUESTID']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
