// The firewall binary end to end on real DPDK virtual devices: pcaps in on both ports of a
// pair, pcaps out, counters printed; and its refusals.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "helpers.hpp"
#include "kmodkit/files.hpp"
#include "kmodkit/subprocess.hpp"

using kmodkit::test::Run;
using kmodkit::test::TempDir;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<uint8_t>;

void put16(Bytes& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// A TCP header (flags), a UDP header, or an ICMP/ICMPv6 header (type; echo identifier `sport`).
Bytes l4_header(uint8_t proto, uint16_t sport, uint16_t dport, uint8_t flags_or_type) {
  Bytes l4;
  if (proto == 6 || proto == 17) {
    put16(l4, sport);
    put16(l4, dport);
  }
  if (proto == 6) {
    for (int i = 0; i < 8; ++i) l4.push_back(0);
    l4.push_back(0x50);
    l4.push_back(flags_or_type);
    for (int i = 0; i < 6; ++i) l4.push_back(0);
  } else if (proto == 17) {
    put16(l4, 8);
    put16(l4, 0);
  } else {
    l4 = {flags_or_type, 0, 0, 0};
    put16(l4, sport);
    put16(l4, 1);
  }
  return l4;
}

// Appends the source and destination addresses of `family` and the L4 header to an IP header,
// and pads the frame to Ethernet's 60-byte minimum.
Bytes finish_frame(Bytes f, int family, const char* src, const char* dst, const Bytes& l4) {
  const size_t n = family == AF_INET ? 4 : 16;
  uint8_t a[16];
  inet_pton(family, src, a);
  f.insert(f.end(), a, a + n);
  inet_pton(family, dst, a);
  f.insert(f.end(), a, a + n);
  f.insert(f.end(), l4.begin(), l4.end());
  f.resize(std::max<size_t>(f.size(), 60), 0);
  return f;
}

// An Ethernet/IPv4 frame with a TCP (flags), UDP or ICMP echo (type) header.
Bytes frame(const char* src, const char* dst, uint8_t proto, uint16_t sport, uint16_t dport, uint8_t flags_or_type) {
  const Bytes l4 = l4_header(proto, sport, dport, flags_or_type);
  Bytes f(12, 0x02);
  put16(f, 0x0800);
  f.push_back(0x45);
  f.push_back(0);
  put16(f, static_cast<uint16_t>(20 + l4.size()));
  put16(f, 1);
  put16(f, 0);
  f.push_back(64);
  f.push_back(proto);
  put16(f, 0);
  return finish_frame(std::move(f), AF_INET, src, dst, l4);
}

// An Ethernet/IPv6 frame with a TCP (flags) or ICMPv6 (type; echo identifier `sport`) header.
Bytes frame6(const char* src, const char* dst, uint8_t next, uint16_t sport, uint16_t dport, uint8_t flags_or_type) {
  Bytes l4 = l4_header(next, sport, dport, flags_or_type);
  if (next == 58 && (flags_or_type == 135 || flags_or_type == 136)) l4.resize(24, 0);  // ND: the target address
  Bytes f(12, 0x02);
  put16(f, 0x86DD);
  for (uint8_t b : {0x60, 0, 0, 0}) f.push_back(b);
  put16(f, static_cast<uint16_t>(l4.size()));
  f.push_back(next);
  f.push_back(64);
  return finish_frame(std::move(f), AF_INET6, src, dst, l4);
}

// The frame with an 802.1Q tag (VLAN `vid`) after its MAC addresses.
Bytes tagged(Bytes f, uint16_t vid) {
  const Bytes tag = {0x81, 0x00, static_cast<uint8_t>(vid >> 8), static_cast<uint8_t>(vid)};
  f.insert(f.begin() + 12, tag.begin(), tag.end());
  return f;
}

// An ICMP destination unreachable from `src` to `dst` quoting the IP header and first 8 bytes
// of `about` (an untagged frame).
Bytes icmp_unreachable(const char* src, const char* dst, const Bytes& about) {
  Bytes f = frame(src, dst, 1, 0, 0, 3);
  f.resize(14 + 20 + 8);
  f.insert(f.end(), about.begin() + 14, about.begin() + 14 + 28);
  f[16] = 0;
  f[17] = 20 + 8 + 28;
  return f;
}

// An ICMPv6 error (`type` 1-4) from `src` to `dst` quoting the IPv6 header and first 8 bytes of
// `about` (an untagged IPv6 frame).
Bytes icmp6_error(const char* src, const char* dst, uint8_t type, const Bytes& about) {
  Bytes f = frame6(src, dst, 58, 0, 0, type);
  f.resize(14 + 40 + 8);
  f.insert(f.end(), about.begin() + 14, about.begin() + 14 + 48);
  f[18] = 0;
  f[19] = 8 + 48;
  return f;
}

// An ICMP message of `type` whose bytes 4-5 (an echo's identifier, an error's unused or MTU
// field, a redirect's gateway) hold `word`, and which quotes nothing.
Bytes icmp_bare(const char* src, const char* dst, uint8_t type, uint16_t word) { return frame(src, dst, 1, word, 0, type); }

void write_pcap(const fs::path& path, const std::vector<Bytes>& frames) {
  std::ofstream out(path, std::ios::binary);
  const uint32_t header[] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1};
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  for (const auto& f : frames) {
    const uint32_t rec[] = {0, 0, static_cast<uint32_t>(f.size()), static_cast<uint32_t>(f.size())};
    out.write(reinterpret_cast<const char*>(rec), sizeof rec);
    out.write(reinterpret_cast<const char*>(f.data()), static_cast<std::streamsize>(f.size()));
  }
}

// The frames of a pcap written by net_pcap.
std::vector<Bytes> read_pcap(const fs::path& path) {
  const auto text = kmodkit::test::read_file(path);
  std::vector<Bytes> out;
  size_t off = 24;
  while (off + 16 <= text.size()) {
    uint32_t caplen;
    std::memcpy(&caplen, text.data() + off + 8, 4);
    off += 16;
    out.emplace_back(text.begin() + static_cast<long>(off), text.begin() + static_cast<long>(off + caplen));
    off += caplen;
  }
  return out;
}

// The firewall's arguments for tmp/fw.rules between net_pcap ports reading a.pcap and b.pcap and
// writing a-out.pcap and b-out.pcap.
std::vector<std::string> firewall_args(const TempDir& tmp) {
  return {"--rules", (tmp / "fw.rules").string(), "--vdev",
          "net_pcap0,rx_pcap=" + (tmp / "a.pcap").string() + ",tx_pcap=" + (tmp / "a-out.pcap").string(), "--vdev",
          "net_pcap1,rx_pcap=" + (tmp / "b.pcap").string() + ",tx_pcap=" + (tmp / "b-out.pcap").string(), "--no-huge-mb", "512",
          "--lcores", "0", "--file-prefix", "fw-e2e-" + std::to_string(::getpid())};
}

Run firewall(const TempDir& tmp, std::vector<std::string> extra) {
  std::vector<std::string> args = firewall_args(tmp);
  args.insert(args.end(), extra.begin(), extra.end());
  return kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, args);
}

}  // namespace

