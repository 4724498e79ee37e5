//! The Lua scripts that make a publication atomic in Redis: idempotency check, epoch
//! creation, offset increment, history append with MAXLEN, expiries and PUBLISH happen
//! in one step, so offsets, history and live delivery can never disagree. Only a
//! publication creates a stream's keys (its meta hash records the creation time `c`).

use std::sync::LazyLock;

use redis::Script;

/// KEYS: meta, stream, and the idempotency key when there is one (an empty key name
/// would hash to another Cluster slot).
/// ARGV: topic, envelope, history_size, history_ttl_secs, meta_ttl_secs, new_epoch,
///       idempotency_ttl_secs, publish command (PUBLISH or SPUBLISH), now_ms.
/// Returns {offset, epoch}.
pub(crate) static PUBLISH_WITH_HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, stream, idem = KEYS[1], KEYS[2], KEYS[3]
if idem then
  local prev = redis.call('GET', idem)
  if prev then
    local sep = string.find(prev, ':', 1, true)
    return {tonumber(string.sub(prev, 1, sep - 1)), string.sub(prev, sep + 1)}
  end
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', meta, 'e', epoch, 'c', ARGV[9])
end
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('XADD', stream, 'MAXLEN', ARGV[3], offset .. '-1', 'd', ARGV[2], 't', ARGV[9])
redis.call('EXPIRE', stream, ARGV[4])
redis.call('EXPIRE', meta, ARGV[5])
redis.call(ARGV[8], ARGV[1], offset .. ':' .. epoch .. ':' .. ARGV[2])
if idem then
  redis.call('SET', idem, offset .. ':' .. epoch, 'EX', ARGV[7])
end
return {offset, epoch}
"#,
    )
});

/// KEYS: idempotency key. ARGV: topic, message, idempotency_ttl_secs, publish command.
/// Returns 1 when published, 0 when the key was seen before.
pub(crate) static PUBLISH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call(ARGV[4], ARGV[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: meta. ARGV: the epoch of an offset that came again, the highest offset
/// delivered in it, a new epoch, and `1` when the node's pub/sub connection was
/// replaced since that delivery (a plain duplicate cannot cross a reconnect).
/// When Redis went back in time (restarted from an older snapshot, or a failover lost
/// writes), offsets below ones already delivered come again under the same epoch: the
/// stream then moves to the new epoch (keeping its offsets and history) and remembers
/// the one it replaced in `p`, so the node that comes second finds the same answer.
/// Returns {epoch, 1} when the stream moved (now or before) from that epoch, else
/// {epoch, 0}: the offset was a plain duplicate.
pub(crate) static ROLL_EPOCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  return {'', 0}
end
local offset = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if epoch == ARGV[1] and (offset < tonumber(ARGV[2]) or ARGV[4] == '1') then
  redis.call('HSET', KEYS[1], 'e', ARGV[3], 'p', ARGV[1])
  return {ARGV[3], 1}
end
if epoch ~= ARGV[1] and redis.call('HGET', KEYS[1], 'p') == ARGV[1] then
  return {epoch, 1}
end
return {epoch, 0}
"#,
    )
});

/// KEYS: occupancy set, vacating key. ARGV: node id.
/// Returns 1 when the channel became occupied cluster-wide (send `channel_occupied`),
/// 2 when it came back while a node held its `channel_vacated` (send nothing: the holder
/// finds its token gone), 0 when other nodes had it already.
pub(crate) static OCCUPY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  if redis.call('DEL', KEYS[2]) == 1 then
    return 2
  end
  return 1
end
return 0
"#,
    )
});

/// KEYS: occupancy set, vacating key. ARGV: node id, token, token TTL in ms (0: no hold).
/// Returns 1 when the channel was vacated cluster-wide and is not held (send
/// `channel_vacated` now), 2 when it was vacated and the token is set (hold, then
/// `CONFIRM_VACATED`), 0 when other nodes still have it.
pub(crate) static VACATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    return 2
  end
  return 1
end
return 0
"#,
    )
});

/// KEYS: vacating key. ARGV: token. Returns 1 (and clears the token) when the held
/// `channel_vacated` stands: nobody came back during the hold.
pub(crate) static CONFIRM_VACATED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#,
    )
});
