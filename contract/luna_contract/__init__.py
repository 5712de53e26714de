"""What the operator and the sidecar agree on, in one place both import.

Each module is one part of the contract between what the operator writes and what the sidecar
reads; both sides check their input with the same code, so they refuse the same things with the
same messages. :mod:`luna_contract.process_settings` does the same for the processes' own
settings: one reader of flags and environment variables, with one set of rules and one error.
"""
