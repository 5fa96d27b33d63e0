-- update_order.lua: compare-and-set of an order snapshot.
--
-- The caller read the order at revision ARGV[1] and checked the state transition and
-- the timestamp against that revision; the write happens only if nobody wrote since.
-- The open set is never touched: only the poller untracks an order.
--
-- KEYS  1 order   2 venue order index (or unused)   3 order events stream
-- ARGV  1 expected rev   2 order json   3 client order id   4 state   5 updated_ms
--       6 '1' when the snapshot has a venue order id, else '0'
-- Returns {'ok', new rev}, {'missing'}, {'stale'} or {'conflict', other client order id};
-- nothing is written unless 'ok'.

local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return {'missing'} end
if rev ~= ARGV[1] then return {'stale'} end
if ARGV[6] == '1' then
  local indexed = redis.call('GET', KEYS[2])
  if indexed and indexed ~= ARGV[3] then return {'conflict', indexed} end
  if not indexed then redis.call('SET', KEYS[2], ARGV[3]) end
end
local new_rev = string.format('%d', tonumber(rev) + 1)
redis.call('HSET', KEYS[1],
  'json', ARGV[2], 'state', ARGV[4], 'updated_ms', ARGV[5], 'rev', new_rev)
redis.call('XADD', KEYS[3], '*', 'order', ARGV[2])
return {'ok', new_rev}