TEST_CASE("the firewall passes allowed new flows and their replies, drops the rest, and counts why", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules",
                            "policy deny\n"
                            "allow tcp from 10.0.0.0/8 to any port 22 dir a-to-b\n"
                            "allow udp from any to any port 53\n"
                            "allow icmp type 8 from 10.0.0.0/8 to any\n");
  // Port A (inside) starts flows; port B (outside) answers, and tries one of its own.
  const std::vector<Bytes> a = {
      frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02),              // SYN to ssh: allowed
      frame("10.0.0.1", "192.0.2.1", 6, 40001, 23, 0x02),              // SYN to telnet: policy
      frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0),                 // DNS: allowed
      frame("10.0.0.1", "192.0.2.1", 1, 7, 0, 8),                      // echo request: allowed
      frame("10.0.0.1", "192.0.2.1", 6, 40002, 22, 0x10),              // ACK of no flow: not a SYN
      tagged(frame("10.0.0.2", "192.0.2.1", 17, 5001, 53, 0), 100)};   // DNS on VLAN 100: allowed
  const std::vector<Bytes> b = {
      frame("192.0.2.1", "10.0.0.1", 6, 22, 40000, 0x12),              // SYN-ACK: by state
      frame("192.0.2.1", "10.0.0.1", 6, 40003, 22, 0x02),              // inbound SYN: policy
      frame("192.0.2.1", "10.0.0.1", 17, 53, 5000, 0),                 // DNS answer: by state
      frame("192.0.2.1", "10.0.0.1", 1, 7, 0, 0),                      // echo reply: by state
      icmp_unreachable("192.0.2.1", "10.0.0.1", a[2]),                 // about the DNS flow: related
      tagged(frame("192.0.2.1", "10.0.0.2", 17, 53, 5001, 0), 100),   // tagged answer: by state
      frame("192.0.2.1", "10.0.0.1", 6, 22, 40009, 0x12),              // SYN-ACK of no request: policy
      frame("192.0.2.1", "10.0.0.1", 17, 53, 5999, 0)};                // DNS answer of no query: policy
  write_pcap(tmp / "a.pcap", a);
  write_pcap(tmp / "b.pcap", b);
  auto run = firewall(tmp, {"--duration", "1"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("total: rx 14 tx 9 by state 4 related 1 new flows 4") &&
                             Catch::Contains("drop policy: 4") && Catch::Contains("drop tcp_not_syn: 1") &&
                             Catch::Contains("rule line 3: 2  # allow udp from any to any port 53"));
  // What crossed each way is exactly the frames that should have, in order and untouched
  // (VLAN tags included): the firewall is transparent at L2.
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{a[0], a[2], a[3], a[5]});
  CHECK(read_pcap(tmp / "a-out.pcap") == std::vector<Bytes>{b[0], b[2], b[3], b[4], b[5]});
}

TEST_CASE("a new flow's later packets in the same burst as its first pass by its state, not as new flows", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow udp from any to any port 53\nallow tcp from any to any port 22\n");
  // One capture, read in one burst: each flow's first packet opens it, the next ones find it.
  const std::vector<Bytes> a = {
      frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0),     // opens the DNS flow
      frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02),  // opens the ssh flow
      frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0),     // the DNS flow's: by state
      frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02),  // a retransmitted SYN: by state
      frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0)};    // by state
  write_pcap(tmp / "a.pcap", a);
  write_pcap(tmp / "b.pcap", {});
  auto run = firewall(tmp, {"--duration", "1"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("total: rx 5 tx 5 by state 3 related 0 new flows 2"));
  CHECK(read_pcap(tmp / "b-out.pcap") == a);
}

TEST_CASE("ICMP passes by state only as the reply of a tracked query, and errors only when they quote a tracked flow to its sender", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules",
                            "policy deny\n"
                            "allow icmp type 8 from 10.0.0.0/8 to any\n"
                            "allow icmp6 type 128 from 2001:db8::/64 to any\n"
                            "allow udp from 10.0.0.0/8 to any port 53\n");
  // The inside (port A) opens an echo flow with identifier 0 over each family, and a DNS flow.
  const Bytes ping = frame("10.0.0.1", "192.0.2.1", 1, 0, 0, 8);
  const Bytes dns = frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0);
  const Bytes ping6 = frame6("2001:db8::1", "2001:db8:1::1", 58, 0, 0, 128);
  const std::vector<Bytes> a = {
      ping, dns, ping6,
      frame("10.0.0.1", "192.0.2.1", 1, 0, 0, 0),            // an echo *reply* from the requester: policy
      frame6("2001:db8::1", "2001:db8:1::1", 58, 0, 0, 129)};  // the same over IPv6: policy
  struct Case {
    Bytes frame;
    bool passes;
    const char* what;
  };
  const std::vector<Case> b = {
      {frame("192.0.2.1", "10.0.0.1", 1, 0, 0, 0), true, "the echo reply: by state"},
      {frame("192.0.2.1", "10.0.0.1", 1, 0, 0, 8), false, "a reverse echo request with the open identifier"},
      {icmp_bare("192.0.2.1", "10.0.0.1", 3, 0), false, "unreachable quoting nothing, bytes 4-5 = the open id"},
      {icmp_bare("192.0.2.1", "10.0.0.1", 11, 0), false, "time exceeded quoting nothing"},
      {icmp_bare("192.0.2.1", "10.0.0.1", 12, 0), false, "parameter problem quoting nothing"},
      {icmp_bare("192.0.2.1", "10.0.0.1", 4, 0), false, "source quench quoting nothing"},
      {icmp_unreachable("192.0.2.1", "10.0.0.1", ping), true, "unreachable quoting the echo request: related"},
      {icmp_unreachable("192.0.2.1", "10.0.0.1", dns), true, "unreachable quoting the DNS query: related"},
      {icmp_unreachable("192.0.2.1", "10.0.0.9", dns), false, "the same error sent to another host than the query's sender"},
      {icmp_unreachable("192.0.2.1", "10.0.0.1", frame("10.0.0.1", "192.0.2.1", 17, 5999, 53, 0)), false,
       "unreachable quoting an untracked tuple"},
      {[&] {
         Bytes r = icmp_unreachable("192.0.2.1", "10.0.0.1", ping);
         r[34] = 5;  // a redirect (gateway 0.0.0.0) quoting the tracked echo request
         return r;
       }(),
       false, "a redirect quoting a tracked flow"},
      {frame("192.0.2.1", "10.0.0.1", 1, 0, 0, 14), false, "a timestamp reply with the open id"},
      {frame("192.0.2.1", "10.0.0.1", 1, 1, 0, 0), false, "an echo reply of no request"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 129), true, "the ICMPv6 echo reply: by state"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 128), false, "a reverse ICMPv6 echo request"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 1), false, "ICMPv6 unreachable quoting nothing"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 2), false, "packet too big quoting nothing"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 137), false, "an ICMPv6 redirect"},
      {frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 140), false, "a node information reply with the open id"},
      {icmp6_error("2001:db8:1::1", "2001:db8::1", 3, ping6), true, "time exceeded quoting the ICMPv6 echo: related"},
      {icmp6_error("2001:db8:1::2", "2001:db8::1", 1, ping6), true, "unreachable from a router on the path: related"},
      {icmp6_error("2001:db8:1::1", "2001:db8::2", 1, ping6), false, "the same sent to another host"},
  };
  std::vector<Bytes> b_frames, b_passing;
  for (const auto& c : b) {
    b_frames.push_back(c.frame);
    if (c.passes) b_passing.push_back(c.frame);
  }
  write_pcap(tmp / "a.pcap", a);
  write_pcap(tmp / "b.pcap", b_frames);
  auto run = firewall(tmp, {"--duration", "1"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  // Frame by frame: what crossed each way is exactly the frames that should have, in order.
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{ping, dns, ping6});
  const auto out = read_pcap(tmp / "a-out.pcap");
  for (const auto& c : b) {
    INFO(c.what);
    CHECK((std::find(out.begin(), out.end(), c.frame) != out.end()) == c.passes);
  }
  CHECK(out == b_passing);
  CHECK_THAT(run.output, Catch::Contains("by state 2 related 4 new flows 3") && Catch::Contains("drop policy: 18"));

  // Where the rules allow everything, a reply of no request still opens no flow (conntrack calls
  // it invalid), and an error or redirect passes by the rules without opening one: a request
  // from the other end afterwards is a new flow, not a match.
  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");
  const Bytes stray_reply = frame("10.0.0.1", "192.0.2.1", 1, 3, 0, 0);
  const Bytes bare_error = icmp_bare("10.0.0.1", "192.0.2.1", 3, 3);
  write_pcap(tmp / "a.pcap", {stray_reply, bare_error});
  write_pcap(tmp / "b.pcap", {frame("192.0.2.1", "10.0.0.1", 1, 3, 0, 8)});
  auto open = firewall(tmp, {"--duration", "1"});
  INFO(open.output);
  REQUIRE(open.code == 0);
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{bare_error});
  CHECK_THAT(open.output, Catch::Contains("by state 0 related 0 new flows 1") && Catch::Contains("untracked 1") &&
                              Catch::Contains("drop icmp_unsolicited_reply: 1"));
}

