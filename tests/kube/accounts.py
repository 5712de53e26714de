"""Acting as a ServiceAccount against the test cluster, with a real token (TokenRequest)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def service_account_kube(kube: Any, namespace: str, account: str, directory: Path) -> Any:
    """``kube`` with a kubeconfig that authenticates as ``namespace``/``account``: a token from
    the TokenRequest API (`kubectl create token`), valid for an hour."""
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    config = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token}}]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{namespace}-{account}.kubeconfig"
    path.write_text(json.dumps(config))
    return dataclasses.replace(kube, kubeconfig=path)
