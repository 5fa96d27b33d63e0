-- record_order.lua: write an order before it is sent, only if its client order id is new.
--
-- KEYS  1 order   2 open set of the venue   3 open venues set   4 venue order index (or unused)
--       5 order events stream
-- ARGV  1 order json   2 client order id   3 strategy_id   4 venue   5 state   6 updated_ms
--       7 '1' when the order already has a venue order id, else '0'
--       8 call token (unique per record_order call, identical across its retries)
-- Returns 1 when recorded (also to a retry of the call that recorded it), 0 when the
-- client order id already exists (nothing written), an error reply (nothing written) when
-- the venue order id already maps to another order.

if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'call_token') == ARGV[8] then return 1 end
  return 0
end
if ARGV[7] == '1' then
  local indexed = redis.call('GET', KEYS[4])
  if indexed and indexed ~= ARGV[2] then
    return redis.error_reply('record_order: venue order id of ' .. ARGV[2]
      .. ' already belongs to order ' .. indexed)
  end
  redis.call('SET', KEYS[4], ARGV[2])
end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'client_order_id', ARGV[2], 'strategy_id', ARGV[3],
  'venue', ARGV[4], 'state', ARGV[5], 'updated_ms', ARGV[6], 'rev', '1', 'call_token', ARGV[8])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('XADD', KEYS[5], '*', 'order', ARGV[1])
return 1