TEST_CASE("an empty or all-comment rules file starts with a warning naming the file and the policy", "[e2e][firewall]") {
  TempDir tmp;
  write_pcap(tmp / "a.pcap", {frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02)});
  write_pcap(tmp / "b.pcap", {});
  for (const char* text : {"", "# nothing here yet\n\n"}) {
    kmodkit::test::write_file(tmp / "fw.rules", text);
    auto run = firewall(tmp, {"--duration", "0.5", "--log-format", "human"});
    INFO(run.output);
    REQUIRE(run.code == 0);
    CHECK_THAT(run.output, Catch::Contains("warning [firewall] " + (tmp / "fw.rules").string() +
                                           " holds no rules: every new flow is dropped by the policy (policy deny, the default)"));
    CHECK_THAT(run.output, Catch::Contains("drop policy: 1"));
  }
}

// Sends `sig` to `pid` every 100 ms until `log` holds `text`; false after 30 s.
bool signal_until(pid_t pid, int sig, const fs::path& log, const std::string& text) {
  for (int i = 0; i < 300; ++i) {
    if (fs::exists(log) && kmodkit::test::read_file(log).find(text) != std::string::npos) return true;
    if (sig != 0) ::kill(pid, sig);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// A firewall forwarding in the background between tmp's pcap ports (firewall_args), with its log
// in tmp/fw.log, human-readable; `rules` replaces tmp/fw.rules when given.
struct Forwarding {
  pid_t pid = -1;
  fs::path log;
  // Stops it with SIGTERM and waits: its exit status, and its log.
  std::pair<int, std::string> stop() {
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return {status, kmodkit::test::read_file(log)};
  }
};
Forwarding start_forwarding(const TempDir& tmp, const std::vector<std::string>& extra = {}, const fs::path& rules = {}) {
  std::vector<std::string> argv = {KMODKIT_FIREWALL_BIN, "--log-format", "human", "--duration", "60"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  for (const auto& a : firewall_args(tmp)) argv.push_back(a);
  if (!rules.empty()) *(std::find(argv.begin(), argv.end(), "--rules") + 1) = rules.string();
  Forwarding f{-1, tmp / "fw.log"};
  f.pid = kmodkit::test::spawn(argv, f.log);
  return f;
}

TEST_CASE("a reload keeps the counters of the rules it did not change and logs what it added, removed and kept", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules",
                            "policy deny\n"
                            "allow tcp from 10.0.0.0/8 to any port 22\n"
                            "allow udp from 10.0.0.0/8 to any port 53\n");
  write_pcap(tmp / "a.pcap", {frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02), frame("10.0.0.2", "192.0.2.1", 6, 40001, 22, 0x02),
                              frame("10.0.0.3", "192.0.2.1", 6, 40002, 22, 0x02), frame("10.0.0.1", "192.0.2.1", 17, 5000, 53, 0)});
  write_pcap(tmp / "b.pcap", {});
  auto fw = start_forwarding(tmp);
  const pid_t pid = fw.pid;
  const fs::path log = fw.log;
  // The firewall's own word that it forwards, then its counters once it has seen the 4 frames.
  REQUIRE(signal_until(pid, 0, log, "forwarding:"));
  REQUIRE(signal_until(pid, SIGUSR1, log, "total: rx 4 "));
  // The ssh rule re-indented and moved below a new one, the DNS rule gone.
  kmodkit::test::write_file(tmp / "fw.rules.new",
                            "policy deny\n"
                            "allow icmp from any to any\n"
                            "allow  tcp from 10.0.0.0/8 to any port 22   # ssh\n");
  fs::rename(tmp / "fw.rules.new", tmp / "fw.rules");
  ::kill(pid, SIGHUP);
  const bool reloaded = signal_until(pid, 0, log, "reloaded");
  const auto [status, output] = fw.stop();
  INFO(output);
  CHECK(reloaded);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(output, Catch::Contains("reloaded, 2 rules in force (were 2): 1 added, 1 removed, 1 kept with their counters"));
  CHECK_THAT(output, Catch::Contains("rule line 2: 0  # allow icmp from any to any") &&
                         Catch::Contains("rule line 3: 3  # allow  tcp from 10.0.0.0/8 to any port 22"));
}

namespace {

// One version of a ConfigMap volume holding fw.rules, laid out and swapped in as the kubelet's
// atomic writer does: the files in ..VERSION/, ..data_tmp -> ..VERSION renamed over ..data, the
// old version removed; fw.rules -> ..data/fw.rules.
void configmap_update(const fs::path& dir, int version, const std::string& rules) {
  const std::string name = "..2026_12_05_08_00_0" + std::to_string(version);
  fs::create_directory(dir / name);
  kmodkit::test::write_file(dir / name / "fw.rules", rules);
  fs::create_directory_symlink(name, dir / "..data_tmp");
  std::error_code ec;
  const fs::path old = fs::exists(fs::symlink_status(dir / "..data")) ? dir / fs::read_symlink(dir / "..data") : fs::path();
  fs::rename(dir / "..data_tmp", dir / "..data");
  if (!old.empty()) fs::remove_all(old);
  if (!fs::exists(fs::symlink_status(dir / "fw.rules"))) fs::create_symlink("..data/fw.rules", dir / "fw.rules");
}

}  // namespace

TEST_CASE("the rules follow a ConfigMap update (the kubelet's ..data swap) as SIGHUP would, and an unchanged file is not reloaded", "[e2e][firewall]") {
  TempDir tmp;
  const fs::path cm = tmp / "configmap";
  fs::create_directory(cm);
  configmap_update(cm, 1, "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\n");
  write_pcap(tmp / "a.pcap", {frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02)});
  write_pcap(tmp / "b.pcap", {});
  auto fw = start_forwarding(tmp, {}, cm / "fw.rules");
  const pid_t pid = fw.pid;
  const fs::path log = fw.log;
  REQUIRE(signal_until(pid, 0, log, "forwarding:"));
  configmap_update(cm, 2, "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\nallow udp from any to any port 53\n");
  const bool reloaded = signal_until(pid, 0, log, "reloaded, 2 rules in force");
  // Another key of the ConfigMap changed: the same fw.rules swapped in again (in its own ticks).
  configmap_update(cm, 3, "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\nallow udp from any to any port 53\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  configmap_update(cm, 4, "policy deny\nallow nonsense\n");
  const bool refused = signal_until(pid, 0, log, "reload refused");
  configmap_update(cm, 5, "policy allow\n");
  const bool reloaded_again = signal_until(pid, 0, log, "reloaded, 0 rules in force");
  const auto [status, output] = fw.stop();
  INFO(output);
  CHECK(reloaded);
  CHECK(refused);
  CHECK(reloaded_again);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(output, Catch::Contains(": changed, reloading") &&
                         Catch::Contains("reloaded, 2 rules in force (were 1): 1 added, 0 removed, 1 kept with their counters"));
  CHECK_THAT(output, Catch::Contains("reload refused, the rules in force stay: " + (cm / "fw.rules").string() + ":2:7"));
  size_t changes = 0;
  for (size_t at = output.find("changed, reloading"); at != std::string::npos; at = output.find("changed, reloading", at + 1)) ++changes;
  CHECK(changes == 3);  // versions 2, 4 and 5; not 3
}

TEST_CASE("the firewall refuses to start on a bad rules file, missing ports or an odd port count", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/33 to any\n");
  write_pcap(tmp / "a.pcap", {});
  write_pcap(tmp / "b.pcap", {});
  auto bad = firewall(tmp, {"--duration", "1"});
  CHECK(bad.code == 65);
  CHECK_THAT(bad.last_line, Catch::Contains("fw.rules:2:16: '10.0.0.0/33' is not an IPv4 prefix"));

  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");
  auto none = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string()}, {{"PCIDEVICE_X", ""}});
  CHECK(none.code == 78);
  CHECK_THAT(none.last_line, Catch::Contains("no ports"));

  // Too little memory for the flow table, and a CPU outside the cpuset: refused, saying so.
  auto small = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--vdev", "net_null0",
                                                                "--vdev", "net_null1", "--no-huge-mb", "64", "--lcores", "0",
                                                                "--duration", "1"});
  CHECK(small.code == 78);
  CHECK_THAT(small.last_line, Catch::Contains("1048576 flows needs about 229 MB of hugepages"));
  auto cpu = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--vdev", "net_null0",
                                                              "--lcores", "1000", "--print-eal-args"});
  CHECK(cpu.code == 78);
  CHECK_THAT(cpu.last_line, Catch::Contains("CPU 1000 is not one this process may run on"));

  auto odd = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--vdev", "net_null0",
                                                              "--no-huge-mb", "256", "--lcores", "0", "--duration", "1"});
  CHECK(odd.code == 78);
  CHECK_THAT(odd.last_line, Catch::Contains("ports in pairs"));
}

