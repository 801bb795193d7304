"""Camera frames for the wire: resized on the robot, optionally JPEG, checked before decoding.

The robot resizes to the server's `image_hw` (from the handshake) so full-resolution frames never
cross the network. JPEG (OpenCV) cuts 3 x 480x640 from 2.8 MB to ~0.1-0.2 MB at the cost of a few
ms and lossy pixels; raw frames keep remote and in-process engines bit-identical. The server reads
a JPEG's size from its header before decoding, so a small file cannot expand into a huge image.
"""

from __future__ import annotations

import logging

import numpy as np

from halo_ros.transport.wire import ProtocolError, decode_array, encode_array

log = logging.getLogger(__name__)

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def fit(frame: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> image_hw, area interpolation (the frame itself when it already fits)."""
    if frame.shape[:2] == tuple(image_hw):
        return frame
    import cv2

    return cv2.resize(frame, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_AREA)


def encode_frame(frame: np.ndarray, jpeg_quality: int = 0):
    """A wire image: the raw array, or {'jpeg': bytes} when jpeg_quality is 1..100."""
    if jpeg_quality <= 0:
        return encode_array(frame)
    import cv2

    ok, data = cv2.imencode(
        '.jpg', cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    )
    if not ok:
        raise ValueError(f'JPEG encoding failed for a frame of shape {frame.shape}')
    return {'jpeg': data.tobytes()}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a baseline/progressive JPEG's SOF segment, None if there is none."""
    if data[:2] != b'\xff\xd8':
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2 : i + 4], 'big')
        if marker in _SOF_MARKERS:
            height = int.from_bytes(data[i + 5 : i + 7], 'big')
            return height, int.from_bytes(data[i + 7 : i + 9], 'big')
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before any SOF
            return None
        i += 2 + length
    return None


def decode_frame(name: str, value, image_hw: tuple[int, int]) -> np.ndarray:
    """A wire image -> (H, W, 3) uint8 of exactly image_hw, or ProtocolError naming `name`."""
    h, w = image_hw
    if isinstance(value, dict) and set(value) == {'jpeg'}:
        data = value['jpeg']
        if not isinstance(data, bytes):
            raise ProtocolError('schema', f'{name}: jpeg must be binary')
        size = jpeg_size(data)
        if size != (h, w):
            raise ProtocolError('schema', f'{name}: expected a {h}x{w} JPEG, header says {size}')
        import cv2

        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None or decoded.shape != (h, w, 3):
            raise ProtocolError('schema', f'{name}: JPEG does not decode to {h}x{w}x3')
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return decode_array(name, value, (h, w, 3), np.uint8)
