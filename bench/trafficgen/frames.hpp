#pragma once
// The frames the traffic generator sends and answers: IPv4/TCP between a client side (the
// generator's port A, behind the device under test's port 0) and a server side (port B, behind
// its port 1). Every frame is Ethernet + IPv4 (no options) + TCP (no options) + payload, then a
// 6-byte trailer after the IP datagram that carries the TSC at enqueue (Ethernet padding to a
// device that reads the IP total length; no checksum covers it, so stamping costs nothing).
//
// A connection is the exchange of a short TCP conversation, each packet sent when the previous one
// came back through the device under test, the way two real endpoints talk:
//   1 SYN (client)  2 SYN-ACK (server)  3 ACK (client)  4 data (client)
//   5 FIN-ACK (server, on the data)  6 FIN-ACK (client)  7 ACK (server): done at the client.
// Sequence and acknowledgement numbers are those of a real exchange (a stateful peer such as
// Open vSwitch's conntrack checks them). answer() computes the next packet from the one
// received alone: the generator keeps no per-connection state.
//
// No DPDK here but its header-only checksum helpers, so the unit tests run it on plain buffers.

#include <cstddef>
#include <cstdint>

namespace kmodkit::bench {

constexpr uint16_t kEthLen = 14, kIpLen = 20, kTcpLen = 20, kHeaders = kEthLen + kIpLen + kTcpLen;
constexpr uint16_t kTrailer = 6;                          // the TSC stamp, 48 bits
constexpr uint16_t kMinFrame = 60;                        // 64 on the wire with the FCS
constexpr uint16_t kDataLen = 16;                         // the payload of a churn connection's data packet
constexpr uint16_t kChurnPort = 80, kFlowPort = 443;      // the server port tells the workloads apart

// One connection's addresses, as the client sends.
struct Tuple {
  uint32_t client = 0, server = 0;  // host byte order
  uint16_t client_port = 0, server_port = 0;
};

// The tuple of connection number k of a workload: clients 10.0.0.0/16, servers 192.168.0.0/16,
// client ports from 1024; distinct for k < 2^32 (65,536 addresses x 64,512 ports cover it).
Tuple tuple_of(uint64_t k, uint16_t server_port);

// The number k of the connection a frame (of either direction) belongs to: tuple_of inverted.
uint64_t number_of(const uint8_t* frame, uint16_t len);

enum class Side { client, server };

// The frame length (without the FCS) of a TCP segment with `payload` bytes.
uint16_t frame_len(uint16_t payload);

// Writes a segment of the connection into `frame` (at least frame_len(payload) bytes): from the
// client (or, with Side::server, from the server back to it), with the flags, numbers and
// `payload` bytes of payload; checksums set, trailer zeroed. Returns the frame length.
uint16_t write_segment(uint8_t* frame, const Tuple& t, Side from, uint8_t flags, uint32_t seq, uint32_t ack,
                       uint16_t payload);

// The client's and the server's initial sequence numbers of a connection.
uint32_t client_isn(const Tuple& t);
uint32_t server_isn(const Tuple& t);

// What a received frame asks of the generator (answer()).
enum class Next {
  drop,      // nothing to send (the client's ACK reaching the server; an established flow's packet)
  reply,     // the frame was rewritten in place into the answer, to be sent back on the same port
  reply_and_data,  // the same, and a data packet (write_data()) follows it on that port
  done,      // the last ACK reached the client: the connection is over
  opened,    // the client's ACK of the handshake reached the server on kFlowPort: a flow is up
  foreign,   // not a frame of this generator
};

// Decides the answer to a frame received on `at` (A: client side, B: server side) and, for
// reply and reply_and_data, rewrites it in place (its length may change: *len is updated).
// `frame` has room for frame_len(kDataLen) + kTrailer bytes.
Next answer(uint8_t* frame, uint16_t* len, Side at);

// After answer() returned reply_and_data on a frame: writes the data packet that follows the
// rewritten ACK into `out`; returns its length.
uint16_t write_data(const uint8_t* ack_frame, uint8_t* out);

// Reads the TCP flags and ports of a frame of this generator; false when it is not one.
struct Seen {
  uint8_t flags = 0;
  uint16_t src_port = 0, dst_port = 0;
  uint16_t payload = 0;
};
bool inspect(const uint8_t* frame, uint16_t len, Seen* seen);

// The trailer: the TSC at enqueue, 48 bits.
void stamp(uint8_t* frame, uint16_t len, uint64_t tsc);
uint64_t stamp_of(const uint8_t* frame, uint16_t len);

namespace tcp {
constexpr uint8_t fin = 0x01, syn = 0x02, rst = 0x04, psh = 0x08, ack = 0x10;
}

}  // namespace kmodkit::bench
