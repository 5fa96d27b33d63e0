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
-- Two phases, because Redis does not roll a script back: writes made before a runtime
-- error stay. Phase 1 reads and computes the whole page (dedup, attribution, folds,
-- order sizes, counters, audit entries, every key's type) into Lua tables and issues no
-- write; phase 2 only runs the write commands phase 1 built. A runtime error in phase 1
-- (a bug, a corrupted key) fails the call with Redis unchanged, so no fill is ever left
-- marked applied without its position. A fill that fails a check answers
-- {'error', message} and leaves the page state as it was; the other fills of the page
-- are applied all the same (as separate apply_fill calls would be). A duplicate reads
-- its fill, position and order from the page's state when the page applied them.
-- Each touched position, its zset, ledger and after hashes, each order's applied size,
-- the positions index and the layer counters are written once per page.
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
-- out-of-order one with k later fills (and k new after states). The fold merges the
-- page's fills of a position with Redis's without writing them first. The client sends
-- a page sorted canonically, so a page is folded in O(1) per fill.
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
--     range, a value is not finite, an order's applied size is not an integer or would
--     overflow, or the ledger misses a fill).
-- ARGV 6 (tests only, never sent in production): error() after that many fills of
--   phase 1 (see fail_after below).

local prefix, applied_ms, max_atoms, unattributed = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- Test only (tests/core/test_store.py, via core.store._FAIL_AFTER_FOR_TESTS): when
-- ARGV[6] is given, phase 1 raises error() once that many fills are computed, to prove
-- that an error before phase 2 leaves Redis unchanged. Production calls pass 5 ARGV.
local fail_after = tonumber(ARGV[6] or '')
local positions_key, audit_key, layers_key = KEYS[1], KEYS[2], KEYS[3]
local ATOMS_PER_UNIT = 100000000
local CHUNK = 400  -- field/value pairs per write command: stays far below Lua's unpack limit
local POSITION_FIELDS = {'qty_atoms', 'avg_price', 'realized_pnl', 'fees', 'fill_count',
                         'updated_ms'}
local HUGE = math.huge

local function esc(s)
  if not string.find(s, '[%%:]') then return s end
  return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A'))
end

local function fmt(x) return string.format('%.17g', x) end

local function finite(x) return type(x) == 'number' and x == x and x > -HUGE and x < HUGE end

local function whole(x) return finite(x) and x == math.floor(x) end

-- Canonical order of fills, as Redis orders a position's zset: ts, then the fill id's
-- bytes (memcmp). Not Lua's '<' on strings, which uses the server's collation locale.
local function bytes_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function less(a, b)
  if a.ts ~= b.ts then return a.ts < b.ts end
  return bytes_less(a.id, b.id)
end

