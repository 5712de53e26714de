"""Entry point of an isolated plugin's process (see :mod:`luna_sidecar.child`)."""

from luna_sidecar.child.host import main

main()
