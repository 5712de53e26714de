"""Event-sending plugins: handler-generated events forwarded to third parties."""
