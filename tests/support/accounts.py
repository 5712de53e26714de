"""Acting as a ServiceAccount against the test cluster, with a real token (TokenRequest)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def service_account_kube(
    kube: Any, namespace: str, account: str, directory: Path, *, pod: tuple[str, str] | None = None
) -> Any:
    """``kube`` with a kubeconfig that authenticates as ``namespace``/``account``: a token from
    the TokenRequest API (`kubectl create token`), valid for an hour; with ``pod`` (name, uid)
    bound to that Pod, as the kubelet's projected tokens are (the API server then knows the pod)."""
    bound = (
        ["--bound-object-kind", "Pod", "--bound-object-name", pod[0], "--bound-object-uid", pod[1]]
        if pod
        else []
    )
    token = kube.kubectl("create", "token", account, "-n", namespace, "--duration=1h", *bound).stdout.strip()
    config = json.loads(kube.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token}}]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{namespace}-{account}{'-' + pod[0] if pod else ''}.kubeconfig"
    path.write_text(json.dumps(config))
    return dataclasses.replace(kube, kubeconfig=path)


def stand_in_pod(kube: Any, namespace: str, name: str, account: str) -> str:
    """A Pod object running as ``account`` (it never runs without a node: it only stands for the
    pod a token is bound to); returns its UID."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"serviceAccountName": account, "containers": [{"name": "app", "image": "app:1"}]},
    }
    kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    return str(kube.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}").stdout)
