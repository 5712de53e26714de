"""The `luna-plugins` command line: one entry point, one sub-command per component."""