TEST_CASE("EAL arguments come from the device plugin's variables and the cpuset", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");
  auto run = kmodkit::test::run_binary(
      KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--print-eal-args", "--file-prefix", "fw1"},
      {{"PCIDEVICE_INTEL_COM_SRIOV_DPDK", "0000:3b:02.0,0000:3b:02.1"}, {"PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO", "{}"}});
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("-a 0000:3b:02.0 -a 0000:3b:02.1") && Catch::Contains("--file-prefix fw1") &&
                             Catch::Contains(" -l "));

  // The device plugin mounted /dev/vfio/<group> for the VF; without it the firewall refuses.
  auto unmounted = kmodkit::test::run_binary(
      KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--print-eal-args"},
      {{"PCIDEVICE_INTEL_COM_SRIOV_DPDK", "0000:3b:02.0"},
       {"PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO",
        R"({"0000:3b:02.0":{"generic":{"deviceID":"0000:3b:02.0"},"vfio":{"dev-mount":"/dev/vfio/kmodkit-none","mount":"/dev/null"}}})"}});
  CHECK(unmounted.code == 78);
  CHECK_THAT(unmounted.last_line, Catch::Contains("/dev/vfio/kmodkit-none") && Catch::Contains("PCIDEVICE_INTEL_COM_SRIOV_DPDK_INFO"));
}

TEST_CASE("the pod's network-status orders the ports as its networks, and --port overrides it", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");
  // Multus's annotation through the downward API: outside (net1) first, as the pod lists its
  // networks; the device plugin's variable has the two VFs the other way round.
  kmodkit::test::write_file(tmp / "network-status", R"([{"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.17"], "default": true, "dns": {}},
    {"name": "kmodkit/kmodkit-outside", "interface": "net1", "dns": {},
     "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:af:06.3"}}},
    {"name": "kmodkit/kmodkit-inside", "interface": "net2", "dns": {},
     "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:af:06.0"}}}])");
  const kmodkit::test::Env pod = {{"PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK", "0000:af:06.0,0000:af:06.3"},
                                  {"KMODKIT_NETWORK_STATUS", (tmp / "network-status").string()}};
  auto run = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--print-eal-args"}, pod);
  INFO(run.output);
  CHECK(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("-a 0000:af:06.3 -a 0000:af:06.0"));
  CHECK_THAT(run.output, Catch::Contains("port 0 (pair 0, side a) is 0000:af:06.3: network kmodkit/kmodkit-outside, interface net1") &&
                             Catch::Contains("port 1 (pair 0, side b) is 0000:af:06.0: network kmodkit/kmodkit-inside, interface net2"));

  // --port wins, and the file is not read at all.
  auto given = kmodkit::test::run_binary(
      KMODKIT_FIREWALL_BIN,
      {"--rules", (tmp / "fw.rules").string(), "--print-eal-args", "--port", "0000:af:06.0", "--port", "0000:af:06.3",
       "--network-status", (tmp / "absent").string()},
      pod);
  INFO(given.output);
  CHECK(given.code == 0);
  CHECK_THAT(given.output, Catch::Contains("-a 0000:af:06.0 -a 0000:af:06.3"));

  auto missing = kmodkit::test::run_binary(
      KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--print-eal-args", "--network-status", (tmp / "absent").string()},
      pod);
  CHECK(missing.code == 66);
  CHECK_THAT(missing.last_line, Catch::Contains("network-status file") && Catch::Contains((tmp / "absent").string()));
}

