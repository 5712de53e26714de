"""The luna-plugins sidecar runtime: loads plugins, feeds them events, serves their routes.

Data path: intake (``intake``) -> per-plugin queues (``queues``) -> plugin callbacks.
Desired state: a source (``sources``) -> ``Runtime.apply`` -> load / reload / unload.
"""
