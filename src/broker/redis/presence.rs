//! Cluster-wide presence in Redis, per user (see `broker::presence`). Per channel, four
//! keys in the channel's hash slot:
//!
//! - `pz`: sorted set of client ids scored by expiry (ms), refreshed by each node for its
//!   own clients every third of `presence_ttl_secs`, so a crashed node's clients expire;
//! - `ph`: hash client id -> client info (JSON);
//! - `pi`: sorted set, all scores 0, of `user key NUL client id`: the page order;
//! - `pu`: hash user key -> connections, whose size is the user count.
//!
//! Every change is one Lua script, so the four never disagree and exactly one caller sees
//! a user's first connection arrive (join) or its last go (leave), whichever node did it.
//! Expired connections are swept by the nodes that have the channel (`refresh_loop`); a
//! user whose last connection expired leaves like any other.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use tokio_util::sync::CancellationToken;

use super::RelayContext;
use crate::broker::BrokerError;
use crate::broker::presence::{PresencePage, PresenceQuery, PresenceStats, user_key};
use crate::protocol::{ChannelName, ClientInfo};

/// Connections one refresh script call carries.
const REFRESH_CHUNK: usize = 500;
/// Expired connections one sweep removes.
const SWEEP_CHUNK: usize = 1000;

/// KEYS: pz, ph, pi, pu. ARGV: expiry_ms, key_ttl_secs, then per connection: client id,
/// user key, info JSON. Adds or refreshes; returns the infos of connections that were new
/// and their user's first.
static ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local first = {}
for i = 3, #ARGV, 3 do
  local cid, ukey, info = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('ZADD', KEYS[1], ARGV[1], cid) == 1 then
    redis.call('HSET', KEYS[2], cid, info)
    redis.call('ZADD', KEYS[3], 0, ukey .. '\0' .. cid)
    if redis.call('HINCRBY', KEYS[4], ukey, 1) == 1 then
      first[#first + 1] = info
    end
  end
end
for k = 1, 4 do redis.call('EXPIRE', KEYS[k], ARGV[2]) end
return first
"#,
    )
});

/// KEYS: pz, ph, pi, pu. ARGV: client id, user key. Returns 1 when it was its user's last
/// connection, 0 otherwise (also when it was not present).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2] .. '\0' .. ARGV[1])
if redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[4], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: pz, ph, pi, pu. ARGV: now_ms, max. Removes expired connections; returns the
/// infos of those that were their user's last.
static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local last = {}
for _, cid in ipairs(ids) do
  redis.call('ZREM', KEYS[1], cid)
  local info = redis.call('HGET', KEYS[2], cid)
  redis.call('HDEL', KEYS[2], cid)
  if info then
    local ok, decoded = pcall(cjson.decode, info)
    local user = ok and type(decoded) == 'table' and decoded.user or ''
    if type(user) ~= 'string' then user = '' end
    local ukey = user
    if user == '' then ukey = '\0' .. cid end
    redis.call('ZREM', KEYS[3], ukey .. '\0' .. cid)
    if redis.call('HINCRBY', KEYS[4], ukey, -1) <= 0 then
      redis.call('HDEL', KEYS[4], ukey)
      last[#last + 1] = info
    end
  end
end
return last
"#,
    )
});

/// KEYS: pz, ph, pi. ARGV: cursor ('' from the start), limit, now_ms, by_user (0/1),
/// max entries to scan. Returns {next cursor or '', info...}: live connections in page
/// order after the cursor, one per user key when by_user.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local limit, now, by_user, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local out, after, last_user, cursor, more = {}, ARGV[1], nil, '', false
while not more do
  local lo = '-'
  if after ~= '' then lo = '(' .. after end
  local members = redis.call('ZRANGEBYLEX', KEYS[3], lo, '+', 'LIMIT', 0, 256)
  for _, m in ipairs(members) do
    local ukey, cid = string.match(m, '^(.*)%z([^%z]*)$')
    if ukey and not (by_user and ukey == last_user) then
      local score = redis.call('ZSCORE', KEYS[1], cid)
      if score and tonumber(score) > now then
        if #out == limit or budget <= 0 then more = true break end
        local info = redis.call('HGET', KEYS[2], cid)
        if info then
          out[#out + 1] = info
          last_user = ukey
          cursor = m
          if by_user then cursor = ukey .. '\0~' end
        end
      end
    end
    budget = budget - 1
    after = m
  end
  if #members < 256 then break end
end
if not more then cursor = '' end
if more and #out == 0 then cursor = after end
table.insert(out, 1, cursor)
return out
"#,
    )
});

struct ChannelKeys([String; 4]);

fn keys(ctx: &RelayContext, channel: &ChannelName) -> ChannelKeys {
    let name = channel.as_str();
    ChannelKeys([
        ctx.keys.presence_expiry(name),
        ctx.keys.presence_info(name),
        ctx.keys.presence_index(name),
        ctx.keys.presence_users(name),
    ])
}

fn decode(json: &str) -> Option<ClientInfo> {
    serde_json::from_str(json).ok()
}

