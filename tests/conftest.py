"""Fixtures shared by every test folder, from ``tests/support``.

``tests.support.kube_fixtures``: ``kube`` (the session's Kubernetes cluster), ``namespace`` (one per
test) and ``api_client`` (kubernetes_asyncio); see that module. ``tests.support.operator_fixtures``:
``crd``, ``cluster`` and ``operator`` for the operator and end-to-end folders.
``tests.support.runtime``: fresh metric registries, an application and in-process runtimes for the
tests of the SDK and the sidecar's parts.
"""

pytest_plugins = [
    "tests.support.kube_fixtures",
    "tests.support.operator_fixtures",
    "tests.support.runtime",
]
