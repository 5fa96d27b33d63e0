-- apply_fill.lua: apply a page of venue fills (one or many) to position truth, each
-- atomically and at most once, in one script call.
--
-- Identity: a fill is its (venue, inst_id, trade_id), the fill id. The first delivery of a
-- fill id applies it; every later one (any layer, any call) only counts a delivery and
-- answers with the current state, read here, so a duplicate costs no more round trips
-- than a new fill.
--
-- Attribution is resolved here, in the same atomic step that applies the fill: the
-- order named by the fill's client order id, else the order the venue order id index
-- points to, else the unattributed strategy. Resolving it in the client first would
-- cost a round trip and leave a window in which an order could be recorded unseen.
-- That needs keys built from ids read inside the script (the indexed order, the
-- strategy's position), so the script builds its keys from the namespace prefix with
-- esc() below, the same rule as core.redis_keys.escape_component. This needs a
-- single Redis node (or a cluster with one slot for the namespace); tradetree runs on
-- one node.
--
-- Each fill is checked before anything of it is written; a fill that fails a check
-- writes nothing and answers {'error', message}; the other fills of the page are
-- applied all the same (as separate apply_fill calls would be). The position hashes,
-- the positions index and the layer counters are written once, after the page (see
-- flush); a duplicate of the page reads its position from the page's state.
--
-- Accounting (per strategy, venue, inst_id), quantities in integer atoms (1e-8 of the
-- venue unit; exact as long as |qty| <= ARGV[3], checked), money in doubles stored with
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
-- out-of-order one with k later fills (plus k HSETs of their new after states). The
-- client sends a page sorted canonically, so a page is folded in O(1) per fill.
--
-- KEYS   1 positions index   2 audit stream   3 fill layer counters
-- ARGV   1 key prefix ('{namespace}:')   2 applied_ms   3 max |atoms|
--        4 strategy id of unattributed fills
--        5 the page: a JSON array with one array of 19 strings per fill (one argument, and
--          a JSON reply, because redis-py packs and parses each element in Python: that
--          cost more than the script itself)
--   1 fill id (escaped)   2 venue   3 inst_id   4 trade_id   5 client order id ('' none)
--   6 venue order id ('' none)   7 side   8 size   9 size atoms   10 price   11 fee
--   12 fee_ccy   13 liquidity ('' none)   14 ts_ms   15 layer   16 contract value
--   17 fee in quote   18 fee in base atoms
--   19 call token (unique per fill of an apply call, identical across its retries)
-- Returns a JSON array with one reply per fill, in page order:
--   {'applied', strategy_id, attributed coid, qty_atoms, avg_price, realized_pnl, fees,
--    fill_count, updated_ms, order applied atoms ('' when no order)}
--   {'duplicate' | 'retried', strategy_id, attributed coid, side, size, price,
--    qty_atoms, avg_price, realized_pnl, fees, fill_count, updated_ms, order applied atoms}
--     ('retried': an earlier attempt of this very call applied the fill; position
--      fields are '' when the position is gone, order applied atoms '' when none)
--   {'error', message}: nothing of that fill was written (a quantity leaves the exact
--     range, or the ledger misses a fill).

local prefix, applied_ms, max_atoms, unattributed = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local positions_key, audit_key, layers_key = KEYS[1], KEYS[2], KEYS[3]
local ATOMS_PER_UNIT = 100000000
local POSITION_FIELDS = {'qty_atoms', 'avg_price', 'realized_pnl', 'fees', 'fill_count',
                         'updated_ms'}

local function esc(s)
  if not string.find(s, '[%%:]') then return s end
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end

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

local function position_id(strategy, venue, inst_id)
  return esc(strategy) .. ':' .. esc(venue) .. ':' .. esc(inst_id)
end

-- Page-level state. Orders and the index cannot change while the script runs, so their
-- lookups are cached for the page. A position touched by the page keeps its state here
-- and is written once at the end (flush), as are the layer counters and the positions
-- index; its tail (the ts and state after its last fill) lets a later fill of the page
-- with a strictly greater ts skip the rank lookup: it is last in canonical order.
local order_strategy, index_coid = {}, {}
local pending, pending_ids = {}, {}
local counters, counter_fields = {}, {}

local function strategy_of(coid)
  local s = order_strategy[coid]
  if s == nil then
    s = redis.call('HGET', prefix .. 'order:' .. esc(coid), 'strategy_id')
    order_strategy[coid] = s
  end
  return s
end

local function indexed_order(venue, void)
  local key = esc(venue) .. ':' .. esc(void)
  local c = index_coid[key]
  if c == nil then
    c = redis.call('GET', prefix .. 'venue_order:' .. key)
    index_coid[key] = c
  end
  return c
end

local function count(field)
  if not counters[field] then
    counters[field] = 0
    counter_fields[#counter_fields + 1] = field
  end
  counters[field] = counters[field] + 1
end

-- The current state a duplicate answers with: its position and its order's applied size.
local function duplicate_reply(status, stored, venue, inst_id)
  local strategy, coid = stored[1] or '', stored[2] or ''
  local reply = {status, strategy, coid, stored[3] or '', stored[4] or '', stored[5] or ''}
  local pid = position_id(strategy, venue, inst_id)
  local p = pending[pid]
  if p then
    local st = p.state
    reply[7], reply[8], reply[9], reply[10], reply[11], reply[12] =
      fmt(st.qty), fmt(st.avg), fmt(st.rpnl), fmt(st.fees), fmt(st.count), fmt(st.updated)
  else
    local pos = redis.call('HMGET', prefix .. 'pos:' .. pid, unpack(POSITION_FIELDS))
    for i = 1, #POSITION_FIELDS do reply[#reply + 1] = pos[i] or '' end
  end
  local applied = false
  if coid ~= '' then applied = redis.call('GET', prefix .. 'order_applied:' .. esc(coid)) end
  reply[13] = applied or ''
  return reply
end

local function apply_one(f)
  local fill_id, venue, inst_id = f[1], f[2], f[3]
  local fill_coid, fill_void = f[5], f[6]
  local ts_ms, layer, call_token = f[14], f[15], f[19]
  local fill_key = prefix .. 'fill:' .. fill_id
  local venue_layer = venue .. ':' .. layer

  -- Dedup first: a duplicate must change nothing but its counter. The same call retried
  -- by the client after a lost reply (same call token) is not a new delivery: it is not
  -- counted again and the caller learns that its call applied the fill.
  local stored = redis.call('HMGET', fill_key,
    'strategy_id', 'attributed_order_id', 'side', 'size', 'price', 'call_token')
  if stored[1] then
    if stored[6] == call_token then return duplicate_reply('retried', stored, venue, inst_id) end
    count(venue_layer .. ':delivered')
    return duplicate_reply('duplicate', stored, venue, inst_id)
  end

  local strategy, coid = false, ''
  if fill_coid ~= '' then
    strategy = strategy_of(fill_coid)
    if strategy then coid = fill_coid end
  end
  if not strategy and fill_void ~= '' then
    local indexed = indexed_order(venue, fill_void)
    if indexed then
      strategy = strategy_of(indexed)
      if strategy then coid = indexed end
    end
  end
  if not strategy then
    strategy = unattributed
    coid = fill_coid
  end

  local pid = position_id(strategy, venue, inst_id)
  local pos_fills = prefix .. 'pos_fills:' .. pid
  local ledger = prefix .. 'pos_ledger:' .. pid
  local after = prefix .. 'pos_after:' .. pid

  local sign = 1
  if f[7] == 'sell' then sign = -1 end
  local detail_text = table.concat({fmt(sign), f[9], f[10], f[16], f[17], f[18], ts_ms}, ' ')
  local this_detail = parse_detail(detail_text)

  -- Fold from the state before the new fill's canonical rank. The ZADD is the only write
  -- before the checks below, and every failing check undoes it.
  redis.call('ZADD', pos_fills, ts_ms, fill_id)
  local st = {qty = 0, avg = 0, rpnl = 0, fees = 0, count = 0, updated = 0}
  local members
  local tail = pending[pid]
  if tail and this_detail.ts > tail.last_ts then
    st, members = tail.state, {fill_id}
  else
    local rank = redis.call('ZRANK', pos_fills, fill_id)
    if rank > 0 then
      -- One call for the predecessor and every later fill.
      members = redis.call('ZRANGE', pos_fills, rank - 1, -1)
      local pred = table.remove(members, 1)
      local pred_state = redis.call('HGET', after, pred)
      if not pred_state then
        redis.call('ZREM', pos_fills, fill_id)
        return {'error', 'apply_fill: no state after fill ' .. pred .. ' in ' .. after}
      end
      st = parse_state(pred_state)
    else
      members = redis.call('ZRANGE', pos_fills, 0, -1)
    end
  end
  local after_updates = {}
  local last_ts
  for _, member in ipairs(members) do
    local d
    if member == fill_id then
      d = this_detail
    else
      local text = redis.call('HGET', ledger, member)
      if not text then
        redis.call('ZREM', pos_fills, fill_id)
        return {'error', 'apply_fill: ledger ' .. ledger .. ' misses fill ' .. member}
      end
      d = parse_detail(text)
    end
    st = fold(st, d)
    last_ts = d.ts
    if math.abs(st.qty) > max_atoms then
      redis.call('ZREM', pos_fills, fill_id)
      return {'error', 'apply_fill: position quantity of ' .. prefix .. 'pos:' .. pid
        .. ' would leave the exact range (|atoms| <= ' .. ARGV[3] .. ') at fill ' .. member}
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
  if not pending[pid] then pending_ids[#pending_ids + 1] = pid end
  pending[pid] = {strategy = strategy, venue = venue, inst_id = inst_id, cv = f[16], state = st,
                  last_ts = last_ts}

  local fill_fields = {
    'fill_id', fill_id, 'venue', venue, 'inst_id', inst_id, 'trade_id', f[4],
    'client_order_id', fill_coid, 'venue_order_id', fill_void, 'side', f[7],
    'price', f[10], 'size', f[8], 'fee', f[11],
    'fee_ccy', f[12], 'liquidity', f[13], 'ts_ms', ts_ms, 'layer', layer,
    'strategy_id', strategy, 'attributed_order_id', coid, 'applied_ms', applied_ms}
  redis.call('HSET', fill_key, 'call_token', call_token, unpack(fill_fields))

  local applied_atoms = ''
  if coid ~= '' then
    local ecoid = esc(coid)
    applied_atoms = fmt(redis.call('INCRBY', prefix .. 'order_applied:' .. ecoid, f[9]))
    redis.call('ZADD', prefix .. 'order_fills:' .. ecoid, ts_ms, fill_id)
  end

  redis.call('XADD', audit_key, '*', unpack(fill_fields))
  count(venue_layer .. ':delivered')
  count(venue_layer .. ':applied')

  return {'applied', strategy, coid, fmt(st.qty), fmt(st.avg), fmt(st.rpnl), fmt(st.fees),
          fmt(st.count), fmt(st.updated), applied_atoms}
end

local replies = {}
for i, f in ipairs(cjson.decode(ARGV[5])) do
  replies[i] = apply_one(f)
end

-- Flush: each touched position once, with its state after the page.
for _, pid in ipairs(pending_ids) do
  local p, st = pending[pid], pending[pid].state
  redis.call('HSET', prefix .. 'pos:' .. pid,
    'strategy_id', p.strategy, 'venue', p.venue, 'inst_id', p.inst_id,
    'qty_atoms', fmt(st.qty), 'avg_price', fmt(st.avg), 'realized_pnl', fmt(st.rpnl),
    'fees', fmt(st.fees), 'fill_count', fmt(st.count), 'updated_ms', fmt(st.updated),
    'contract_value', p.cv)
end
if #pending_ids > 0 then redis.call('SADD', positions_key, unpack(pending_ids)) end
for _, field in ipairs(counter_fields) do
  redis.call('HINCRBY', layers_key, field, counters[field])
end
return cjson.encode(replies)