/// A page of `channel`'s live presence.
pub(crate) async fn list(
    ctx: &RelayContext,
    channel: &ChannelName,
    query: &PresenceQuery,
) -> Result<PresencePage, BrokerError> {
    let mut conn = ctx.commands()?;
    let [pz, ph, pi, _] = &keys(ctx, channel).0;
    let limit = query.limit.max(1);
    let mut reply: Vec<String> = LIST
        .key(pz)
        .key(ph)
        .key(pi)
        .arg(query.cursor.as_deref().unwrap_or(""))
        .arg(limit)
        .arg(super::now_ms())
        .arg(u8::from(query.by_user))
        .arg(limit.saturating_mul(4).saturating_add(1024))
        .invoke_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    let cursor = if reply.is_empty() {
        String::new()
    } else {
        reply.remove(0)
    };
    Ok(PresencePage {
        clients: reply.iter().filter_map(|json| decode(json)).collect(),
        cursor: (!cursor.is_empty()).then_some(cursor),
    })
}

/// Live connections and users of `channel`: two O(log n) reads.
pub(crate) async fn stats(
    ctx: &RelayContext,
    channel: &ChannelName,
) -> Result<PresenceStats, BrokerError> {
    let mut conn = ctx.commands()?;
    let [pz, _, _, pu] = &keys(ctx, channel).0;
    let (clients, users): (u64, u64) = redis::pipe()
        .cmd("ZCOUNT")
        .arg(pz)
        .arg(format!("({}", super::now_ms()))
        .arg("+inf")
        .cmd("HLEN")
        .arg(pu)
        .query_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    Ok(PresenceStats { clients, users })
}

/// Adds or refreshes `clients` in `channel`'s presence; returns those that were their
/// user's first connection (joins to announce).
pub(crate) async fn add(
    ctx: &RelayContext,
    channel: &ChannelName,
    clients: &[ClientInfo],
) -> Result<Vec<ClientInfo>, BrokerError> {
    let mut joined = Vec::new();
    if clients.is_empty() {
        return Ok(joined);
    }
    let mut conn = ctx.commands()?;
    let [pz, ph, pi, pu] = &keys(ctx, channel).0;
    let ttl = Duration::from_secs(ctx.config.presence_ttl_secs);
    let expires = super::now_ms() + ttl.as_millis() as u64;
    for chunk in clients.chunks(REFRESH_CHUNK) {
        let mut invocation = ADD.prepare_invoke();
        invocation
            .key(pz)
            .key(ph)
            .key(pi)
            .key(pu)
            .arg(expires)
            .arg(ttl.as_secs().saturating_mul(2).max(1));
        for client in chunk {
            let Ok(info) = serde_json::to_string(client) else {
                continue;
            };
            invocation
                .arg(&client.client_id)
                .arg(user_key(client))
                .arg(info);
        }
        let first: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| ctx.failed("presence", &e))?;
        joined.extend(first.iter().filter_map(|json| decode(json)));
    }
    Ok(joined)
}

/// Removes a connection from `channel`'s presence; true when it was its user's last.
pub(crate) async fn remove(
    ctx: &RelayContext,
    channel: &ChannelName,
    client: &ClientInfo,
) -> Result<bool, BrokerError> {
    let mut conn = ctx.commands()?;
    let [pz, ph, pi, pu] = &keys(ctx, channel).0;
    let last: i64 = REMOVE
        .key(pz)
        .key(ph)
        .key(pi)
        .key(pu)
        .arg(&client.client_id)
        .arg(user_key(client))
        .invoke_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    Ok(last == 1)
}

/// Removes expired connections of `channel`; returns the last connections of users that
/// left with them (leaves to announce).
pub(crate) async fn sweep(
    ctx: &RelayContext,
    channel: &ChannelName,
) -> Result<Vec<ClientInfo>, BrokerError> {
    let mut conn = ctx.commands()?;
    let [pz, ph, pi, pu] = &keys(ctx, channel).0;
    let last: Vec<String> = SWEEP
        .key(pz)
        .key(ph)
        .key(pi)
        .key(pu)
        .arg(super::now_ms())
        .arg(SWEEP_CHUNK)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| ctx.failed("presence", &e))?;
    Ok(last.iter().filter_map(|json| decode(json)).collect())
}

/// Every third of the TTL: refreshes the presence entries of this node's clients
/// (announcing users that were missing, e.g. after Redis lost them), then sweeps expired
/// ones (announcing the users that left with a crashed node).
pub(crate) async fn refresh_loop(ctx: Arc<RelayContext>, stop: CancellationToken) {
    let every = Duration::from_millis((ctx.config.presence_ttl_secs * 1000 / 3).max(100));
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let channels: Vec<ChannelName> = ctx
            .presence_channels
            .iter()
            .map(|e| e.key().clone())
            .collect();
        for channel in channels {
            let clients: Vec<ClientInfo> = ctx
                .hub
                .subscribers(&channel)
                .iter()
                .map(|c| c.info_for_presence())
                .collect();
            if clients.is_empty() {
                continue;
            }
            let refreshed = async {
                let joined = add(&ctx, &channel, &clients).await?;
                let left = sweep(&ctx, &channel).await?;
                Ok::<_, BrokerError>((joined, left))
            };
            match refreshed.await {
                Ok((joined, left)) => {
                    for client in joined {
                        ctx.user_changed(&channel, true, client).await;
                    }
                    for client in left {
                        ctx.user_changed(&channel, false, client).await;
                    }
                }
                Err(err) => {
                    tracing::debug!(channel = %channel, error = %err, "presence refresh failed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::presence::index_member;

    #[test]
    fn the_index_member_is_what_the_scripts_build() {
        let client = ClientInfo {
            client_id: "00000000000000ab".into(),
            user: String::new(),
            info: None,
        };
        assert_eq!(
            index_member(&client),
            "\u{0}00000000000000ab\u{0}00000000000000ab"
        );
    }
}
