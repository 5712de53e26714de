"""What the operator and the sidecar agree on, in one place both import.

Each module is one part of the contract between what the operator writes and what the sidecar
reads; both sides check their input with the same code, so they refuse the same things with the
same messages.
"""