TEST_CASE("two workers each own a queue of every port and a flow table of their own", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/8 to any port 22 dir a-to-b\n");
  // Queue 0 of both ports carries flow X, queue 1 flow Y (what symmetric RSS does on a NIC).
  const Bytes x_syn = frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02), x_ack = frame("192.0.2.1", "10.0.0.1", 6, 22, 40000, 0x12);
  const Bytes y_syn = frame("10.0.0.2", "192.0.2.1", 6, 40001, 22, 0x02), y_ack = frame("192.0.2.1", "10.0.0.2", 6, 22, 40001, 0x12);
  write_pcap(tmp / "a0.pcap", {x_syn});
  write_pcap(tmp / "a1.pcap", {y_syn});
  write_pcap(tmp / "b0.pcap", {x_ack});
  write_pcap(tmp / "b1.pcap", {y_ack, frame("192.0.2.1", "10.0.0.1", 6, 22, 40000, 0x10)});  // X's on Y's worker: no flow there
  const auto dev = [&](int port, const char* side) {
    const std::string d = (tmp / side).string();
    return "net_pcap" + std::to_string(port) + ",rx_pcap=" + d + "0.pcap,rx_pcap=" + d + "1.pcap,tx_pcap=" + d + "0-out.pcap,tx_pcap=" + d +
           "1-out.pcap";
  };
  // Three lcores on this machine's CPUs (the main one and two workers), whatever their number.
  auto run = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN,
                                       {"--rules", (tmp / "fw.rules").string(), "--vdev", dev(0, "a"), "--vdev", dev(1, "b"),
                                        "--lcore-map", "(0-2)@(0)", "--no-huge-mb", "512", "--flows", "4096", "--duration", "1",
                                        "--file-prefix", "fw-e2e-w-" + std::to_string(::getpid())});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("2 worker(s)") && Catch::Contains("2048 flows per worker") &&
                             Catch::Contains("worker 0: rx 2 tx 2 by state 1 new flows 1") &&
                             Catch::Contains("worker 1: rx 3 tx 2 by state 1 new flows 1") &&
                             Catch::Contains("drop policy: 1"));  // the stray packet: a new flow to the rules
  CHECK(read_pcap(tmp / "b0-out.pcap") == std::vector<Bytes>{x_syn});
  CHECK(read_pcap(tmp / "b1-out.pcap") == std::vector<Bytes>{y_syn});
  CHECK(read_pcap(tmp / "a0-out.pcap") == std::vector<Bytes>{x_ack});
  CHECK(read_pcap(tmp / "a1-out.pcap") == std::vector<Bytes>{y_ack});
}

TEST_CASE("IPv6 flows are tracked beside IPv4 ones in the same bursts, and neighbour discovery passes", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules",
                            "policy deny\n"
                            "allow tcp from 2001:db8::/64 to any port 22 dir a-to-b\n"
                            "allow icmp6 type 128 from 2001:db8::/64 to any\n"
                            "allow tcp from 10.0.0.0/8 to any port 22 dir a-to-b\n");
  const std::vector<Bytes> a = {
      frame6("2001:db8::1", "2001:db8:1::1", 6, 40000, 22, 0x02),   // SYN to ssh: allowed
      frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02),           // the same over IPv4: allowed
      frame6("2001:db8::1", "2001:db8:1::1", 58, 9, 0, 128),        // echo request: allowed
      frame6("2001:db8::1", "ff02::1:ff00:1", 58, 0, 0, 135),       // neighbour solicitation: by policy
      frame6("2001:db8::1", "2001:db8:1::1", 6, 40001, 23, 0x02)};  // SYN to telnet: policy
  const std::vector<Bytes> b = {
      frame6("2001:db8:1::1", "2001:db8::1", 6, 22, 40000, 0x12),   // SYN-ACK: by state
      frame("192.0.2.1", "10.0.0.1", 6, 22, 40000, 0x12),           // IPv4 SYN-ACK: by state
      frame6("2001:db8:1::1", "2001:db8::1", 58, 9, 0, 129),        // echo reply: by state
      frame6("2001:db8:1::1", "2001:db8::1", 58, 0, 0, 136),        // neighbour advertisement
      frame6("2001:db8:1::1", "2001:db8::1", 6, 40002, 22, 0x02),   // inbound SYN: policy
      frame6("2001:db8:1::1", "2001:db8::1", 58, 10, 0, 129)};      // a reply to no request: policy
  write_pcap(tmp / "a.pcap", a);
  write_pcap(tmp / "b.pcap", b);
  auto run = firewall(tmp, {"--duration", "1"});
  INFO(run.output);
  REQUIRE(run.code == 0);
  CHECK_THAT(run.output, Catch::Contains("(1 IPv4 and 2 IPv6 ACL rules)") &&
                             Catch::Contains("total: rx 11 tx 8 by state 3 related 0 new flows 3 expired 0 arp/nd 2") &&
                             Catch::Contains("drop policy: 3"));
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{a[0], a[1], a[2], a[3]});
  CHECK(read_pcap(tmp / "a-out.pcap") == std::vector<Bytes>{b[0], b[1], b[2], b[3]});
}

TEST_CASE("ARP passes by policy, other EtherTypes only with --pass-non-ip", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\n");
  Bytes arp(12, 0x02), lldp(12, 0x02);
  put16(arp, 0x0806);
  put16(lldp, 0x88CC);
  arp.resize(60, 0x01);
  lldp.resize(60, 0x07);
  write_pcap(tmp / "a.pcap", {arp, lldp});
  write_pcap(tmp / "b.pcap", {});
  auto plain = firewall(tmp, {"--duration", "1"});
  INFO(plain.output);
  REQUIRE(plain.code == 0);
  CHECK_THAT(plain.output, Catch::Contains("arp/nd 1") && Catch::Contains("drop non_ip: 1"));
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{arp});
  auto passing = firewall(tmp, {"--duration", "1", "--pass-non-ip"});
  INFO(passing.output);
  REQUIRE(passing.code == 0);
  CHECK_THAT(passing.output, Catch::Contains("drop non_ip: 0"));
  CHECK(read_pcap(tmp / "b-out.pcap") == std::vector<Bytes>{arp, lldp});
}

