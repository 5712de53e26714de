"""Event-intake bodies validated and decoded: everything that reaches a plugin passed through here.

``payloads`` is the strict reference (JSON, every element checked, errors naming the element
and the HTTP status); ``point_decoding`` the fast monitoring decoder that defers to it for
every body it refuses.
"""

from luna_sidecar.intake.payloads import PayloadError, decode_sending
from luna_sidecar.intake.point_decoding import PointDecoder

__all__ = ["PayloadError", "PointDecoder", "decode_sending"]
