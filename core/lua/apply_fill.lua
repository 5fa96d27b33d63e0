-- apply_fill.lua: apply one venue fill to position truth, atomically and at most once.
--
-- Identity: a fill is its (venue, inst_id, trade_id), the fill id. The first call for a
-- fill id applies it; every later call (any layer) only counts a delivery.
--
-- Attribution: the caller resolves which order, hence which strategy, the fill belongs
-- to and passes its answer (ARGV 16-18). The script resolves again from the same keys;
-- when the answers differ (an order was recorded or indexed in between), it writes
-- nothing and returns {'stale'} so that the caller resolves again and retries.
--
-- Accounting (per strategy, venue, inst_id), quantities in integer atoms (1e-8 of the
-- venue unit; exact as long as |qty| <= ARGV[24], checked), money in doubles stored with
-- '%.17g' so that they round-trip exactly:
--   adding      avg = (|q| * avg + atoms * price) / |q + atoms| (opening: avg = price)
--   reducing    realized += closed / 1e8 * contract_value * (price - avg) * sign(q)
--   flipping    closes the old side as above, opens the remainder at the fill price
--   quote fee   fees += fee_quote
--   base fee    qty -= fee_base_atoms; the position's cost basis is kept (avg rescaled)
--               while the side does not change; if the fee makes it flat or flips it,
--               the old side's basis is realized at price 0 and a remainder opens at
--               the fill price (degenerate; spot buys only ever shrink a long slightly).
--
-- Order independence: average cost is path dependent, so fills are folded in canonical
-- order (ts_ms, then fill id bytes): the position's zset holds fill ids by ts_ms (ties
-- by member), the ledger hash their details and the after hash the position state right
-- after each of them. A new fill at rank r is folded from the state after rank r-1 over
-- itself and every later fill: O(1) fold for an in-order fill (r = last), O(k) for an
-- out-of-order one with k later fills (plus k HSETs of their new after states).
--
-- KEYS
--   1 fill            2 order (fill's client order id)   3 venue order index
--   4 order (client order id from the index)             5 order applied atoms
--   6 order fills     7 position    8 position fills    9 position ledger
--  10 position after 11 positions index   12 audit stream   13 fill layer counters
-- ARGV
--   1 fill id   2 venue   3 inst_id   4 trade_id   5 client order id ('' none)
--   6 venue order id ('' none)   7 side   8 size   9 size atoms   10 price   11 fee
--  12 fee_ccy  13 liquidity ('' none)  14 ts_ms  15 layer  16 expected strategy
--  17 expected attributed client order id ('' none)  18 expected index value ('' none)
--  19 contract value  20 fee in quote  21 fee in base atoms  22 applied_ms
--  23 position id  24 max |atoms|  25 strategy id of unattributed fills
--  26 call token (unique per apply_fill call, identical across its retries)
-- Returns
--   {'duplicate' | 'retried', strategy_id, attributed coid, side, size, price}
--     ('retried': an earlier attempt of this very call applied the fill)
--   {'stale'}
--   {'applied', strategy_id, attributed coid, qty_atoms, avg_price, realized_pnl, fees,
--    fill_count, updated_ms, order applied atoms ('' when no order)}
--   an error reply (and no write) when a quantity leaves the exact range or the ledger
--   misses a fill.

local fill_id, venue, layer = ARGV[1], ARGV[2], ARGV[15]
local layers_key = KEYS[13]

-- Dedup first: a duplicate needs no attribution and must change nothing but its counter.
-- The same call retried by the client after a lost reply (same call token) is not a new
-- delivery: it is not counted again and the caller learns that its call applied the fill.
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stored = redis.call('HMGET', KEYS[1],
    'strategy_id', 'attributed_order_id', 'side', 'size', 'price', 'call_token')
  local status = 'duplicate'
  if stored[6] == ARGV[26] then
    status = 'retried'
  else
    redis.call('HINCRBY', layers_key, venue .. ':' .. layer .. ':delivered', 1)
  end
  return {status, stored[1] or '', stored[2] or '', stored[3] or '', stored[4] or '',
          stored[5] or ''}
end

-- Attribution, resolved exactly as the caller did.
local fill_coid, fill_void = ARGV[5], ARGV[6]
local strategy, coid = nil, ''
if fill_coid ~= '' then
  strategy = redis.call('HGET', KEYS[2], 'strategy_id')
  if strategy then coid = fill_coid end
end
if not strategy and fill_void ~= '' then
  local indexed = redis.call('GET', KEYS[3])
  if (indexed or '') ~= ARGV[18] then return {'stale'} end
  if indexed then
    strategy = redis.call('HGET', KEYS[4], 'strategy_id')
    if strategy then coid = indexed end
  end
end
if not strategy then
  strategy = ARGV[25]
  coid = fill_coid
end
if strategy ~= ARGV[16] or coid ~= ARGV[17] then return {'stale'} end

local ATOMS_PER_UNIT = 100000000
local max_atoms = tonumber(ARGV[24])

local function fmt(x) return string.format('%.17g', x) end

local function parse_detail(text)
  local sign, atoms, price, cv, fee_quote, fee_base, t =
    string.match(text, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  return {sign = tonumber(sign), atoms = tonumber(atoms), price = tonumber(price),
          cv = tonumber(cv), fee_quote = tonumber(fee_quote), fee_base = tonumber(fee_base),
          ts = tonumber(t)}
end

local function parse_state(text)
  local q, a, r, f, c, u = string.match(text, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  return {qty = tonumber(q), avg = tonumber(a), rpnl = tonumber(r), fees = tonumber(f),
          count = tonumber(c), updated = tonumber(u)}
end

local function format_state(st)
  return fmt(st.qty) .. ' ' .. fmt(st.avg) .. ' ' .. fmt(st.rpnl) .. ' ' .. fmt(st.fees) .. ' '
    .. fmt(st.count) .. ' ' .. fmt(st.updated)
end

-- The position after folding fill d into state st. Pure: no Redis calls.
local function fold(st, d)
  local q, avg, rpnl = st.qty, st.avg, st.rpnl
  local delta = d.sign * d.atoms
  local nq = q + delta
  if q == 0 then
    avg = d.price
  elseif (q > 0) == (delta > 0) then
    avg = (math.abs(q) * avg + d.atoms * d.price) / math.abs(nq)
  else
    local closed = math.min(math.abs(q), d.atoms)
    local held = 1
    if q < 0 then held = -1 end
    rpnl = rpnl + (closed / ATOMS_PER_UNIT) * d.cv * (d.price - avg) * held
    if nq == 0 then
      avg = 0
    elseif (nq > 0) ~= (q > 0) then
      avg = d.price
    end
  end
  if d.fee_base ~= 0 then
    local fq = nq - d.fee_base
    if nq ~= 0 and fq ~= 0 and (nq > 0) == (fq > 0) then
      avg = avg * nq / fq
    else
      if nq ~= 0 then rpnl = rpnl - (nq / ATOMS_PER_UNIT) * d.cv * avg end
      if fq == 0 then avg = 0 else avg = d.price end
    end
    nq = fq
  end
  return {qty = nq, avg = avg, rpnl = rpnl, fees = st.fees + d.fee_quote, count = st.count + 1,
          updated = d.ts}
end

local sign = 1
if ARGV[7] == 'sell' then sign = -1 end
local detail_text = table.concat(
  {fmt(sign), ARGV[9], ARGV[10], ARGV[19], ARGV[20], ARGV[21], ARGV[14]}, ' ')
local this_detail = parse_detail(detail_text)

-- Fold from the state before the new fill's canonical rank. The ZADD is the only write
-- before the checks below, and every failing check undoes it.
local pos_fills, ledger, after = KEYS[8], KEYS[9], KEYS[10]
redis.call('ZADD', pos_fills, ARGV[14], fill_id)
local rank = redis.call('ZRANK', pos_fills, fill_id)
local st = {qty = 0, avg = 0, rpnl = 0, fees = 0, count = 0, updated = 0}
if rank > 0 then
  local pred = redis.call('ZRANGE', pos_fills, rank - 1, rank - 1)[1]
  local pred_state = redis.call('HGET', after, pred)
  if not pred_state then
    redis.call('ZREM', pos_fills, fill_id)
    return redis.error_reply('apply_fill: no state after fill ' .. pred .. ' in ' .. after)
  end
  st = parse_state(pred_state)
end
local members = redis.call('ZRANGE', pos_fills, rank, -1)
local after_updates = {}
for _, member in ipairs(members) do
  local d
  if member == fill_id then
    d = this_detail
  else
    local text = redis.call('HGET', ledger, member)
    if not text then
      redis.call('ZREM', pos_fills, fill_id)
      return redis.error_reply('apply_fill: ledger ' .. ledger .. ' misses fill ' .. member)
    end
    d = parse_detail(text)
  end
  st = fold(st, d)
  if math.abs(st.qty) > max_atoms then
    redis.call('ZREM', pos_fills, fill_id)
    return redis.error_reply('apply_fill: position quantity of ' .. KEYS[7]
      .. ' would leave the exact range (|atoms| <= ' .. ARGV[24] .. ') at fill ' .. member)
  end
  after_updates[#after_updates + 1] = member
  after_updates[#after_updates + 1] = format_state(st)
end

-- Writes.
redis.call('HSET', ledger, fill_id, detail_text)
local chunk = 400  -- field/value pairs per HSET: stays far below Lua's unpack limit
for i = 1, #after_updates, 2 * chunk do
  local last = math.min(i + 2 * chunk - 1, #after_updates)
  redis.call('HSET', after, unpack(after_updates, i, last))
end
redis.call('HSET', KEYS[7],
  'strategy_id', strategy, 'venue', venue, 'inst_id', ARGV[3],
  'qty_atoms', fmt(st.qty), 'avg_price', fmt(st.avg), 'realized_pnl', fmt(st.rpnl),
  'fees', fmt(st.fees), 'fill_count', fmt(st.count), 'updated_ms', fmt(st.updated),
  'contract_value', ARGV[19])
redis.call('SADD', KEYS[11], ARGV[23])

local fill_fields = {
  'fill_id', fill_id, 'venue', venue, 'inst_id', ARGV[3], 'trade_id', ARGV[4],
  'client_order_id', fill_coid, 'venue_order_id', fill_void, 'side', ARGV[7],
  'price', ARGV[10], 'size', ARGV[8], 'fee', ARGV[11], 'fee_ccy', ARGV[12],
  'liquidity', ARGV[13], 'ts_ms', ARGV[14], 'layer', layer,
  'strategy_id', strategy, 'attributed_order_id', coid, 'applied_ms', ARGV[22]}
redis.call('HSET', KEYS[1], 'call_token', ARGV[26], unpack(fill_fields))

local applied_atoms = ''
if coid ~= '' then
  redis.call('INCRBY', KEYS[5], ARGV[9])
  applied_atoms = redis.call('GET', KEYS[5])
  redis.call('ZADD', KEYS[6], ARGV[14], fill_id)
end

redis.call('XADD', KEYS[12], '*', unpack(fill_fields))
redis.call('HINCRBY', layers_key, venue .. ':' .. layer .. ':delivered', 1)
redis.call('HINCRBY', layers_key, venue .. ':' .. layer .. ':applied', 1)

return {'applied', strategy, coid, fmt(st.qty), fmt(st.avg), fmt(st.rpnl), fmt(st.fees),
        fmt(st.count), fmt(st.updated), applied_atoms}
