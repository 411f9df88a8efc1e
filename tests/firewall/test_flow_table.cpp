// One worker's flow table on rte_hash: insert, find (one and bulk), a full table, expiry sweeps.
#include <catch2/catch.hpp>

#include <vector>

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

}  // namespace

TEST_CASE("flows are inserted and found, one by one and in bursts", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_find", 1024, 0);
  REQUIRE(t);
  for (uint32_t i = 0; i < 100; ++i) {
    Flow* f = t->insert(key(i));
    REQUIRE(f != nullptr);
    f->packets = i;
  }
  CHECK(t->size() == 100);
  REQUIRE(t->find(key(42)) != nullptr);
  CHECK(t->find(key(42))->packets == 42);
  CHECK(t->find(key(1000)) == nullptr);
  std::vector<FlowKey> keys = {key(1), key(5000), key(99)};
  const FlowKey* ptrs[] = {&keys[0], &keys[1], &keys[2]};
  Flow* found[3];
  t->find_bulk(ptrs, found, 3);
  REQUIRE(found[0] != nullptr);
  CHECK(found[0]->packets == 1);
  CHECK(found[1] == nullptr);
  CHECK(found[2]->packets == 99);
}

TEST_CASE("a full table refuses new flows and keeps the established ones", "[unit][flowtable]") {
  auto t = FlowTable::create("ft_full", 64, 0);
  REQUIRE(t);
  uint32_t inserted = 0;
  for (uint32_t i = 0; i < 100; ++i) {
    if (t->insert(key(i)) != nullptr) ++inserted;
  }
  CHECK(inserted == 64);
  CHECK(t->size() == 64);
  CHECK(t->find(key(0)) != nullptr);
  CHECK(t->insert(key(200)) == nullptr);
}

TEST_CASE("idle flows expire per their state's timeout, swept a budget at a time", "[unit][flowtable]") {
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
  uint32_t removed = 0;
  for (int sweep = 0; sweep < 20; ++sweep) removed += t->expire(100 + to.udp_new + 1, to, 128);
  CHECK(removed == 500);
  CHECK(t->size() == 500);
  CHECK(t->find(key(1)) != nullptr);
  CHECK(t->find(key(2)) == nullptr);
  for (int sweep = 0; sweep < 20; ++sweep) removed += t->expire(100 + to.udp_established + 1, to, 128);
  CHECK(t->size() == 0);
}
