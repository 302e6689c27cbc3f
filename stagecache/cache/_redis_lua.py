"""The Lua scripts of the Redis backend: every write is one atomic script.

Key layout under the namespace prefix ``P`` (``"<namespace>:"``)::

    P e:<id>       hash     the entry (see ``_redis_codec``), native TTL (PEXPIRE)
    P w            hash     id -> "<len>:<scope key><0 | 1<user id>>" (where it is
                            indexed; kept past the native TTL so the indexes below
                            can be cleaned when the entry hash has already expired)
    P s:<scope>    set      ids of one scope            (invalidate)
    P u:<user>     zset     ids of one user by last use  (purge, per-user cap, LRU)
    P lru          zset     every id by last use         (global cap, LRU)
    P exp          zset     every id by expires_at       (sweep of expired entries)
    P seq          string   number of events published
    P log          stream   the events, trimmed to about ``maxlen``
    P epoch        string   random id of this data set (a restarted, empty Redis
                            gets a new one, and every worker resyncs)
    P scrubbed     string   stream id up to which old-format records were scrubbed

Every script takes ``ARGV[1..3] = prefix, origin, stream maxlen`` and publishes what
it changed on ``P log`` as ``seq <n> o <origin> op <put|del|clear> ...``, entry ids
only (random), never a scope key or user id: the stream must hold nothing a purge
would have to find (older workers published ``op scope sk <scope key>``;
:meth:`RedisBackend.delete_user` scrubs such records);
``seq`` is incremented in the same script, so a consumer sees a gap (events trimmed
away, or a restarted Redis) as a jump in ``seq``. Caps are enforced inside the put
script: with many writers, no read-modify-write race can exceed them.
"""

from __future__ import annotations

__all__ = [
    "CLEAR",
    "DELETE",
    "DELETE_SCOPE",
    "DELETE_USER",
    "PUT",
    "SCRUB",
    "STATE",
    "TOUCH",
]

_HEADER = """
local P = ARGV[1]
local ORIGIN = ARGV[2]
local MAXLEN = ARGV[3]
local W = P .. 'w'
local LRU = P .. 'lru'
local EXP = P .. 'exp'

local function where(w)
  local colon = string.find(w, ':', 1, true)
  local n = tonumber(string.sub(w, 1, colon - 1))
  local scope = string.sub(w, colon + 1, colon + n)
  local user = false
  if string.sub(w, colon + n + 1, colon + n + 1) == '1' then
    user = string.sub(w, colon + n + 2)
  end
  return scope, user
end

local function drop(id, out)
  local w = redis.call('HGET', W, id)
  redis.call('ZREM', LRU, id)
  redis.call('ZREM', EXP, id)
  local existed = redis.call('DEL', P .. 'e:' .. id)
  if w then
    redis.call('HDEL', W, id)
    local scope, user = where(w)
    redis.call('SREM', P .. 's:' .. scope, id)
    if user then redis.call('ZREM', P .. 'u:' .. user, id) end
    existed = 1
  end
  if existed > 0 then table.insert(out, id) end
  return existed
end

local function publish(...)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('XADD', P .. 'log', 'MAXLEN', '~', MAXLEN, '*',
             'seq', seq, 'o', ORIGIN, ...)
end

local function publish_deleted(ids, why)
  for i = 1, #ids, 500 do
    local j = math.min(i + 499, #ids)
    if why then
      publish('op', 'del', 'ids', table.concat(ids, ',', i, j), 'why', why)
    else
      publish('op', 'del', 'ids', table.concat(ids, ',', i, j))
    end
  end
end
"""

# ARGV[4] now (engine clock), [5] ttl ms, [6] max per user (0: none), [7] max total,
# [8] id, [9] scope key, [10] '0' or '1' .. user id, [11] last_used, [12] expires_at,
# [13..] hash field/value pairs. Returns the ids it removed (expired or over a cap).
PUT = (
    _HEADER
    + """
local now, id, scope, uflag = ARGV[4], ARGV[8], ARGV[9], ARGV[10]
local user = false
if string.sub(uflag, 1, 1) == '1' then user = string.sub(uflag, 2) end
local gone = {}
local expired = redis.call('ZRANGEBYSCORE', EXP, '-inf', now, 'LIMIT', 0, 256)
for _, old in ipairs(expired) do
  if old ~= id then drop(old, gone) end
end
local key = P .. 'e:' .. id
local previous = redis.call('HGET', W, id)
if previous then
  local pscope, puser = where(previous)
  if pscope ~= scope then redis.call('SREM', P .. 's:' .. pscope, id) end
  if puser and puser ~= user then redis.call('ZREM', P .. 'u:' .. puser, id) end
end
redis.call('DEL', key)
redis.call('HSET', key, unpack(ARGV, 13))
redis.call('PEXPIRE', key, ARGV[5])
redis.call('HSET', W, id, string.len(scope) .. ':' .. scope .. uflag)
redis.call('SADD', P .. 's:' .. scope, id)
redis.call('ZADD', LRU, ARGV[11], id)
redis.call('ZADD', EXP, ARGV[12], id)
local maxu, maxt = tonumber(ARGV[6]), tonumber(ARGV[7])
if user then
  local ukey = P .. 'u:' .. user
  redis.call('ZADD', ukey, ARGV[11], id)
  if maxu > 0 then
    while redis.call('ZCARD', ukey) > maxu do
      local victim = redis.call('ZRANGE', ukey, 0, 0)[1]
      drop(victim, gone)
      redis.call('ZREM', ukey, victim)
    end
  end
end
if maxt > 0 then
  while redis.call('ZCARD', LRU) > maxt do
    drop(redis.call('ZRANGE', LRU, 0, 0)[1], gone)
  end
end
publish('op', 'put', 'ids', id)
if #gone > 0 then publish_deleted(gone) end
return gone
"""
)

