"""The luna-plugins operator: turns LunaPlugin resources into ConfigMaps and active lists.

Layers: ``validation`` and ``render`` are pure; ``reconciler`` converges one service at a time
through the Kubernetes API; ``handlers`` wires it to kopf; ``cli`` runs it.
"""
