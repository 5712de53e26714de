"""The luna-plugins operator: turns LunaPlugin resources into ConfigMaps and active lists.

Layers: ``code_check`` is the standard-library-only parse that runs in a child process;
``validation`` (which runs that child), ``render`` and ``desired`` decide without the Kubernetes
API; ``reconciler`` converges one service at a time through it, ``status`` reports on each
LunaPlugin; ``handlers`` wires it to kopf, ``peering`` sets up several replicas; ``config`` reads
the settings and ``cli`` runs it.
"""