namespace {

std::vector<std::string> joined(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Free hugepages of the default size, as the kernel counts them.
long free_hugepages() {
  std::istringstream in(kmodkit::test::read_file("/proc/meminfo"));
  std::string key;
  long value = -1;
  while (in >> key) {
    if (key == "HugePages_Free:") {
      in >> value;
      break;
    }
  }
  return value;
}

// EAL's runtime directory for a file prefix, where EAL puts it for this user.
fs::path eal_runtime_dir(const std::string& prefix) {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  const fs::path base = ::geteuid() == 0 ? fs::path("/var/run") : fs::path(xdg != nullptr ? xdg : "/tmp");
  return base / "dpdk" / prefix;
}

// Hugepages reserved and a hugetlbfs mounted for one test, both given back at its end. The
// node's hugepages are one pool: the test holds a lock of the whole machine's while it counts
// them, so that two checkouts' suites running at once do not count each other's pages.
struct HugepageMount {
  fs::path dir;
  std::string reserved;  // nr_hugepages before
  kmodkit::files::Fd lock;
  explicit HugepageMount(const fs::path& where, int pages) : dir(where) {
    lock = kmodkit::files::Fd(::open("/run/lock/kmodkit-test-hugepages", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (lock) ::flock(lock.get(), LOCK_EX);
    reserved = kmodkit::test::read_file("/proc/sys/vm/nr_hugepages");
    std::ofstream("/proc/sys/vm/nr_hugepages") << std::stol(reserved) + pages << "\n";
    fs::create_directories(dir);
    if (::mount("nodev", dir.c_str(), "hugetlbfs", 0, nullptr) != 0) dir.clear();
  }
  ~HugepageMount() {
    if (!dir.empty()) ::umount(dir.c_str());
    std::ofstream("/proc/sys/vm/nr_hugepages") << reserved;
  }
};

}  // namespace

TEST_CASE("the firewall leaves nothing behind: no runtime directory, no hugepage file, also when killed with SIGKILL", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy allow\n");
  const std::string prefix = "fw-e2e-clean-" + std::to_string(::getpid());
  const std::vector<std::string> base = {"--rules", (tmp / "fw.rules").string(), "--vdev", "net_null0", "--vdev", "net_null1",
                                         "--lcores", "0", "--flows", "4096", "--file-prefix", prefix};
  // Without hugepages: EAL's runtime directory (config, sockets) goes with the process.
  auto plain = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, joined(base, {"--no-huge-mb", "256", "--duration", "1"}));
  INFO(plain.output);
  REQUIRE(plain.code == 0);
  CHECK_FALSE(fs::exists(eal_runtime_dir(prefix)));
  // Nor when EAL refuses to start (a device it does not know).
  auto refused = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"--rules", (tmp / "fw.rules").string(), "--vdev", "net_kmodkit0",
                                                                  "--vdev", "net_null1", "--lcores", "0", "--no-huge-mb", "256",
                                                                  "--file-prefix", prefix, "--duration", "1"});
  CHECK(refused.code == 78);
  CHECK_THAT(refused.last_line, Catch::Contains("EAL did not start"));
  CHECK_FALSE(fs::exists(eal_runtime_dir(prefix)));

  if (::geteuid() != 0) {
    WARN("not root: the hugepage half needs reserved hugepages and a hugetlbfs mount");
    return;
  }
  HugepageMount huge(tmp / "huge", 64);
  REQUIRE_FALSE(huge.dir.empty());
  const long before = free_hugepages();
  REQUIRE(before >= 32);
  const auto on_huge = joined(base, {"--huge-dir", huge.dir.string()});

  // A clean stop gives every page back and leaves no file in the mount.
  auto stopped = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, joined(on_huge, {"--duration", "1"}));
  INFO(stopped.output);
  REQUIRE(stopped.code == 0);
  CHECK(fs::is_empty(huge.dir));
  CHECK(free_hugepages() == before);
  CHECK_FALSE(fs::exists(eal_runtime_dir(prefix)));

  // Killed while it runs: the files were unlinked once mapped, so the kernel takes the pages back
  // with the process, and a rerun with the same prefix starts.
  const auto argv = joined(joined({KMODKIT_FIREWALL_BIN}, on_huge), {"--duration", "60"});
  const pid_t pid = kmodkit::test::spawn(argv, tmp / "killed.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (free_hugepages() == before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // into the data plane
  INFO(kmodkit::test::read_file(tmp / "killed.log"));
  CHECK(free_hugepages() < before);
  CHECK(fs::is_empty(huge.dir));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(free_hugepages() == before);
  auto rerun = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, joined(on_huge, {"--duration", "1"}));
  INFO(rerun.output);
  CHECK(rerun.code == 0);
  CHECK(free_hugepages() == before);
  CHECK_FALSE(fs::exists(eal_runtime_dir(prefix)));
}

TEST_CASE("a SIGTERM at any moment of start-up ends in order: exit 0, no runtime directory left", "[e2e][firewall]") {
  TempDir tmp;
  // Enough rules that reading and compiling them takes a while: the delays below land while the
  // rules are read, while EAL starts, while the ACL is built, while ports start, and once running.
  std::string rules = "policy deny\n";
  for (int i = 0; i < 3000; ++i) {
    rules += "allow tcp from 10." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ".0/24 to any port " +
             std::to_string(1000 + i) + "\n";
  }
  kmodkit::test::write_file(tmp / "fw.rules", rules);
  const std::string prefix = "fw-e2e-term-" + std::to_string(::getpid());
  const std::vector<std::string> argv = {KMODKIT_FIREWALL_BIN, "--rules", (tmp / "fw.rules").string(), "--vdev", "net_null0",
                                         "--vdev", "net_null1", "--no-huge-mb", "256", "--lcores", "0", "--flows", "4096",
                                         "--file-prefix", prefix, "--duration", "60"};
  for (int delay_ms = 0; delay_ms <= 1500; delay_ms += delay_ms < 100 ? 10 : 100) {
    INFO("SIGTERM " << delay_ms << " ms after the start");
    const fs::path log = tmp / ("term-" + std::to_string(delay_ms) + ".log");
    const pid_t pid = kmodkit::test::spawn(argv, log);
    // Counted from the exec: before it the child is this test (its signal handlers included).
    std::error_code ec;
    while (fs::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec) != fs::canonical(KMODKIT_FIREWALL_BIN)) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL("still running 60 s after SIGTERM");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string output = kmodkit::test::read_file(log);
    INFO(output);
    // Only a signal that came before main ran (exec, the dynamic loader) may end it by default,
    // and then it has printed nothing; from main on, a stop request ends in order.
    if (WIFSIGNALED(status)) {
      CHECK(WTERMSIG(status) == SIGTERM);
      CHECK(output.empty());
    } else {
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
    }
    CHECK_FALSE(fs::exists(eal_runtime_dir(prefix)));
  }
}

namespace {

// GET url with curl: (HTTP status, body); status 0 when nothing answered.
std::pair<int, std::string> http_get(const std::string& url, const fs::path& body) {
  auto out = kmodkit::subprocess::run({"curl", "-s", "-o", body.string(), "-w", "%{http_code}", "--max-time", "5", url});
  if (!out || !out->ok()) return {0, ""};
  return {std::atoi(out->output.c_str()), fs::exists(body) ? kmodkit::test::read_file(body) : ""};
}

}  // namespace

