"""The program an isolated plugin runs in: ``python -m luna_sidecar.child FD``.

Started by the sidecar (:mod:`luna_sidecar.process`) with one end of a socket pair as ``FD``;
it reads the plugin's code and settings from it, confines itself, loads the plugin with the
same SDK and lifecycle as in-process plugins, then answers the sidecar's event and route calls
until told to close (or until the sidecar goes away: it never outlives it).
"""
