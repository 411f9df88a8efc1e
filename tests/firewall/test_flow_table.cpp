// One worker's flow table on rte_hash: insert, find (one and bulk), a full table (eviction of
// unanswered flows, else refusal), expiry sweeps.
#include <catch2/catch.hpp>

#include "flow_table.hpp"

using namespace kmodkit::firewall;

namespace {

FlowKey key(uint32_t n) {
  FlowKey k;
  k.family = 4;
  k.proto = 17;
  k.lo_addr[0] = 10;
  k.lo_addr[3] = static_cast<uint8_t>(n);
  k.hi_addr[0] = 192;
  k.lo_port = static_cast<uint16_t>(n >> 8);
  k.hi_port = 53;
  return k;
}

// Inserts an established flow (one a full table never evicts); nullptr when refused.
Flow* insert_established(FlowTable& t, const FlowKey& k) {
  Flow* f = t.insert(k);
  if (f != nullptr) {
    f->track.proto = k.proto;
    f->track.state = FlowState::established;
  }
  return f;
}

FlowKey key6(uint32_t n) {
  FlowKey k = key(n);
  k.family = 6;
  k.lo_addr = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, static_cast<uint8_t>(n)};
  k.hi_addr = {0x20, 0x01, 0x0d, 0xb8, 0, 1};
  return k;
}

}  // namespace

TEST_CASE("IPv4 and IPv6 flows share the capacity; bulk lookups use each family's key", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_families", 64, 0);
  REQUIRE(t);
  for (uint32_t i = 0; i < 40; ++i) REQUIRE(insert_established(*t, key(i)) != nullptr);
  for (uint32_t i = 0; i < 24; ++i) REQUIRE(insert_established(*t, key6(i)) != nullptr);
  CHECK(t->size() == 64);
  CHECK(t->insert(key6(100)) == nullptr);  // full over both families
  CHECK(t->insert(key(100)) == nullptr);
  // The same numbers in the other family are other flows.
  CHECK(t->find(key(30)) != t->find(key6(30)));
  CHECK(t->find(key6(30)) == nullptr);
  CHECK(t->find(key6(23)) != nullptr);
  // The 16-byte IPv4 key made from a packet finds what the generic key inserted.
  Packet p;
  p.l3 = L3::ipv4;
  p.proto = 17;
  p.src = {192, 0, 0, 0};
  p.dst = {10, 0, 0, 7};
  p.src_port = 53;
  p.dst_port = 0;
  bool lo = true;
  FlowKey4 k4[2];
  flow_key4(p, 0, k4[0], &lo);
  CHECK_FALSE(lo);  // 192.0.0.0 is the high end
  flow_key4(p, 1, k4[1], &lo);  // another port pair: another flow
  Flow* found[2];
  t->find_bulk(k4, found, 2);
  CHECK(found[0] == t->find(key(7)));
  CHECK(found[0] != nullptr);
  CHECK(found[1] == nullptr);
  const FlowKey k6[2] = {key6(5), key6(99)};
  t->find_bulk(k6, found, 2);
  CHECK(found[0] == t->find(key6(5)));
  CHECK(found[1] == nullptr);
}

TEST_CASE("flows are inserted and found, one by one and in bursts", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_find", 1024, 0);
  REQUIRE(t);
  for (uint32_t i = 0; i < 100; ++i) {
    Flow* f = t->insert(key(i));
    REQUIRE(f != nullptr);
    f->last_seen = i;
  }
  CHECK(t->size() == 100);
  REQUIRE(t->find(key(42)) != nullptr);
  CHECK(t->find(key(42))->last_seen == 42);
  CHECK(t->find(key(1000)) == nullptr);
  FlowKey4 keys[3];
  bool lo;
  for (int i = 0; i < 3; ++i) {
    Packet p;
    p.l3 = L3::ipv4;
    p.proto = 17;
    p.src = {10, 0, 0, static_cast<uint8_t>(i == 0 ? 1 : i == 1 ? 5000 % 256 : 99)};
    p.dst = {192, 0, 0, 0};
    p.src_port = static_cast<uint16_t>((i == 1 ? 5000 : 0) >> 8);
    p.dst_port = 53;
    flow_key4(p, 0, keys[i], &lo);
  }
  Flow* found[3];
  t->find_bulk(keys, found, 3);
  REQUIRE(found[0] != nullptr);
  CHECK(found[0]->last_seen == 1);
  CHECK(found[1] == nullptr);
  CHECK(found[2]->last_seen == 99);
}

TEST_CASE("a full table refuses new flows and keeps the established ones", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_full", 64, 0);
  REQUIRE(t);
  uint32_t inserted = 0;
  for (uint32_t i = 0; i < 100; ++i) {
    if (insert_established(*t, key(i)) != nullptr) ++inserted;
  }
  CHECK(inserted == 64);
  CHECK(t->size() == 64);
  CHECK(t->find(key(0)) != nullptr);
  int evicted = -1;
  CHECK(t->insert(key(200), &evicted) == nullptr);
  CHECK(evicted == -1);
  for (uint32_t i = 0; i < 64; ++i) CHECK(t->find(key(i)) != nullptr);
}