TEST_CASE("the metrics endpoint (--metrics) serves the counters in the Prometheus text format, and the probes, while the firewall forwards", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/8 to any port 22  # \"ssh\"\n");
  write_pcap(tmp / "a.pcap", {frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02), frame("10.0.0.1", "192.0.2.1", 6, 40001, 23, 0x02),
                              frame("10.0.0.2", "192.0.2.1", 6, 40002, 22, 0x02)});
  write_pcap(tmp / "b.pcap", {frame("192.0.2.1", "10.0.0.1", 6, 22, 40000, 0x12)});
  const std::string listen = "127.0.0.1:" + std::to_string(kmodkit::test::free_port());
  auto fw = start_forwarding(tmp, {"--metrics", listen});
  const pid_t pid = fw.pid;
  const fs::path log = fw.log;
  REQUIRE(signal_until(pid, 0, log, "forwarding:"));
  // The frames are read at once; the scrape that sees all four received is the one to check.
  std::pair<int, std::string> got;
  for (int i = 0; i < 50; ++i) {
    got = http_get("http://" + listen + "/metrics", tmp / "metrics.txt");
    if (got.second.find("kmodkit_firewall_port_received_packets_total{port=\"1\",device=\"net_pcap1\"} 1\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto other = http_get("http://" + listen + "/nothing", tmp / "other.txt");
  // The probes: live and ready while it forwards; a rules file with an error keeps the rules in
  // force but makes it unready, saying where the error is, until a good file is reloaded.
  const auto healthz = http_get("http://" + listen + "/healthz", tmp / "healthz.txt");
  const auto ready = http_get("http://" + listen + "/readyz", tmp / "readyz.txt");
  // until_readyz CODE: polls /readyz until it answers CODE (at most 3 s).
  const auto until_readyz = [&](int code) {
    std::pair<int, std::string> r;
    for (int i = 0; i < 30; ++i) {
      r = http_get("http://" + listen + "/readyz", tmp / "readyz.txt");
      if (r.first == code) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return r;
  };
  // (The firewall follows its rules file: a write is reloaded as SIGHUP would.)
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\nallow bogus\n");
  const auto unready = until_readyz(503);
  const auto still_live = http_get("http://" + listen + "/healthz", tmp / "healthz.txt");
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\n");
  const auto ready_again = until_readyz(200);
  const auto after = http_get("http://" + listen + "/metrics", tmp / "after.txt");
  const auto [status, output] = fw.stop();
  INFO(output);
  INFO(got.second);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(got.first == 200);
  CHECK(other.first == 404);
  CHECK(healthz == std::pair<int, std::string>{200, "ok\n"});
  CHECK(ready == std::pair<int, std::string>{200, "ok\n"});
  CHECK(unready.first == 503);
  CHECK_THAT(unready.second, Catch::Contains("the rules file has an error") && Catch::Contains("fw.rules:3:7"));
  CHECK(still_live.first == 200);
  CHECK(ready_again.first == 200);
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_port_received_packets_total{port=\"0\",device=\"net_pcap0\"} 3\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_port_sent_packets_total{port=\"1\",device=\"net_pcap1\"} 2\n"));
  CHECK_THAT(got.second, Catch::Contains(
                             "kmodkit_firewall_rule_hits_total{line=\"2\",rule=\"allow tcp from 10.0.0.0/8 to any port 22\"} 2\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_dropped_packets_total{reason=\"policy\"} 1\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_passed_packets_total{lcore=\"0\",by=\"state\"} 1\n"));
  // The flow table's figures by protocol: two SSH flows came in and stay.
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flows_created_total{lcore=\"0\",proto=\"tcp\"} 2\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flows_created_total{lcore=\"0\",proto=\"udp\"} 0\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flow_table_entries{lcore=\"0\",proto=\"tcp\"} 2\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flows_evicted_total{lcore=\"0\",proto=\"tcp\"} 0\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flow_insert_failures_total{lcore=\"0\",proto=\"tcp\"} 0\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flow_table_capacity{lcore=\"0\"} 1048576\n"));
  // The pool: its size is known; the buffers out of it are at least the ports' receive rings'.
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_packet_buffers ") &&
                             Catch::Contains("kmodkit_firewall_packet_buffers_in_use "));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_rule_reloads_total{result=\"ok\"} 0\n"));
  // The reloads: one refused, one good; the last one succeeded, at a time after the start's.
  INFO(after.second);
  CHECK_THAT(after.second, Catch::Contains("kmodkit_firewall_rule_reloads_total{result=\"ok\"} 1\n"));
  CHECK_THAT(after.second, Catch::Contains("kmodkit_firewall_rule_reloads_total{result=\"failed\"} 1\n"));
  CHECK_THAT(after.second, Catch::Contains("kmodkit_firewall_rules_last_reload_successful 1\n"));
  const auto stamp = [](const std::string& text) {
    const std::string name = "\nkmodkit_firewall_rules_last_reload_success_timestamp_seconds ";
    const auto at = text.find(name);
    return at == std::string::npos ? 0.0 : std::atof(text.c_str() + at + name.size());
  };
  CHECK(stamp(got.second) > 1.7e9);
  CHECK(stamp(after.second) > stamp(got.second));
  // promtool lints what a Prometheus server would scrape.
  auto lint = kmodkit::subprocess::run({"sh", "-c", "promtool check metrics < " + (tmp / "metrics.txt").string()});
  REQUIRE(lint);
  INFO(lint->output);
  CHECK(lint->ok());
}