-- nil when text is not a detail of 7 finite numbers.
local function parse_detail(text)
  local sign, atoms, price, cv, fee_quote, fee_base, t =
    string.match(text, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  local d = {sign = tonumber(sign), atoms = tonumber(atoms), price = tonumber(price),
             cv = tonumber(cv), fee_quote = tonumber(fee_quote), fee_base = tonumber(fee_base),
             ts = tonumber(t)}
  if not (finite(d.sign) and finite(d.atoms) and finite(d.price) and finite(d.cv)
          and finite(d.fee_quote) and finite(d.fee_base) and finite(d.ts)) then
    return nil
  end
  return d
end

-- nil when text is not a state of 6 finite numbers.
local function parse_state(text)
  local q, a, r, f, c, u = string.match(text, '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  local st = {qty = tonumber(q), avg = tonumber(a), rpnl = tonumber(r), fees = tonumber(f),
              count = tonumber(c), updated = tonumber(u)}
  if not (finite(st.qty) and finite(st.avg) and finite(st.rpnl) and finite(st.fees)
          and finite(st.count) and finite(st.updated)) then
    return nil
  end
  return st
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

-- ======================================================================================
-- Phase 1: reads and computation only. Not one redis.call below writes until phase 2,
-- and everything phase 2 writes is computed here: a runtime error anywhere in phase 1
-- (a bug, a key of the wrong type) aborts the script with Redis unchanged.
-- ======================================================================================

-- Page state. Orders and the index cannot change while the script runs, so their lookups
-- are cached for the page. A position touched by the page (pos[pid]) overlays what the
-- page adds to it on what Redis holds: its new fills (added, ledger), the after states
-- recomputed (after), its tail (the canonical last fill and the state after it), which
-- lets a later fill of the page that sorts after it skip the rank lookup.
local order_strategy, index_coid = {}, {}
local pos, dirty_pids = {}, {}
local orders, dirty_coids = {}, {}
local counters, counter_fields = {}, {}
local page_fills = {}   -- fill id -> what a duplicate of it later in the page answers
local applied = {}      -- {fill key, call token, fields} per applied fill, in page order
local type_ok = {}

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

-- A key phase 2 writes without phase 1 having read it must hold the type the write
-- needs, else that write would fail after others were made.
local function writable(key, kind)
  if type_ok[key] then return end
  local t = redis.call('TYPE', key)
  t = t.ok or t
  if t ~= 'none' and t ~= kind then
    error('apply_fill: ' .. key .. ' is a ' .. tostring(t) .. ', not a ' .. kind
      .. '; nothing of the page was written')
  end
  type_ok[key] = true
end

local function count(field)
  if not counters[field] then
    counters[field] = 0
    counter_fields[#counter_fields + 1] = field
  end
  counters[field] = counters[field] + 1
end

local function position(pid)
  local p = pos[pid]
  if not p then
    p = {key = prefix .. 'pos:' .. pid, fills_key = prefix .. 'pos_fills:' .. pid,
         ledger_key = prefix .. 'pos_ledger:' .. pid, after_key = prefix .. 'pos_after:' .. pid,
         added = {}, ledger = {}, ledger_pairs = {}, after = {}, after_order = {},
         tail = nil, dirty = false}
    pos[pid] = p
  end
  return p
end

-- An order's applied size: what Redis holds (base; nil when it is not an integer) plus
-- what the page adds (delta; incrs, the atoms of each fill, for INCRBY).
local function order_state(coid)
  local o = orders[coid]
  if not o then
    local ecoid = esc(coid)
    local key = prefix .. 'order_applied:' .. ecoid
    local raw = redis.call('GET', key)
    local base = 0
    if raw then
      base = tonumber(raw)
      if not (string.match(raw, '^%-?%d+$') and whole(base)) then base = nil end
    end
    o = {key = key, fills_key = prefix .. 'order_fills:' .. ecoid, raw = raw, base = base,
         delta = 0, incrs = {}, fill_pairs = {}}
    orders[coid] = o
  end
  return o
end

local function order_applied_text(o)
  if o.delta == 0 then return o.raw or '' end
  return fmt(o.base + o.delta)
end

-- The state after fill id of position p (nil when unknown).
local function state_after(p, id)
  local text = p.after[id]
  if not text then text = redis.call('HGET', p.after_key, id) end
  if not text then return nil end
  return parse_state(text)
end

local function detail_of(p, id)
  local d = p.ledger[id]
  if d then return d end
  local text = redis.call('HGET', p.ledger_key, id)
  if not text then return nil end
  return parse_detail(text)
end

-- The current state a duplicate answers with: its position and its order's applied size.
local function duplicate_reply(status, stored, venue, inst_id)
  local strategy, coid = stored[1] or '', stored[2] or ''
  local reply = {status, strategy, coid, stored[3] or '', stored[4] or '', stored[5] or ''}
  local pid = position_id(strategy, venue, inst_id)
  local p = pos[pid]
  if p and p.dirty then
    local st = p.tail.state
    reply[7], reply[8], reply[9], reply[10], reply[11], reply[12] =
      fmt(st.qty), fmt(st.avg), fmt(st.rpnl), fmt(st.fees), fmt(st.count), fmt(st.updated)
  else
    local cur = redis.call('HMGET', prefix .. 'pos:' .. pid, unpack(POSITION_FIELDS))
    for i = 1, #POSITION_FIELDS do reply[#reply + 1] = cur[i] or '' end
  end
  local applied_text = ''
  if coid ~= '' then
    if orders[coid] then
      applied_text = order_applied_text(orders[coid])
    else
      applied_text = redis.call('GET', prefix .. 'order_applied:' .. esc(coid)) or ''
    end
  end
  reply[13] = applied_text
  return reply
end

local function refuse(message) return {'error', 'apply_fill: ' .. message} end

-- Computes fill f against the page state; on success records in the page state what
-- phase 2 writes for it. A refused fill changes nothing of the page state.
local function apply_one(f)
  local fill_id, venue, inst_id = f[1], f[2], f[3]
  local fill_coid, fill_void = f[5], f[6]
  local ts_ms, layer, call_token = f[14], f[15], f[19]
  local fill_key = prefix .. 'fill:' .. fill_id
  local venue_layer = venue .. ':' .. layer

  -- Dedup first: a duplicate must change nothing but its counter. The same call retried
  -- by the client after a lost reply (same call token) is not a new delivery: it is not
  -- counted again and the caller learns that its call applied the fill.
  local stored = page_fills[fill_id]
  if not stored then
    stored = redis.call('HMGET', fill_key,
      'strategy_id', 'attributed_order_id', 'side', 'size', 'price', 'call_token')
  end
  if stored[1] then
    if stored[6] == call_token then return duplicate_reply('retried', stored, venue, inst_id) end
    count(venue_layer .. ':delivered')
    return duplicate_reply('duplicate', stored, venue, inst_id)
  end

  local sign = 1
  if f[7] == 'sell' then sign = -1 end
  local detail_text = table.concat({fmt(sign), f[9], f[10], f[16], f[17], f[18], ts_ms}, ' ')
  local detail = parse_detail(detail_text)
  if not (detail and whole(detail.atoms) and detail.atoms > 0 and detail.atoms <= max_atoms
          and whole(detail.fee_base) and math.abs(detail.fee_base) <= max_atoms
          and whole(detail.ts)) then
    return refuse('fill ' .. fill_id .. ' has a value the script cannot hold exactly: '
      .. detail_text)
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
  local p = position(pid)
  writable(p.key, 'hash')
  writable(p.ledger_key, 'hash')
  writable(p.after_key, 'hash')
  local new = {ts = detail.ts, id = fill_id}

  -- Fold from the state before the new fill's canonical rank, over it and every later
  -- fill: Redis's fills of the position merged with the page's.
  local tail = p.tail
  if not tail then
    local last = redis.call('ZRANGE', p.fills_key, -1, -1, 'WITHSCORES')
    if #last == 0 then
      tail = {empty = true, state = {qty = 0, avg = 0, rpnl = 0, fees = 0, count = 0, updated = 0}}
    else
      tail = {ts = tonumber(last[2]), id = last[1]}
    end
  end
  local st, members
  if tail.empty or (tail.id ~= fill_id and less(tail, new)) then
    st = tail.state
    if not st then
      st = state_after(p, tail.id)
      if not st then return refuse('no state after fill ' .. tail.id .. ' in ' .. p.after_key) end
    end
    members = {new}
  else
    -- Candidates: the page's fills of the position, Redis's last fill before ts_ms and
    -- every one from ts_ms on (a member the page also holds counts once, as the page's).
    local skip = {[fill_id] = true}
    local all = {new}
    for _, e in ipairs(p.added) do
      skip[e.id] = true
      all[#all + 1] = e
    end
    local below = redis.call('ZREVRANGEBYSCORE', p.fills_key, '(' .. ts_ms, '-inf',
      'WITHSCORES', 'LIMIT', 0, #p.added + 2)
    for j = 1, #below, 2 do
      if not skip[below[j]] then
        all[#all + 1] = {id = below[j], ts = tonumber(below[j + 1])}
        break
      end
    end
    local above = redis.call('ZRANGEBYSCORE', p.fills_key, ts_ms, '+inf', 'WITHSCORES')
    for j = 1, #above, 2 do
      if not skip[above[j]] then all[#all + 1] = {id = above[j], ts = tonumber(above[j + 1])} end
    end
    table.sort(all, less)
    local rank
    for k, e in ipairs(all) do
      if e == new then rank = k break end
    end
    if rank > 1 then
      local pred = all[rank - 1].id
      st = state_after(p, pred)
      if not st then return refuse('no state after fill ' .. pred .. ' in ' .. p.after_key) end
    else
      st = {qty = 0, avg = 0, rpnl = 0, fees = 0, count = 0, updated = 0}
    end
    members = {}
    for k = rank, #all do members[#members + 1] = all[k] end
  end

  local after_updates = {}
  for _, e in ipairs(members) do
    local d
    if e == new then
      d = detail
    else
      d = detail_of(p, e.id)
      if not d then return refuse('ledger ' .. p.ledger_key .. ' misses fill ' .. e.id) end
    end
    st = fold(st, d)
    if math.abs(st.qty) > max_atoms then
      return refuse('position quantity of ' .. p.key .. ' would leave the exact range (|atoms| <= '
        .. ARGV[3] .. ') at fill ' .. e.id)
    end
    if not (finite(st.avg) and finite(st.rpnl) and finite(st.fees)) then
      return refuse('position ' .. p.key .. ' would hold a non-finite value at fill ' .. e.id)
    end
    after_updates[#after_updates + 1] = e.id
    after_updates[#after_updates + 1] = format_state(st)
  end

  local o
  if coid ~= '' then
    o = order_state(coid)
    writable(o.fills_key, 'zset')
    if not o.base then return refuse(o.key .. ' holds ' .. tostring(o.raw) .. ', not an integer') end
    -- INCRBY fails beyond a signed 64-bit integer (9.22e18); refuse well before it.
    if o.base + o.delta + detail.atoms > 9e18 then
      return refuse('applied size of order ' .. coid .. ' would overflow ' .. o.key)
    end
  end

  -- Accepted: record it in the page state. No check fails past this point.
  local last = members[#members]
  p.tail = {ts = last.ts, id = last.id, state = st}
  p.added[#p.added + 1] = new
  p.ledger[fill_id] = detail
  p.ledger_pairs[#p.ledger_pairs + 1] = fill_id
  p.ledger_pairs[#p.ledger_pairs + 1] = detail_text
  for i = 1, #after_updates, 2 do
    local member = after_updates[i]
    if not p.after[member] then p.after_order[#p.after_order + 1] = member end
    p.after[member] = after_updates[i + 1]
  end
  if not p.dirty then
    p.dirty = true
    dirty_pids[#dirty_pids + 1] = pid
  end
  p.strategy, p.venue, p.inst_id, p.cv = strategy, venue, inst_id, f[16]

  local applied_atoms = ''
  if o then
    if o.delta == 0 then dirty_coids[#dirty_coids + 1] = coid end
    o.delta = o.delta + detail.atoms
    o.incrs[#o.incrs + 1] = f[9]
    o.fill_pairs[#o.fill_pairs + 1] = ts_ms
    o.fill_pairs[#o.fill_pairs + 1] = fill_id
    applied_atoms = order_applied_text(o)
  end

  local fill_fields = {
    'fill_id', fill_id, 'venue', venue, 'inst_id', inst_id, 'trade_id', f[4],
    'client_order_id', fill_coid, 'venue_order_id', fill_void, 'side', f[7],
    'price', f[10], 'size', f[8], 'fee', f[11],
    'fee_ccy', f[12], 'liquidity', f[13], 'ts_ms', ts_ms, 'layer', layer,
    'strategy_id', strategy, 'attributed_order_id', coid, 'applied_ms', applied_ms}
  applied[#applied + 1] = {fill_key, call_token, fill_fields}
  page_fills[fill_id] = {strategy, coid, f[7], f[8], f[10], call_token}
  count(venue_layer .. ':delivered')
  count(venue_layer .. ':applied')

  return {'applied', strategy, coid, fmt(st.qty), fmt(st.avg), fmt(st.rpnl), fmt(st.fees),
          fmt(st.count), fmt(st.updated), applied_atoms}
end

local function test_hook(done)
  if fail_after and done == fail_after then
    error('apply_fill: test hook (ARGV[6]) stopped phase 1 after ' .. done .. ' fills')
  end
end

local page = cjson.decode(ARGV[5])
local replies = {}
for i, f in ipairs(page) do
  test_hook(i - 1)
  replies[i] = apply_one(f)
end

-- What phase 2 writes, as whole commands.
local writes = {}

local function push_pairs(cmd, key, items)  -- items: a flat list of pairs
  for i = 1, #items, 2 * CHUNK do
    local w = {cmd, key}
    for j = i, math.min(i + 2 * CHUNK - 1, #items) do w[#w + 1] = items[j] end
    writes[#writes + 1] = w
  end
end

if #applied > 0 then writable(audit_key, 'stream') end
for _, a in ipairs(applied) do
  local fill_key, call_token, fields = a[1], a[2], a[3]
  local hset = {'HSET', fill_key, 'call_token', call_token}
  local xadd = {'XADD', audit_key, '*'}
  for _, v in ipairs(fields) do
    hset[#hset + 1] = v
    xadd[#xadd + 1] = v
  end
  writes[#writes + 1] = hset
  writes[#writes + 1] = xadd
end

-- Each touched position once, with its state after the page.
if #dirty_pids > 0 then writable(positions_key, 'set') end
for _, pid in ipairs(dirty_pids) do
  local p = pos[pid]
  local st = p.tail.state
  local zadd = {}
  for _, e in ipairs(p.added) do
    zadd[#zadd + 1] = fmt(e.ts)
    zadd[#zadd + 1] = e.id
  end
  push_pairs('ZADD', p.fills_key, zadd)
  push_pairs('HSET', p.ledger_key, p.ledger_pairs)
  local after_pairs = {}
  for _, member in ipairs(p.after_order) do
    after_pairs[#after_pairs + 1] = member
    after_pairs[#after_pairs + 1] = p.after[member]
  end
  push_pairs('HSET', p.after_key, after_pairs)
  writes[#writes + 1] = {'HSET', p.key,
    'strategy_id', p.strategy, 'venue', p.venue, 'inst_id', p.inst_id,
    'qty_atoms', fmt(st.qty), 'avg_price', fmt(st.avg), 'realized_pnl', fmt(st.rpnl),
    'fees', fmt(st.fees), 'fill_count', fmt(st.count), 'updated_ms', fmt(st.updated),
    'contract_value', p.cv}
end
for i = 1, #dirty_pids, 2 * CHUNK do
  local w = {'SADD', positions_key}
  for j = i, math.min(i + 2 * CHUNK - 1, #dirty_pids) do w[#w + 1] = dirty_pids[j] end
  writes[#writes + 1] = w
end

for _, coid in ipairs(dirty_coids) do
  local o = orders[coid]
  -- One INCRBY per fill, of its atoms as sent: exact in Redis's integers even where the
  -- page's sum would not be in Lua's doubles.
  for _, atoms in ipairs(o.incrs) do writes[#writes + 1] = {'INCRBY', o.key, atoms} end
  push_pairs('ZADD', o.fills_key, o.fill_pairs)
end

-- Layer counters: HINCRBY fails on a field that is not an integer, so check them here.
if #counter_fields > 0 then
  writable(layers_key, 'hash')
  local current = redis.call('HMGET', layers_key, unpack(counter_fields))
  for i, field in ipairs(counter_fields) do
    local v = current[i]
    if v and not (string.match(v, '^%-?%d+$') and #v <= 15) then
      error('apply_fill: counter ' .. field .. ' of ' .. layers_key .. ' holds ' .. v
        .. ', not an integer; nothing of the page was written')
    end
    writes[#writes + 1] = {'HINCRBY', layers_key, field, fmt(counters[field])}
  end
end

local answer = cjson.encode(replies)
test_hook(#page)

-- ======================================================================================
-- Phase 2: the writes, nothing else. Each command was built and each key's type checked
-- in phase 1, so none of them fails short of Redis itself failing (out of memory is
-- refused at the first write of a script, before anything is written).
-- ======================================================================================
for _, w in ipairs(writes) do redis.call(unpack(w)) end
return answer