TEST_CASE("a full table evicts a flow nobody answered to make room, as conntrack's early drop does", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_evict", 64, 0);
  REQUIRE(t);
  // 63 established flows and one half-open TCP flow (a SYN without an answer), somewhere.
  FlowKey half_open = key(1000);
  half_open.proto = 6;
  for (uint32_t i = 0; i < 63; ++i) REQUIRE(insert_established(*t, key(i)) != nullptr);
  Flow* syn = t->insert(half_open);
  REQUIRE(syn != nullptr);
  syn->track.proto = 6;
  syn->track.state = FlowState::syn_sent;
  REQUIRE(t->size() == 64);
  // A new flow finds the half-open one within the few slots each try looks at; the window moves
  // on with each try, so the tries reach it.
  FlowKey newcomer = key6(7);
  int evicted = -1;
  Flow* f = nullptr;
  for (uint32_t tries = 0; f == nullptr && tries <= 65 / FlowTable::kEvictWindow + 1; ++tries) f = t->insert(newcomer, &evicted);
  REQUIRE(f != nullptr);
  CHECK(evicted == 6);
  CHECK(t->size() == 64);
  CHECK(t->find(half_open) == nullptr);
  CHECK(t->find(newcomer) == f);
  for (uint32_t i = 0; i < 63; ++i) CHECK(t->find(key(i)) != nullptr);
  // The newcomer itself, unanswered (new_flow), is the next one to go; a closed TCP flow too.
  f->track.proto = 17;
  evicted = -1;
  f = nullptr;
  for (uint32_t tries = 0; f == nullptr && tries <= 2 * (65 / FlowTable::kEvictWindow + 1); ++tries) f = t->insert(key(2000), &evicted);
  REQUIRE(f != nullptr);
  CHECK(evicted == 17);
  CHECK(t->find(newcomer) == nullptr);
  CHECK(evictable(FlowTrack{FlowState::closed, 6, true, 3}));
  CHECK_FALSE(evictable(FlowTrack{FlowState::fin_wait, 6, true, 1}));
}

TEST_CASE("idle flows expire per their state's timeout, swept a slice of the table at a time", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_expire", 4096, 0);
  REQUIRE(t);
  const Timeouts to;
  for (uint32_t i = 0; i < 1000; ++i) {
    Flow* f = t->insert(key(i));
    f->track.proto = 17;
    f->track.state = i % 2 ? FlowState::established : FlowState::new_flow;
    f->last_seen = 100;
  }
  // Past the unanswered-UDP timeout but not the established one: half go.
  // One call looks at 128 of the 4098 slots (4096 flows get 8192 bucket entries: see the next
  // test); 33 calls make a full pass.
  uint32_t removed = t->expire(100 + to.udp_new + 1, to, 128);
  CHECK(removed > 0);
  CHECK(removed <= 64);  // at most half of the 128 slots it saw
  for (int sweep = 1; sweep < 33; ++sweep) removed += t->expire(100 + to.udp_new + 1, to, 128);
  CHECK(removed == 500);
  CHECK(t->expire(100 + to.udp_new + 1, to, 1 << 20) == 0);  // one full pass at most, nothing left
  CHECK(t->size() == 500);
  CHECK(t->find(key(1)) != nullptr);
  CHECK(t->find(key(2)) == nullptr);
  // Removals are counted by protocol when asked.
  uint32_t by_proto[kFlowProtos] = {};
  CHECK(t->expire(100 + to.udp_established + 1, to, 200, by_proto) == by_proto[static_cast<int>(FlowProto::udp)]);
  CHECK(by_proto[static_cast<int>(FlowProto::udp)] > 0);
  CHECK(by_proto[static_cast<int>(FlowProto::tcp)] == 0);
  for (int sweep = 0; sweep < 33; ++sweep) removed += t->expire(100 + to.udp_established + 1, to, 128);
  CHECK(t->size() == 0);
}

TEST_CASE("a table at or near a power of two gets buckets to spare, and churns through closed flows when full", "[unit][flowtable]") {
  // rte_hash's buckets hold a power of two of entries; at most 85 % of them are used. 800 flows
  // fit 1,024 entries (78 %); 1,000 would fill 98 % of them, so they get 2,048. The flow array
  // has a slot per rte_hash position (its entries and one spare).
  auto loose = FlowTable::create("ft_loose", 800, 0);
  auto tight = FlowTable::create("ft_tight", 1000, 0);
  REQUIRE(loose);
  REQUIRE(tight);
  CHECK(loose->slots() == 801);
  CHECK(tight->slots() == 1026);
  // Full of closed flows, the table takes ten times its capacity in new ones, each evicting one.
  uint32_t refused = 0, evictions = 0;
  for (uint32_t i = 0; i < 11000; ++i) {
    int evicted = -1;
    Flow* f = tight->insert(key(i), &evicted);
    if (f == nullptr) {
      ++refused;
      continue;
    }
    if (evicted >= 0) ++evictions;
    f->track = FlowTrack{FlowState::closed, 6, true, 3};
  }
  CHECK(refused == 0);
  CHECK(evictions == 10000);
  CHECK(tight->size() == 1000);
  CHECK(tight->capacity() == 1000);
}

TEST_CASE("a million flows fit in one table, and the million-and-first is refused", "[unit][flowtable]") {
  constexpr uint32_t kMillion = 1 << 20;
  auto t = FlowTable::create("ft_million", kMillion, 0);
  REQUIRE(t);
  FlowKey k;
  k.family = 4;
  k.proto = 6;
  k.hi_addr = {192, 0, 2, 1};
  k.hi_port = 443;
  uint32_t inserted = 0;
  for (uint32_t i = 0; i < kMillion; ++i) {
    k.lo_addr = {10, static_cast<uint8_t>(i >> 16), static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
    Flow* f = insert_established(*t, k);
    if (f == nullptr) break;
    f->last_seen = i;
    ++inserted;
  }
  CHECK(inserted == kMillion);
  CHECK(t->size() == kMillion);
  k.lo_addr = {11, 0, 0, 1};
  CHECK(t->insert(k) == nullptr);
  k.lo_addr = {10, 0x0a, 0xbc, 0xde};
  REQUIRE(t->find(k) != nullptr);
  CHECK(t->find(k)->last_seen == 0x0abcde);
}
