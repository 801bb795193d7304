"""Golden Protocol 2.0 packets (anchors-aloha-hardware.md §4.1): our codec and the SDK agree."""

import pytest
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler

from halo_ros.drivers.dynamixel import protocol
from halo_ros.drivers.dynamixel.tables import Instruction, Register


def golden(text):
    return bytes.fromhex(text)


PING_1 = golden('FF FF FD 00 01 03 00 01 19 4E')
READ_1_132_4 = golden('FF FF FD 00 01 07 00 02 84 00 04 00 1D 15')
WRITE_1_TORQUE_ON = golden('FF FF FD 00 01 06 00 03 40 00 01 DB 66')
REBOOT_9 = golden('FF FF FD 00 09 03 00 08 2C 6E')
PING_STATUS_1 = golden('FF FF FD 00 01 07 00 55 00 FC 03 26 2E C3')
SYNC_READ_132_4_IDS_1_2 = golden('FF FF FD 00 FE 09 00 82 84 00 04 00 01 02 CE FA')
WRITE_1_116_STUFFED = golden('FF FF FD 00 01 0A 00 03 74 00 FF FF FD FD 00 21 E7')

INSTRUCTIONS = [
    (PING_1, 1, Instruction.PING, b''),
    (READ_1_132_4, 1, Instruction.READ, bytes([132, 0, 4, 0])),
    (WRITE_1_TORQUE_ON, 1, Instruction.WRITE, bytes([64, 0, 1])),
    (REBOOT_9, 9, Instruction.REBOOT, b''),
    (SYNC_READ_132_4_IDS_1_2, 0xFE, Instruction.SYNC_READ, bytes([132, 0, 4, 0, 1, 2])),
    (WRITE_1_116_STUFFED, 1, Instruction.WRITE, bytes([116, 0, 0xFF, 0xFF, 0xFD, 0x00])),
]


class CapturePort:
    """Just enough of a PortHandler for the SDK: records what it sends, replays a reply."""

    def __init__(self, reply=b''):
        self.is_using = False
        self.sent = []
        self._reply = bytearray(reply)

    def clearPort(self):  # noqa: N802
        pass

    def writePort(self, packet):  # noqa: N802
        self.sent.append(bytes(packet))
        return len(packet)

    def readPort(self, length):  # noqa: N802
        chunk = bytes(self._reply[:length])
        del self._reply[:length]
        return chunk

    def setPacketTimeout(self, length):  # noqa: N802
        pass

    def isPacketTimeout(self):  # noqa: N802
        return not self._reply


@pytest.mark.parametrize('raw, packet_id, instruction, params', INSTRUCTIONS)
def test_codec_encodes_and_decodes_golden_instructions(raw, packet_id, instruction, params):
    assert protocol.encode_instruction(packet_id, instruction, params) == raw
    decoded = protocol.decode(raw)
    assert (decoded.id, decoded.instruction, decoded.params) == (packet_id, instruction, params)


def test_codec_status_packet_golden():
    params = (1020).to_bytes(2, 'little') + bytes([38])
    assert protocol.encode_status(1, 0, params) == PING_STATUS_1
    decoded = protocol.decode(PING_STATUS_1)
    assert decoded.is_status and decoded.error == 0 and decoded.params == params


def test_crc_check_value():
    assert protocol.crc16(b'123456789') == 0xFEE8  # CRC-16/BUYPASS


def test_sdk_sends_the_golden_instructions():
    handler = PacketHandler(2.0)
    port = CapturePort(PING_STATUS_1)
    assert handler.ping(port, 1) == (1020, COMM_SUCCESS, 0)  # and decodes the golden status
    port = CapturePort(protocol.encode_status(1, 0, (2058).to_bytes(4, 'little')))
    assert handler.read4ByteTxRx(port, 1, 132) == (2058, COMM_SUCCESS, 0)
    port2 = CapturePort(protocol.encode_status(1, 0))
    handler.write1ByteTxRx(port2, 1, 64, 1)
    port3 = CapturePort(protocol.encode_status(9, 0))
    handler.reboot(port3, 9)
    port5 = CapturePort()
    group = GroupSyncRead(port5, handler, 132, 4)
    group.addParam(1)
    group.addParam(2)
    group.txPacket()
    assert port.sent == [READ_1_132_4]
    assert port2.sent == [WRITE_1_TORQUE_ON]
    assert port3.sent == [REBOOT_9]
    assert port5.sent == [SYNC_READ_132_4_IDS_1_2]


def test_sdk_sends_stuffable_data_unstuffed_and_the_emulator_decodes_it():
    # dynamixel-sdk 4.1.0 quirk: txPacket() ignores addStuffing()'s return value, and that
    # function only grows a copy, so a packet that needs stuffing goes out unstuffed (with a CRC
    # that matches what is sent). Our parser must accept that form as well as the golden one.
    port = CapturePort(protocol.encode_status(1, 0))
    PacketHandler(2.0).writeTxRx(port, 1, 116, 4, [0xFF, 0xFF, 0xFD, 0x00])
    (sent,) = port.sent
    assert sent[:14] == golden('FF FF FD 00 01 09 00 03 74 00 FF FF FD 00')
    assert sent != WRITE_1_116_STUFFED
    for raw in (sent, WRITE_1_116_STUFFED):
        (packet,) = protocol.StreamParser().feed(raw)
        assert packet.params == bytes([116, 0, 0xFF, 0xFF, 0xFD, 0x00])


def test_stuffed_status_round_trips_through_the_sdk():
    data = bytes([0xFF, 0xFF, 0xFD, 0x00])
    raw = protocol.encode_status(1, 0, data)
    assert raw == golden('FF FF FD 00 01 09 00 55 00 FF FF FD FD 00') + raw[-2:]
    assert protocol.decode(raw).params == data
    port = CapturePort(raw)
    value, result, error = PacketHandler(2.0).read4ByteTxRx(port, 1, 132)
    assert (value, result, error) == (0x00FDFFFF, COMM_SUCCESS, 0)


def test_stream_parser_skips_noise_and_bad_crc():
    corrupt = PING_1[:-1] + bytes([PING_1[-1] ^ 1])
    parser = protocol.StreamParser()
    stream = b'\x00\xff' + corrupt + WRITE_1_116_STUFFED + READ_1_132_4
    packets = []
    for i in range(0, len(stream), 3):  # arbitrary chunking
        packets += parser.feed(stream[i : i + 3])
    assert [p.instruction for p in packets] == [Instruction.WRITE, Instruction.READ]
    assert packets[0].params[2:] == bytes([0xFF, 0xFF, 0xFD, 0x00])
    assert parser.corrupt_count == 1


def test_decode_rejects_a_bad_crc():
    with pytest.raises(ValueError, match='CRC'):
        protocol.decode(PING_1[:-1] + b'\x00')


@pytest.mark.parametrize(
    'register, raw, value',
    [
        (Register.PRESENT_POSITION, 0xFFFFFFFF, -1),
        (Register.PRESENT_POSITION, 2048, 2048),
        (Register.PRESENT_CURRENT, 0xFF38, -200),
        (Register.PRESENT_VELOCITY, 0x80000000, -(1 << 31)),
        (Register.CURRENT_LIMIT, 0xFFFF, 0xFFFF),  # unsigned stays unsigned
    ],
)
def test_signed_decoding(register, raw, value):
    assert register.decode(raw) == value
    assert int.from_bytes(register.encode(value), 'little') == raw


def test_encode_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match='Torque Enable value 256'):
        Register.TORQUE_ENABLE.encode(256)
