//! Request bodies of the HTTP API: JSON or MessagePack by `Content-Type` (415 otherwise),
//! at most `max_publish_bytes` (413), decoded into typed structs (400 on bad fields).
//! `data` stays in the encoding it came in, as a `Payload`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::ApiError;
use crate::protocol::{ErrorCode, MAX_MSGPACK_DEPTH, Payload};

/// The encoding of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Msgpack,
}

/// Reads the body, enforcing type and size.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(BodyKind, bytes::Bytes), ApiError> {
    let kind = body_kind(headers)?;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::LimitExceeded,
            format!("body larger than max_publish_bytes ({limit})"),
        )
    })?;
    Ok((kind, bytes))
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/msgpack" | "application/vnd.msgpack" | "application/x-msgpack" => {
            Ok(BodyKind::Msgpack)
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "Content-Type must be application/json or application/msgpack",
        )),
    }
}

/// Publication data as a body carries it, in either encoding.
pub trait DataField: DeserializeOwned {
    fn into_payload(self) -> Payload;
}

impl DataField for Box<RawValue> {
    fn into_payload(self) -> Payload {
        Payload::from_raw_json(&self)
    }
}

impl DataField for rmpv::Value {
    fn into_payload(self) -> Payload {
        Payload::from_msgpack_value(&self)
    }
}

/// Decodes a body whose shape is generic over its `data` field: `T<Box<RawValue>>` for
/// JSON, `T<rmpv::Value>` for MessagePack, both mapped to one result type.
pub fn decode_with_data<J, M, R>(
    kind: BodyKind,
    bytes: &[u8],
    from_json: impl FnOnce(J) -> R,
    from_msgpack: impl FnOnce(M) -> R,
) -> Result<R, ApiError>
where
    J: DeserializeOwned,
    M: DeserializeOwned,
{
    match kind {
        BodyKind::Json => serde_json::from_slice::<J>(bytes)
            .map(from_json)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"))),
        BodyKind::Msgpack => {
            let value = read_msgpack(bytes)?;
            rmpv::ext::from_value::<M>(value)
                .map(from_msgpack)
                .map_err(|e| ApiError::bad_request(format!("invalid MessagePack body: {e}")))
        }
    }
}

/// Decodes a body without `data`.
pub fn decode<T: DeserializeOwned>(kind: BodyKind, bytes: &[u8]) -> Result<T, ApiError> {
    decode_with_data::<T, T, T>(kind, bytes, |t| t, |t| t)
}

fn read_msgpack(bytes: &[u8]) -> Result<rmpv::Value, ApiError> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_MSGPACK_DEPTH)
        .map_err(|e| ApiError::bad_request(format!("invalid MessagePack body: {e}")))?;
    if !rest.is_empty() {
        return Err(ApiError::bad_request(
            "trailing bytes after the MessagePack body",
        ));
    }
    Ok(value)
}

/// `POST /api/publish`. Every body refuses unknown fields (400 naming the field): a
/// misspelt or unsupported option must not be silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody<D> {
    pub channel: String,
    pub data: Option<D>,
    pub b64data: Option<String>,
    pub idempotency_key: Option<String>,
    pub exclude_client: Option<String>,
}

/// `POST /api/broadcast`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody<D> {
    pub channels: Vec<String>,
    pub data: Option<D>,
    pub b64data: Option<String>,
    pub exclude_client: Option<String>,
}

/// `POST /api/disconnect`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub reconnect: Option<bool>,
}

/// `POST /api/unsubscribe` and `POST /api/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeBody {
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub channel: String,
}

/// `POST /api/history_remove`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRemoveBody {
    pub channel: String,
}

/// `POST /api/presence_stats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceStatsBody {
    pub channel: String,
}

/// A publication decoded from either encoding.
pub struct Publish {
    pub channel: String,
    pub payload: Payload,
    pub idempotency_key: Option<String>,
    pub exclude_client: Option<String>,
}

impl<D: DataField> TryFrom<PublishBody<D>> for Publish {
    type Error = ApiError;

    fn try_from(body: PublishBody<D>) -> Result<Self, ApiError> {
        Ok(Publish {
            channel: body.channel,
            payload: payload_of(body.data, body.b64data)?,
            idempotency_key: body.idempotency_key,
            exclude_client: body.exclude_client,
        })
    }
}

/// A broadcast decoded from either encoding.
pub struct Broadcast {
    pub channels: Vec<String>,
    pub payload: Payload,
    pub exclude_client: Option<String>,
}

impl<D: DataField> TryFrom<BroadcastBody<D>> for Broadcast {
    type Error = ApiError;

    fn try_from(body: BroadcastBody<D>) -> Result<Self, ApiError> {
        Ok(Broadcast {
            channels: body.channels,
            payload: payload_of(body.data, body.b64data)?,
            exclude_client: body.exclude_client,
        })
    }
}

/// `data`, or the bytes of `b64data` (standard base64) as binary data: MessagePack
/// clients get `bin`, JSON clients `data_b64`. Neither publishes `null`; both is 400.
fn payload_of<D: DataField>(data: Option<D>, b64data: Option<String>) -> Result<Payload, ApiError> {
    match (data, b64data) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give data or b64data, not both")),
        (Some(data), None) => Ok(data.into_payload()),
        (None, Some(text)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| ApiError::bad_request(format!("b64data is not base64: {e}")))?;
            Ok(Payload::from_msgpack_value(&rmpv::Value::Binary(bytes)))
        }
        (None, None) => Ok(Payload::null()),
    }
}
