"""Fixtures shared by every test folder.

``tests.kube.fixtures``: ``kube`` (the session's Kubernetes cluster), ``namespace`` (one per test)
and ``api_client`` (kubernetes_asyncio); see that module. ``tests.operator.fixtures``: ``crd``,
``cluster`` and ``operator`` for the operator and end-to-end folders.
"""

pytest_plugins = ["tests.kube.fixtures", "tests.operator.fixtures"]
