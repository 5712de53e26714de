"""Plugin base classes, at the import paths of the original service."""