TEST_CASE("a full flow table evicts unanswered flows for new ones and counts them by protocol", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\n");
  // 64 flows fit (--flows 64, one worker); 71 SYNs nobody answers: the last 7 find no room, and
  // each evicts an unanswered one (the flow table's unit cases show established ones stay).
  std::vector<Bytes> a = {frame("10.0.1.1", "192.0.2.1", 6, 40000, 22, 0x02)};
  std::vector<Bytes> b;
  for (int i = 0; i < 70; ++i) {
    const std::string src = "10.0.0." + std::to_string(i + 1);
    a.push_back(frame(src.c_str(), "192.0.2.1", 6, 40000, 22, 0x02));
  }
  write_pcap(tmp / "a.pcap", a);
  write_pcap(tmp / "b.pcap", b);
  const std::string listen = "127.0.0.1:" + std::to_string(kmodkit::test::free_port());
  auto fw = start_forwarding(tmp, {"--metrics", listen, "--flows", "64"});
  REQUIRE(signal_until(fw.pid, 0, fw.log, "forwarding:"));
  std::pair<int, std::string> got;
  for (int i = 0; i < 50; ++i) {
    got = http_get("http://" + listen + "/metrics", tmp / "metrics.txt");
    if (got.second.find("kmodkit_firewall_flows_created_total{lcore=\"0\",proto=\"tcp\"} 71\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto [status, output] = fw.stop();
  INFO(output);
  INFO(got.second);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flows_created_total{lcore=\"0\",proto=\"tcp\"} 71\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flows_evicted_total{lcore=\"0\",proto=\"tcp\"} 7\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flow_insert_failures_total{lcore=\"0\",proto=\"tcp\"} 0\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_flow_table_entries{lcore=\"0\",proto=\"tcp\"} 64\n"));
  CHECK_THAT(got.second, Catch::Contains("kmodkit_firewall_dropped_packets_total{reason=\"table_full\"} 0\n"));
}

TEST_CASE("DPDK telemetry answers the firewall's own commands: flows by protocol, rules by page with their hits, health", "[e2e][firewall]") {
  INFO("dpdk-telemetry.py comes with dpdk-dev (ci/install-deps.sh)");
  REQUIRE(kmodkit::subprocess::run({"sh", "-c", "command -v dpdk-telemetry.py"})->ok());
  TempDir tmp;
  // 150 rules: two pages. The SSH rule is the file's line 2.
  std::string rules = "policy deny\nallow tcp from 10.0.0.0/8 to any port 22\n";
  for (int i = 0; i < 149; ++i) rules += "allow udp from any to any port " + std::to_string(1000 + i) + "\n";
  kmodkit::test::write_file(tmp / "fw.rules", rules);
  write_pcap(tmp / "a.pcap", {frame("10.0.0.1", "192.0.2.1", 6, 40000, 22, 0x02), frame("10.0.0.2", "192.0.2.1", 6, 40002, 22, 0x02),
                              frame("10.0.0.3", "192.0.2.1", 17, 5000, 1005, 0)});
  write_pcap(tmp / "b.pcap", {});
  const auto args = firewall_args(tmp);
  const std::string prefix = *(std::find(args.begin(), args.end(), "--file-prefix") + 1);
  auto fw = start_forwarding(tmp);
  const pid_t pid = fw.pid;
  const fs::path log = fw.log;
  REQUIRE(signal_until(pid, 0, log, "forwarding:"));
  REQUIRE(signal_until(pid, SIGUSR1, log, "total: rx 3 "));
  // dpdk-telemetry.py reads commands from its standard input and prints one JSON line each.
  const auto ask = [&](const std::string& commands) {
    auto r = kmodkit::subprocess::run({"sh", "-c", "printf '" + commands + "' | dpdk-telemetry.py -f " + prefix});
    return r ? r->output : std::string();
  };
  const std::string flows = ask("/kmodkit/flows\\n/kmodkit/flows,9\\n");
  const std::string page1 = ask("/kmodkit/rules\\n");
  const std::string page2 = ask("/kmodkit/rules,100\\n");
  const std::string health = ask("/kmodkit/health\\n/help,/kmodkit/flows\\n");
  const auto [status, output] = fw.stop();
  INFO(output);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  INFO(flows);
  CHECK_THAT(flows, Catch::Contains(R"({"/kmodkit/flows": {"tcp": {"entries": 2, "created": 2, "expired": 0, "evicted": 0, "insert_failures": 0}, "udp": {"entries": 1, "created": 1,)"));
  CHECK_THAT(flows, Catch::Contains(R"("capacity": 1048576}})"));
  CHECK_THAT(flows, Catch::Contains(R"({"/kmodkit/flows": null})"));  // no worker on lcore 9
  INFO(page1);
  CHECK_THAT(page1, Catch::Contains(R"("in_force": 150, "reloads_ok": 0, "reloads_failed": 0, "last_reload_successful": 1,)"));
  CHECK_THAT(page1, Catch::Contains(R"("first": 0, "line_2": {"rule": "allow tcp from 10.0.0.0/8 to any port 22", "hits": 2}, "line_3": {)"));
  CHECK_THAT(page1, Catch::Contains(R"("line_101": {"rule": "allow udp from any to any port 1098", "hits": 0}, "next": 100}})"));
  INFO(page2);
  CHECK_THAT(page2, Catch::Contains(R"("first": 100, "line_102": {)"));
  CHECK_THAT(page2, Catch::Contains(R"("line_151": {"rule": "allow udp from any to any port 1148", "hits": 0}}})"));
  CHECK_THAT(page1 + page2, Catch::Contains(R"("line_8": {"rule": "allow udp from any to any port 1005", "hits": 1})"));
  INFO(health);
  CHECK_THAT(health, Catch::Contains(R"({"/kmodkit/health": {"live": "ok", "ready": "ok"}})"));
  CHECK_THAT(health, Catch::Contains(R"({"/help": {"/kmodkit/flows": "The flow tables by protocol)"));
}

TEST_CASE("the metrics endpoint refuses an address that is not HOST:PORT, or one it cannot listen on", "[e2e][firewall]") {
  TempDir tmp;
  kmodkit::test::write_file(tmp / "fw.rules", "policy deny\n");
  write_pcap(tmp / "a.pcap", {});
  write_pcap(tmp / "b.pcap", {});
  auto bad = firewall(tmp, {"--duration", "1", "--metrics", "9100"});
  CHECK(bad.code == 64);
  CHECK_THAT(bad.last_line, Catch::Contains("--metrics 9100: not HOST:PORT"));
  auto elsewhere = firewall(tmp, {"--duration", "1", "--metrics", "192.0.2.1:9100"});
  CHECK(elsewhere.code == 78);
  CHECK_THAT(elsewhere.last_line, Catch::Contains("--metrics 192.0.2.1:9100: cannot listen there"));
}

TEST_CASE("firewall preflight on this machine: a failed check stops with 78 naming it, unless --on-fail continue; JSON when asked", "[e2e][firewall]") {
  TempDir tmp;
  const std::string termination = (tmp / "termination-log").string();
  kmodkit::test::write_file(tmp / "termination-log", "");
  // A port that is on no bus of this machine fails its device check.
  const std::vector<std::string> args = {"preflight", "--port", "0000:ff:1f.7", "--flows", "65536"};
  auto stop = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, args, {{"KMODKIT_TERMINATION_LOG", termination}});
  INFO(stop.output);
  CHECK(stop.code == 78);
  CHECK_THAT(stop.output, Catch::Contains("fail  device 0000:ff:1f.7: 0000:ff:1f.7 is not on the node's PCI bus"));
  CHECK_THAT(stop.output, Catch::Contains("\npreflight: "));
  CHECK_THAT(stop.last_line, Catch::Contains("the node fails the checks ") && Catch::Contains("device 0000:ff:1f.7"));
  CHECK_THAT(kmodkit::test::read_file(tmp / "termination-log"), Catch::Contains("device 0000:ff:1f.7"));
  auto go_on = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"preflight", "--port", "0000:ff:1f.7", "--on-fail", "continue"});
  CHECK(go_on.code == 0);
  CHECK_THAT(go_on.output, Catch::Contains("going on (--on-fail continue)"));
  // JSON on stdout, the log lines on stderr.
  auto out = kmodkit::subprocess::run({"sh", "-c", std::string(KMODKIT_FIREWALL_BIN) + " preflight --port 0000:ff:1f.7 --log-format json 2>/dev/null"});
  REQUIRE(out);
  INFO(out->output);
  const auto doc = nlohmann::json::parse(out->output);
  CHECK(doc["verdict"] == "fail");
  CHECK(doc["checks"][0]["check"] == "cpus");
  auto usage = kmodkit::test::run_binary(KMODKIT_FIREWALL_BIN, {"preflight", "--driver", "e1000"});
  CHECK(usage.code == 64);
  CHECK_THAT(usage.last_line, Catch::Contains("--driver e1000: not vfio-pci, igb_uio or uio_pci_generic"));
}
