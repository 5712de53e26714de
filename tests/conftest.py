"""Fixtures shared by every test folder.

``tests.kube.fixtures``: ``kube`` (the session's Kubernetes cluster), ``namespace`` (one per test)
and ``api_client`` (kubernetes_asyncio); see that module.
"""

pytest_plugins = ["tests.kube.fixtures"]
