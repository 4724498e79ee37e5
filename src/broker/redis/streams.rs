//! Channel streams in Redis: reading ranges of a stream, a channel's position (epoch and
//! offset), recovery of what a subscriber missed, history pages and history removal.

use std::time::Duration;

use super::envelope::Envelope;
use super::{RedisBroker, RelayContext};
use crate::broker::{BrokerError, HistoryMessage, HistoryPage, epoch};
use crate::config::NamespaceConfig;
use crate::protocol::{ChannelName, StreamPosition};

impl RelayContext {
    /// Stream entries with `after < offset <= through`, oldest first (newest first with
    /// `newest_first`), at most `limit`.
    pub(super) async fn read_stream(
        &self,
        channel: &ChannelName,
        after: u64,
        through: u64,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<Vec<HistoryMessage>, BrokerError> {
        let mut conn = self.commands()?;
        let (low, high) = (format!("{}-1", after + 1), format!("{through}-1"));
        let mut cmd = redis::cmd(if newest_first { "XREVRANGE" } else { "XRANGE" });
        cmd.arg(self.keys.stream(channel.as_str()));
        if newest_first {
            cmd.arg(high).arg(low);
        } else {
            cmd.arg(low).arg(high);
        }
        if let Some(limit) = limit {
            cmd.arg("COUNT").arg(limit);
        }
        let entries: Vec<(String, Vec<Vec<u8>>)> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed("history", &e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| stream_entry(&id, &fields))
            .collect())
    }
}

impl RedisBroker {
    /// The channel's stream position and creation time (ms), read without storing
    /// anything: a channel nobody published to has no stream (`None`).
    pub(super) async fn stream_position(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<(StreamPosition, u64)>, BrokerError> {
        let ctx = &self.ctx;
        let mut conn = ctx.commands()?;
        let (epoch, offset, created): (Option<String>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(ctx.keys.meta(channel.as_str()))
                .arg("e")
                .arg("o")
                .arg("c")
                .query_async(&mut conn)
                .await
                .map_err(|e| ctx.failed("history", &e))?;
        Ok(epoch.map(|epoch| {
            let position = StreamPosition {
                offset: offset.unwrap_or(0),
                epoch,
            };
            (position, created.unwrap_or(0))
        }))
    }

    /// The messages after `from` up to `top`, if history still holds every one of them
    /// (from the stream's start when `from` was read before the stream existed).
    pub(super) async fn recover(
        &self,
        channel: &ChannelName,
        ns: &NamespaceConfig,
        from: &StreamPosition,
        top: &StreamPosition,
        created_ms: u64,
    ) -> Result<(bool, Vec<HistoryMessage>), BrokerError> {
        let start = if from.epoch == top.epoch {
            from.offset
        } else if epoch::recovers_into_new_stream(
            from,
            created_ms,
            true,
            self.stream_lifetime(ns),
            epoch::now_ms(),
        ) {
            0
        } else {
            return Ok((false, Vec::new()));
        };
        if start > top.offset {
            return Ok((false, Vec::new()));
        }
        let wanted = top.offset - start;
        if wanted == 0 {
            return Ok((true, Vec::new()));
        }
        if wanted > ns.max_recover_messages as u64 {
            return Ok((false, Vec::new()));
        }
        let entries = self
            .ctx
            .read_stream(channel, start, top.offset, None, false)
            .await?;
        let complete = entries.len() as u64 == wanted
            && entries
                .iter()
                .zip(start + 1..)
                .all(|(message, expected)| message.offset == expected);
        if complete {
            Ok((true, entries))
        } else {
            Ok((false, Vec::new()))
        }
    }

    /// How long a stream lives in Redis after its last publication.
    pub(super) fn stream_lifetime(&self, ns: &NamespaceConfig) -> Duration {
        Duration::from_secs(
            self.ctx
                .config
                .stream_meta_ttl_secs
                .max(ns.history_ttl_secs),
        )
    }

    pub async fn history(
        &self,
        channel: &ChannelName,
        _ns: &NamespaceConfig,
        since: Option<&StreamPosition>,
        limit: Option<usize>,
        newest_first: bool,
    ) -> Result<HistoryPage, BrokerError> {
        let Some((top, _)) = self.stream_position(channel).await? else {
            let position = epoch::no_stream_position(epoch::now_ms());
            return Ok(HistoryPage {
                epoch: position.epoch,
                offset: 0,
                messages: Vec::new(),
            });
        };
        let after = since
            .filter(|s| s.epoch == top.epoch)
            .map_or(0, |s| s.offset);
        let messages = if after >= top.offset {
            Vec::new()
        } else {
            self.ctx
                .read_stream(channel, after, top.offset, limit, newest_first)
                .await?
        };
        Ok(HistoryPage {
            epoch: top.epoch,
            offset: top.offset,
            messages,
        })
    }

    /// Deletes the channel's stream of messages; its offset and epoch stay in Redis.
    pub async fn remove_history(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        let ctx = &self.ctx;
        let mut conn = ctx.commands()?;
        let _: i64 = redis::cmd("DEL")
            .arg(ctx.keys.stream(channel.as_str()))
            .query_async(&mut conn)
            .await
            .map_err(|e| ctx.failed("history", &e))?;
        Ok(())
    }
}

/// Decodes one stream entry (`<offset>-1`, fields `d` envelope and `t` time).
pub(super) fn stream_entry(id: &str, fields: &[Vec<u8>]) -> Option<HistoryMessage> {
    let offset = id.split('-').next()?.parse().ok()?;
    let data = fields
        .chunks(2)
        .find(|kv| kv.first().map(Vec::as_slice) == Some(b"d"))?
        .get(1)?;
    let envelope: Envelope = rmp_serde::from_slice(data).ok()?;
    Some(HistoryMessage {
        offset,
        payload: envelope.body.payload()?,
        event: envelope.body.event(),
    })
}