# ARGV[4..] groups of 6: id, last_used, 'a' (absolute) or 'd' (delta), hits,
# positive, negative. Only existing entries are touched (never resurrected).
TOUCH = (
    _HEADER
    + """
local touched = 0
for i = 4, #ARGV, 6 do
  local id, used = ARGV[i], ARGV[i + 1]
  local key = P .. 'e:' .. id
  if redis.call('EXISTS', key) == 1 then
    touched = touched + 1
    redis.call('HSET', key, 'l', used)
    if ARGV[i + 2] == 'a' then
      redis.call('HSET', key, 'h', ARGV[i + 3], 'p', ARGV[i + 4], 'n', ARGV[i + 5])
    else
      if ARGV[i + 3] ~= '0' then redis.call('HINCRBY', key, 'h', ARGV[i + 3]) end
      if ARGV[i + 4] ~= '0' then redis.call('HINCRBY', key, 'p', ARGV[i + 4]) end
      if ARGV[i + 5] ~= '0' then redis.call('HINCRBY', key, 'n', ARGV[i + 5]) end
    end
    redis.call('ZADD', LRU, 'XX', 'GT', used, id)
    local w = redis.call('HGET', W, id)
    if w then
      local _, user = where(w)
      if user then redis.call('ZADD', P .. 'u:' .. user, 'XX', 'GT', used, id) end
    end
  end
end
return touched
"""
)

# ARGV[4..] entry ids. Returns how many existed.
DELETE = (
    _HEADER
    + """
local gone = {}
for i = 4, #ARGV do drop(ARGV[i], gone) end
if #gone > 0 then publish_deleted(gone) end
return #gone
"""
)

# ARGV[4] scope key. Returns how many existed. Publishes the ids, never the scope
# key: the stream outlives a purge, and a scope key holds the user id.
DELETE_SCOPE = (
    _HEADER
    + """
local skey = P .. 's:' .. ARGV[4]
local gone = {}
for _, id in ipairs(redis.call('SMEMBERS', skey)) do drop(id, gone) end
redis.call('DEL', skey)
if #gone > 0 then publish_deleted(gone) end
return #gone
"""
)

# ARGV[4] user id. Returns how many existed; publishes their ids with
# ``why purge`` (workers compact the graphs they were in; older workers read a
# plain ``del``).
DELETE_USER = (
    _HEADER
    + """
local ukey = P .. 'u:' .. ARGV[4]
local gone = {}
for _, id in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do drop(id, gone) end
redis.call('DEL', ukey)
if #gone > 0 then publish_deleted(gone, 'purge') end
return #gone
"""
)

# ARGV[4] records to read. XDELs the ``op scope`` records (older workers wrote the
# scope key, and so the user id, there) among the next ARGV[4] records after
# ``P scrubbed``, and moves that mark. Returns {records deleted, records read}.
SCRUB = (
    _HEADER
    + """
local LOG, MARK = P .. 'log', P .. 'scrubbed'
local low = '-'
local mark = redis.call('GET', MARK)
if mark then low = '(' .. mark end
local batch = redis.call('XRANGE', LOG, low, '+', 'COUNT', tonumber(ARGV[4]))
local removed = 0
for _, message in ipairs(batch) do
  local fields = message[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'op' then
      if fields[i + 1] == 'scope' then
        removed = removed + redis.call('XDEL', LOG, message[1])
      end
      break
    end
  end
end
if #batch > 0 then redis.call('SET', MARK, batch[#batch][1]) end
return {removed, #batch}
"""
)

CLEAR = (
    _HEADER
    + """
local gone = {}
for _, id in ipairs(redis.call('HKEYS', W)) do drop(id, gone) end
for _, id in ipairs(redis.call('ZRANGE', LRU, 0, -1)) do drop(id, gone) end
redis.call('DEL', W, LRU, EXP)
publish('op', 'clear')
return #gone
"""
)

# ARGV[4] a fresh epoch, used when none is set. Returns {epoch, seq, last stream id}.
STATE = (
    _HEADER
    + """
local epoch = redis.call('GET', P .. 'epoch')
if not epoch then
  redis.call('SET', P .. 'epoch', ARGV[4])
  epoch = ARGV[4]
end
local seq = redis.call('GET', P .. 'seq') or '0'
local last = redis.call('XREVRANGE', P .. 'log', '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {epoch, seq, last_id}
"""
)
