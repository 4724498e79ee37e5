//! A borrowing scanner for the JSON frames that make up almost all of a run's traffic:
//! `message` ops carrying a benchmark payload, one or several per frame. It reads the few
//! fields the load generator checks (`offset`, `epoch`, and `ts`, `seq`, `s` of `data`)
//! straight from the frame bytes, without building a value or allocating.
//!
//! It is a fast path, not a second decoder: it accepts only what it reads exactly as
//! serde would (`wire::ServerMsg`), and says `None` for anything else (another op, escapes
//! in a string it keeps, a number that is not a plain unsigned integer, nested values
//! outside `data`'s known fields, a repeated field), and the caller then decodes the whole
//! frame with serde. So a frame either gives the same messages both ways, or goes the
//! serde way.

use crate::wire::{BenchProbe, Epoch, ServerMsg, ServerOp};

/// Longer strings (the padding of a large payload) send the frame to serde, which skips a
/// string eight bytes at a time where this scanner looks at each byte: beyond a few hundred
/// bytes serde is the faster of the two, and in unoptimised (test) builds by far.
const LONG_STRING: usize = 256;

/// Decodes every message of a JSON frame that holds only `message` ops into `out`; `None`
/// (with `out` as it was) when the frame needs the full decoder.
pub fn messages(frame: &[u8], out: &mut Vec<ServerMsg>) -> Option<()> {
    let start = out.len();
    let mut scanner = Scanner {
        bytes: frame,
        pos: 0,
    };
    let decoded = (|| {
        loop {
            scanner.skip_whitespace();
            if scanner.pos == frame.len() {
                return Some(());
            }
            out.push(scanner.message()?);
        }
    })();
    if decoded.is_none() {
        out.truncate(start);
    }
    decoded
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    /// One `{"op":"message", ...}` object.
    fn message(&mut self) -> Option<ServerMsg> {
        let mut op = None;
        let mut data = None;
        let mut offset = None;
        let mut epoch = None;
        self.object(|s, key| {
            match key {
                b"op" if op.is_none() => op = Some(s.string()?),
                b"data" if data.is_none() => data = Some(s.probe()?),
                b"offset" if offset.is_none() => offset = Some(s.unsigned()?),
                b"epoch" if epoch.is_none() => {
                    epoch = Some(Epoch::new(std::str::from_utf8(s.string()?).ok()?));
                }
                // Fields of `ServerMsg` a `message` does not carry: serde would check them.
                b"op" | b"data" | b"offset" | b"epoch" | b"id" | b"code" | b"message"
                | b"reason" | b"ping_interval" | b"pong_timeout" | b"recovered" => return None,
                _ => s.scalar()?,
            }
            Some(())
        })?;
        if op != Some(b"message") {
            return None;
        }
        let mut msg = ServerMsg::of(ServerOp::Message);
        msg.data = data;
        msg.offset = offset;
        msg.epoch = epoch;
        Some(msg)
    }

    /// The benchmark fields of a `data` object; other fields must be scalars.
    fn probe(&mut self) -> Option<BenchProbe> {
        let mut probe = BenchProbe::default();
        self.object(|s, key| {
            match key {
                b"ts" if probe.ts.is_none() => probe.ts = Some(s.unsigned()?),
                b"seq" if probe.seq.is_none() => probe.seq = Some(s.unsigned()?),
                b"s" if probe.s.is_none() => probe.s = Some(u32::try_from(s.unsigned()?).ok()?),
                b"ts" | b"seq" | b"s" => return None,
                _ => s.scalar()?,
            }
            Some(())
        })?;
        Some(probe)
    }

    /// Walks `{ "key": value, ... }`, handing each key to `field`, which must consume the
    /// value. Keys with escapes are refused.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.skip_whitespace();
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.skip_whitespace();
            let key = self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            field(self, key)?;
            self.skip_whitespace();
            if self.eat(b'}') {
                return Some(());
            }
            self.expect(b',')?;
        }
    }

    /// A string without escapes, of at most [`LONG_STRING`] bytes; its bytes between the
    /// quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = &self.bytes[self.pos..];
        // serde refuses control characters in strings; escapes need unescaping.
        let len = rest[..rest.len().min(LONG_STRING)]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.pos += len + 1;
        Some(&rest[..len])
    }

    /// `0` or a digit string without a leading zero that fits in a u64, as serde reads it.
    fn unsigned(&mut self) -> Option<u64> {
        let rest = &self.bytes[self.pos..];
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = &rest[..len];
        if digits.is_empty() || (digits[0] == b'0' && len > 1) {
            return None;
        }
        // A fraction or exponent makes it a float, which serde would refuse for a u64.
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut value: u64 = 0;
        for &d in digits {
            value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.pos += len;
        Some(value)
    }

    /// Skips a string, an unsigned integer, `true`, `false` or `null`; refuses the rest.
    fn scalar(&mut self) -> Option<()> {
        match *self.bytes.get(self.pos)? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            // Other numbers (signs, fractions, exponents, beyond u64) go to serde.
            b'0'..=b'9' => self.unsigned().map(drop),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::codec::{Encoding, decode_batch_with_serde};
    use crate::wire::bench_data;

    fn scan(frame: &str) -> Option<Vec<ServerMsg>> {
        let mut out = Vec::new();
        messages(frame.as_bytes(), &mut out).map(|()| out)
    }

    /// The fast path's messages, as serde reads the same frame.
    fn same_as_serde(frame: &str) {
        let fast = scan(frame).unwrap_or_else(|| panic!("not scanned: {frame}"));
        let mut slow = Vec::new();
        decode_batch_with_serde(Encoding::Json, frame.as_bytes(), &mut slow).unwrap();
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{frame}");
    }

    #[test]
    fn benchmark_messages_read_as_serde_reads_them() {
        let data = bench_data(1_700_000_000_123_456, 42, 3, 100);
        same_as_serde(&format!(
            r#"{{"op":"message","channel":"bench","data":{data}}}"#
        ));
        same_as_serde(&format!(
            r#"{{"op":"message","channel":"hist:a","data":{data},"offset":7,"epoch":"00ab"}}"#
        ));
        // Batches, field order, whitespace, foreign payloads, extra scalar fields.
        same_as_serde(&format!(
            "{{\"data\":{data},\"op\":\"message\"}}\n{{\"op\":\"message\",\"data\":{{}}}}\n \
             {{ \"op\" : \"message\" , \"x\" : null , \"data\" : {{\"hello\":\"w\"}} }}"
        ));
        same_as_serde(r#"{"op":"message","channel":"c","data_b64":"aGk=","n":15,"t":true}"#);
        same_as_serde(r#"{"op":"message","data":{"ts":0,"seq":18446744073709551615,"s":1}}"#);
    }

    #[test]
    fn anything_unusual_goes_to_serde() {
        for frame in [
            r#"{"op":"ping"}"#,
            r#"{"op":"subscribed","id":2,"offset":0}"#,
            r#"{"op":"message","data":{"ts":1,"seq":2,"s":0,"pad":{"nested":1}}}"#,
            r#"{"op":"message","data":{"ts":1.5,"seq":2,"s":0}}"#,
            r#"{"op":"message","data":{"ts":01,"seq":2,"s":0}}"#,
            r#"{"op":"message","data":{"ts":1,"seq":-2,"s":0}}"#,
            r#"{"op":"message","data":{"ts":1,"seq":2,"s":4294967296}}"#,
            r#"{"op":"message","data":{"ts":1,"seq":18446744073709551616,"s":0}}"#,
            r#"{"op":"message","data":{"ts":1,"ts":2}}"#,
            r#"{"op":"message","data":"text"}"#,
            r#"{"op":"message","epoch":"a\"b"}"#,
            r#"{"op":"message","op":"message"}"#,
            r#"{"op":"ping","op":"message"}"#,
            r#"{"op":"message","n":-1.5e3}"#,
            "{\"op\":\"message\",\"channel\":\"a\tb\"}",
            r#"{"op":"message","id":3}"#,
            r#"{"channel":"c"}"#,
            r#"{"op":"message"} x"#,
            r#"{"op":"message""#,
            "[]",
        ] {
            assert!(scan(frame).is_none(), "{frame}");
        }
        let long_padding = bench_data(1, 2, 0, LONG_STRING + 100);
        assert!(scan(&format!(r#"{{"op":"message","data":{long_padding}}}"#)).is_none());
        let mut out = vec![ServerMsg::of(ServerOp::Ping)];
        assert!(messages(br#"{"op":"message"}{"op":"ping"}"#, &mut out).is_none());
        assert_eq!(out.len(), 1, "a refused frame leaves nothing behind");
    }

    #[test]
    fn an_empty_frame_is_no_messages() {
        assert_eq!(scan("").unwrap().len(), 0);
        assert_eq!(scan(" \n").unwrap().len(), 0);
    }
}
