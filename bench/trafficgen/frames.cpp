#include "frames.hpp"

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_tcp.h>

#include <cstring>

namespace kmodkit::bench {
namespace {

constexpr uint8_t kClientMac[6] = {0x02, 0, 0, 0, 0, 0x01};
constexpr uint8_t kServerMac[6] = {0x02, 0, 0, 0, 0, 0x02};

rte_ipv4_hdr* ip_of(uint8_t* frame) { return reinterpret_cast<rte_ipv4_hdr*>(frame + kEthLen); }
const rte_ipv4_hdr* ip_of(const uint8_t* frame) { return reinterpret_cast<const rte_ipv4_hdr*>(frame + kEthLen); }
rte_tcp_hdr* tcp_of(uint8_t* frame) { return reinterpret_cast<rte_tcp_hdr*>(frame + kEthLen + kIpLen); }
const rte_tcp_hdr* tcp_of(const uint8_t* frame) {
  return reinterpret_cast<const rte_tcp_hdr*>(frame + kEthLen + kIpLen);
}

// A frame's segment as the client would describe its connection.
struct Segment {
  Tuple tuple;
  Side from = Side::client;
  uint8_t flags = 0;
  uint32_t seq = 0, ack = 0;
  uint16_t payload = 0;
};

bool read_segment(const uint8_t* frame, uint16_t len, Segment* s) {
  if (len < kMinFrame || frame[12] != 0x08 || frame[13] != 0x00) return false;
  const rte_ipv4_hdr* ip = ip_of(frame);
  if (ip->version_ihl != 0x45 || ip->next_proto_id != IPPROTO_TCP) return false;
  const uint16_t total = rte_be_to_cpu_16(ip->total_length);
  if (total < kIpLen + kTcpLen || kEthLen + total + kTrailer > len) return false;
  const rte_tcp_hdr* tcp = tcp_of(frame);
  if (tcp->data_off != 0x50) return false;
  const uint32_t src = rte_be_to_cpu_32(ip->src_addr), dst = rte_be_to_cpu_32(ip->dst_addr);
  const uint16_t sport = rte_be_to_cpu_16(tcp->src_port), dport = rte_be_to_cpu_16(tcp->dst_port);
  // The server side is the one on a workload's server port.
  if (dport == kChurnPort || dport == kFlowPort) {
    s->from = Side::client;
    s->tuple = {src, dst, sport, dport};
  } else if (sport == kChurnPort || sport == kFlowPort) {
    s->from = Side::server;
    s->tuple = {dst, src, dport, sport};
  } else {
    return false;
  }
  s->flags = tcp->tcp_flags;
  s->seq = rte_be_to_cpu_32(tcp->sent_seq);
  s->ack = rte_be_to_cpu_32(tcp->recv_ack);
  s->payload = static_cast<uint16_t>(total - kIpLen - kTcpLen);
  return true;
}

}  // namespace

Tuple tuple_of(uint64_t k, uint16_t server_port) {
  Tuple t;
  t.client = (10U << 24) | static_cast<uint32_t>(k & 0xFFFF);
  t.client_port = static_cast<uint16_t>(1024 + (k >> 16) % 64512);
  // The server address varies too (a rule set sees many destinations), in a pattern other than
  // the client's so that the pairs do not repeat together.
  t.server = (192U << 24) | (168U << 16) | static_cast<uint32_t>((k * 40503U) & 0xFFFF);
  t.server_port = server_port;
  return t;
}

uint64_t number_of(const uint8_t* frame, uint16_t len) {
  Segment s;
  if (!read_segment(frame, len, &s)) return UINT64_MAX;
  return (s.tuple.client & 0xFFFF) | (static_cast<uint64_t>(s.tuple.client_port - 1024) << 16);
}

uint16_t frame_len(uint16_t payload) { return static_cast<uint16_t>(kHeaders + payload + kTrailer); }

uint32_t client_isn(const Tuple& t) { return t.client * 2654435761U ^ t.client_port; }
uint32_t server_isn(const Tuple& t) { return t.server * 2246822519U ^ (static_cast<uint32_t>(t.client_port) << 16); }

uint16_t write_segment(uint8_t* frame, const Tuple& t, Side from, uint8_t flags, uint32_t seq, uint32_t ack,
                       uint16_t payload) {
  const bool client = from == Side::client;
  std::memcpy(frame, client ? kServerMac : kClientMac, 6);
  std::memcpy(frame + 6, client ? kClientMac : kServerMac, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  rte_ipv4_hdr* ip = ip_of(frame);
  ip->version_ihl = 0x45;
  ip->type_of_service = 0;
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(kIpLen + kTcpLen + payload));
  ip->packet_id = 0;
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_TCP;
  ip->hdr_checksum = 0;
  ip->src_addr = rte_cpu_to_be_32(client ? t.client : t.server);
  ip->dst_addr = rte_cpu_to_be_32(client ? t.server : t.client);
  rte_tcp_hdr* tcp = tcp_of(frame);
  tcp->src_port = rte_cpu_to_be_16(client ? t.client_port : t.server_port);
  tcp->dst_port = rte_cpu_to_be_16(client ? t.server_port : t.client_port);
  tcp->sent_seq = rte_cpu_to_be_32(seq);
  tcp->recv_ack = rte_cpu_to_be_32(ack);
  tcp->data_off = 0x50;
  tcp->tcp_flags = flags;
  tcp->rx_win = rte_cpu_to_be_16(65535);
  tcp->cksum = 0;
  tcp->tcp_urp = 0;
  std::memset(frame + kHeaders, 0, payload + kTrailer);
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  tcp->cksum = rte_ipv4_udptcp_cksum(ip, tcp);
  return frame_len(payload);
}

Next answer(uint8_t* frame, uint16_t* len, Side at) {
  Segment s;
  if (!read_segment(frame, *len, &s) || s.from == at) return Next::foreign;  // a side hears the other one
  const bool churn = s.tuple.server_port == kChurnPort;
  const uint32_t seq = s.ack;  // what the answering side sends next is what the other one acknowledged
  const auto reply = [&](uint8_t flags, uint32_t ack) {
    *len = write_segment(frame, s.tuple, at, flags, seq, ack, 0);
    return Next::reply;
  };
  if (at == Side::server) {
    switch (s.flags) {
      case tcp::syn:
        *len = write_segment(frame, s.tuple, at, tcp::syn | tcp::ack, server_isn(s.tuple), s.seq + 1, 0);
        return Next::reply;
      case tcp::ack:  // the handshake's last packet
        return churn ? Next::drop : Next::opened;
      case tcp::psh | tcp::ack:  // data: the server closes, acknowledging it
        return churn ? reply(tcp::fin | tcp::ack, s.seq + s.payload) : Next::drop;
      case tcp::fin | tcp::ack:
        return reply(tcp::ack, s.seq + 1);
      default:
        return Next::foreign;
    }
  }
  switch (s.flags) {
    case tcp::syn | tcp::ack:
      reply(tcp::ack, s.seq + 1);
      return churn ? Next::reply_and_data : Next::reply;
    case tcp::fin | tcp::ack:
      return reply(tcp::fin | tcp::ack, s.seq + 1);
    case tcp::ack:
      return Next::done;
    case tcp::psh | tcp::ack:
      return Next::drop;
    default:
      return Next::foreign;
  }
}

uint16_t write_data(const uint8_t* ack_frame, uint8_t* out) {
  Segment s;
  read_segment(ack_frame, frame_len(0), &s);
  return write_segment(out, s.tuple, Side::client, tcp::psh | tcp::ack, s.seq, s.ack, kDataLen);
}

bool inspect(const uint8_t* frame, uint16_t len, Seen* seen) {
  Segment s;
  if (!read_segment(frame, len, &s)) return false;
  const rte_tcp_hdr* tcp = tcp_of(frame);
  seen->flags = s.flags;
  seen->src_port = rte_be_to_cpu_16(tcp->src_port);
  seen->dst_port = rte_be_to_cpu_16(tcp->dst_port);
  seen->payload = s.payload;
  return true;
}

void stamp(uint8_t* frame, uint16_t len, uint64_t tsc) {
  uint8_t* p = frame + len - kTrailer;
  for (int i = 0; i < kTrailer; ++i) p[i] = static_cast<uint8_t>(tsc >> (8 * i));
}

uint64_t stamp_of(const uint8_t* frame, uint16_t len) {
  const uint8_t* p = frame + len - kTrailer;
  uint64_t tsc = 0;
  for (int i = 0; i < kTrailer; ++i) tsc |= static_cast<uint64_t>(p[i]) << (8 * i);
  return tsc;
}

}  // namespace kmodkit::bench
