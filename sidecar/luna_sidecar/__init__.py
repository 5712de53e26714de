"""The luna-plugins sidecar runtime: loads plugins, feeds them events, serves their routes.

Its packages, top to bottom; each imports only from those below it (``lint-imports`` checks
this, see ``[tool.importlinter]`` in pyproject.toml), and from another package only what that
package's ``__all__`` offers:

- ``cli`` (``luna-plugins sidecar``) and ``testing`` (the plugin test harness);
- ``assembly``: a sidecar built from its config and run, and the feed of its desired state;
- ``serving``: the route, admin (event intake) and metrics listeners on the hardened HTTP server;
- ``engine``: loading plugin versions, converging on the desired list, routes, event delivery;
  ``kube``: the Kubernetes API side (the cluster's desired state, the per-pod report);
- ``desired``: what should run (plugin sources, the active list, secret settings);
  ``intake``: validation and decoding of intake bodies; ``isolation``: deadlines, threads,
  the loop watchdog, containment and crash quarantine that keep plugin code from hurting the
  sidecar;
- ``observability``: the Prometheus metrics, the runtime's own and those of monitoring points;
- ``config``: the settings, as flags, environment variables and the README's table.

Data path: ``serving`` -> ``intake`` -> ``engine`` (bus, per-plugin queues) -> plugin callbacks.
Desired state: a source (``desired``, or ``kube`` in a cluster) -> ``Runtime.apply`` -> load /
reload / unload.
"""
