"""The luna-plugins operator: turns LunaPlugin resources into ConfigMaps and active lists.

Layers, lowest first (a module imports only from its own layer or those below):

1. ``code_check`` (the standard-library-only parse that runs in a child process), ``errors``,
   ``records`` (what is kept of a LunaPlugin), ``render`` (the objects written), ``config``;
2. ``validation`` (runs that child), ``desired`` (decides without the API), ``reports`` (the
   sidecars' reports, parsed and kept per service), ``metrics``, ``view`` (kopf's indexes);
3. ``cluster_api`` (the few calls a pass makes), ``status``, ``events``, ``scheduling`` (when
   passes run);
4. ``reconciler`` (full and status passes over one service), ``report_feed`` (the reports'
   watch), ``peering``, ``injection``, ``metrics_http``;
5. ``handlers`` wires it all to kopf; ``cli`` runs it.
"""
