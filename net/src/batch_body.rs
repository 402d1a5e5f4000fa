//! The `batch-put` body on the wire, streamed at both ends.
//!
//! The bytes are exactly the postcard encoding of [`BatchPut`] (scope,
//! entries with their values as byte strings, TTL), so a plain postcard
//! encoder or decoder talks to these (tested below). What differs is where
//! the bytes live:
//!
//! - [`BatchPutBody`] sends the entries' own buffers as body chunks,
//!   between small encoded headers: a fused hand-off of 50 MB is not first
//!   copied into one encoded buffer (which grew by doubling).
//! - [`BatchPutDecoder`] decodes a body as it arrives and copies each
//!   value once, into a buffer of the size its header declares (checked
//!   against the value limit first): the receiver no longer collects the
//!   whole body and then copies every value out of it.
//!
//! Before, a fused hand-off of 50 MB took ~100 ms longer than a single
//! streamed `PUT` of the same bytes on the emulated testbed (`steps.csv` of
//! the tc paper run): three more copies of the value, each with its page
//! faults.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::peer::BatchPut;

/// Longest postcard varint of a `u64` (and of a `usize` on 64-bit targets).
const MAX_VARINT_BYTES: usize = 10;

/// Append `n` as a postcard varint (LEB128).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Append `s` as postcard encodes a string: its length, then its bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A `batch-put` body: the postcard encoding of a [`BatchPut`] as a queue of
/// chunks, each value its own chunk (shared, not copied). Its size is
/// exact, so the request carries a `content-length` (the receiver reserves
/// that much of its budget for bodies in flight, not its limit).
#[derive(Debug)]
pub struct BatchPutBody {
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl BatchPutBody {
    /// The body for `entries` of `scope` stored with `ttl_ms`. The values
    /// are shared with the caller's `Bytes` (a reference count, no copy).
    pub fn new(scope: &str, entries: &[(String, Bytes)], ttl_ms: Option<u64>) -> BatchPutBody {
        let mut chunks = VecDeque::with_capacity(entries.len() * 2 + 1);
        let mut head = Vec::with_capacity(scope.len() + 16);
        put_str(&mut head, scope);
        put_varint(&mut head, entries.len() as u64);
        for (key, value) in entries {
            put_str(&mut head, key);
            put_varint(&mut head, value.len() as u64);
            if !value.is_empty() {
                chunks.push_back(Bytes::from(std::mem::take(&mut head)));
                chunks.push_back(value.clone());
            }
        }
        match ttl_ms {
            None => head.push(0),
            Some(ttl) => {
                head.push(1);
                put_varint(&mut head, ttl);
            }
        }
        chunks.push_back(Bytes::from(head));
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        BatchPutBody { chunks, remaining }
    }

    /// The body's length in bytes (what is left to send).
    pub fn len(&self) -> u64 {
        self.remaining
    }

    /// Whether nothing is left to send.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl http_body::Body for BatchPutBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        match this.chunks.pop_front() {
            Some(chunk) => {
                this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Why a `batch-put` body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchBodyError {
    /// Not a postcard `BatchPut`: what was wrong, and where.
    #[error("body is not a postcard BatchPut: {0}")]
    Malformed(String),
    /// A value declares more bytes than the receiver stores in one value.
    #[error("value `{key}` is {len} bytes; the limit is {max}")]
    ValueTooLarge {
        /// The value's key.
        key: String,
        /// The length its header declares.
        len: u64,
        /// The receiver's limit.
        max: usize,
    },
}

/// The field a [`BatchPutDecoder`] is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ScopeLen,
    Scope,
    Count,
    KeyLen,
    Key,
    ValueLen,
    Value,
    TtlTag,
    Ttl,
    End,
}

/// Decodes a `batch-put` body chunk by chunk ([`BatchPutDecoder::feed`]),
/// accepting exactly what `postcard::from_bytes::<BatchPut>` accepts with
/// no trailing bytes, except values over `max_value` bytes (refused as soon
/// as their header is read, before anything is allocated for them).
#[derive(Debug)]
pub struct BatchPutDecoder {
    field: Field,
    /// Bytes of the varint or string being read.
    buf: Vec<u8>,
    /// Length of the string or value being read.
    want: usize,
    scope: Option<String>,
    left: u64,
    key: String,
    value: Vec<u8>,
    entries: Vec<(String, Vec<u8>)>,
    ttl_ms: Option<u64>,
    max_value: usize,
    offset: u64,
}

impl BatchPutDecoder {
    /// A decoder that refuses values over `max_value` bytes.
    pub fn new(max_value: usize) -> BatchPutDecoder {
        BatchPutDecoder {
            field: Field::ScopeLen,
            buf: Vec::new(),
            want: 0,
            scope: None,
            left: 0,
            key: String::new(),
            value: Vec::new(),
            entries: Vec::new(),
            ttl_ms: None,
            max_value,
            offset: 0,
        }
    }

    /// The batch's scope, once its bytes have arrived (it comes first, so a
    /// receiver can check who may write there before taking the values).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Take the next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), BatchBodyError> {
        while !chunk.is_empty() {
            let used = match self.field {
                Field::ScopeLen | Field::Count | Field::KeyLen | Field::ValueLen | Field::Ttl => {
                    let byte = chunk[0];
                    self.buf.push(byte);
                    if byte & 0x80 == 0 {
                        let n = self.varint()?;
                        self.buf.clear();
                        self.after_varint(n)?;
                    } else if self.buf.len() == MAX_VARINT_BYTES {
                        return Err(self.malformed("a varint runs past 10 bytes"));
                    }
                    1
                }
                Field::Scope | Field::Key => {
                    let take = (self.want - self.buf.len()).min(chunk.len());
                    self.buf.extend_from_slice(&chunk[..take]);
                    if self.buf.len() == self.want {
                        self.after_string()?;
                    }
                    take
                }
                Field::Value => {
                    let take = (self.want - self.value.len()).min(chunk.len());
                    self.value.extend_from_slice(&chunk[..take]);
                    if self.value.len() == self.want {
                        self.end_entry();
                    }
                    take
                }
                Field::TtlTag => {
                    match chunk[0] {
                        0 => {
                            self.ttl_ms = None;
                            self.field = Field::End;
                        }
                        1 => self.field = Field::Ttl,
                        tag => return Err(self.malformed(&format!("the TTL's option tag is {tag}, not 0 or 1"))),
                    }
                    1
                }
                Field::End => {
                    return Err(BatchBodyError::Malformed(format!(
                        "{} trailing bytes after a BatchPut (at least)",
                        chunk.len()
                    )));
                }
            };
            self.offset += used as u64;
            chunk = &chunk[used..];
        }
        Ok(())
    }

    /// The batch, once the body has ended.
    pub fn finish(self) -> Result<BatchPut, BatchBodyError> {
        if self.field != Field::End {
            return Err(BatchBodyError::Malformed(format!(
                "the body ends after {} bytes, inside the batch (reading its {:?})",
                self.offset, self.field
            )));
        }
        Ok(BatchPut { scope: self.scope.unwrap_or_default(), entries: self.entries, ttl_ms: self.ttl_ms })
    }

    fn malformed(&self, what: &str) -> BatchBodyError {
        BatchBodyError::Malformed(format!("{what} (byte {})", self.offset))
    }

    /// The varint in `buf` (complete: its last byte has no continuation
    /// bit), with postcard's rule for the tenth byte.
    fn varint(&self) -> Result<u64, BatchBodyError> {
        if self.buf.len() == MAX_VARINT_BYTES && self.buf[MAX_VARINT_BYTES - 1] > 1 {
            return Err(self.malformed("a varint overflows 64 bits"));
        }
        Ok(self.buf.iter().enumerate().fold(0u64, |n, (i, b)| n | (u64::from(b & 0x7f) << (7 * i))))
    }

    fn after_varint(&mut self, n: u64) -> Result<(), BatchBodyError> {
        match self.field {
            Field::ScopeLen | Field::KeyLen => {
                self.want = usize::try_from(n).map_err(|_| self.malformed("a string longer than memory"))?;
                self.field = if self.field == Field::ScopeLen { Field::Scope } else { Field::Key };
                if self.want == 0 {
                    self.after_string()?;
                }
            }
            Field::Count => {
                self.left = n;
                self.field = if n == 0 { Field::TtlTag } else { Field::KeyLen };
            }
            Field::ValueLen => {
                let len = usize::try_from(n).ok().filter(|len| *len <= self.max_value).ok_or_else(|| {
                    BatchBodyError::ValueTooLarge { key: self.key.clone(), len: n, max: self.max_value }
                })?;
                self.want = len;
                self.value = Vec::with_capacity(len);
                self.field = Field::Value;
                if len == 0 {
                    self.end_entry();
                }
            }
            Field::Ttl => {
                self.ttl_ms = Some(n);
                self.field = Field::End;
            }
            _ => return Err(self.malformed("internal: a varint outside a length")),
        }
        Ok(())
    }

    fn after_string(&mut self) -> Result<(), BatchBodyError> {
        let bytes = std::mem::take(&mut self.buf);
        let s = String::from_utf8(bytes).map_err(|_| self.malformed("a string is not UTF-8"))?;
        if self.field == Field::Scope {
            self.scope = Some(s);
            self.field = Field::Count;
        } else {
            self.key = s;
            self.field = Field::ValueLen;
        }
        Ok(())
    }

    fn end_entry(&mut self) {
        self.entries.push((std::mem::take(&mut self.key), std::mem::take(&mut self.value)));
        self.left -= 1;
        self.field = if self.left == 0 { Field::TtlTag } else { Field::KeyLen };
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Body as _;
    use proptest::prelude::*;

    use super::{BatchBodyError, BatchPutBody, BatchPutDecoder};
    use crate::peer::BatchPut;

    /// The body's chunks, in order.
    fn chunks(body: BatchPutBody) -> Vec<Bytes> {
        let mut body = std::pin::pin!(body);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let std::task::Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            out.extend(frame.into_data().ok());
        }
        out
    }

    /// `bytes` fed in pieces cut at `cuts` (positions modulo the length).
    fn decode_in_pieces(bytes: &[u8], cuts: &[usize], max_value: usize) -> Result<BatchPut, BatchBodyError> {
        let mut at: Vec<usize> = cuts.iter().map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() }).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut decoder = BatchPutDecoder::new(max_value);
        for w in at.windows(2) {
            decoder.feed(&bytes[w[0]..w[1]])?;
        }
        decoder.finish()
    }

    fn batch() -> impl Strategy<Value = BatchPut> {
        (
            ".{0,20}",
            proptest::collection::vec((".{0,12}", proptest::collection::vec(any::<u8>(), 0..300)), 0..6),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(scope, entries, ttl_ms)| BatchPut { scope, entries, ttl_ms })
    }

    proptest! {
        #[test]
        fn the_streamed_body_is_the_postcard_encoding_and_decodes_back_in_any_pieces(
            b in batch(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let plain = postcard::to_stdvec(&b).unwrap();
            let shared: Vec<(String, Bytes)> =
                b.entries.iter().map(|(k, v)| (k.clone(), Bytes::copy_from_slice(v))).collect();
            let body = BatchPutBody::new(&b.scope, &shared, b.ttl_ms);
            prop_assert_eq!(body.len(), plain.len() as u64);
            let streamed: Vec<u8> = chunks(body).concat();
            prop_assert_eq!(&streamed, &plain);
            prop_assert_eq!(decode_in_pieces(&plain, &cuts, 1 << 20).unwrap(), b);
        }

        #[test]
        fn the_decoder_accepts_what_postcard_accepts_and_nothing_else(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let plain = crate::http::decode_postcard::<BatchPut>(&bytes, "BatchPut");
            // No 64-byte body holds a value over 64 KiB: postcard refuses those too.
            let streamed = decode_in_pieces(&bytes, &cuts, 1 << 16);
            match (plain, streamed) {
                (Ok(p), Ok(s)) => prop_assert_eq!(p, s),
                (Err(_), Err(_)) => {}
                (p, s) => prop_assert!(false, "postcard {:?}, streamed {:?}", p, s),
            }
        }
    }

    #[test]
    fn a_value_over_the_limit_is_refused_at_its_header() {
        let b = BatchPut { scope: "s".into(), entries: vec![("big".into(), vec![7; 100])], ttl_ms: None };
        let bytes = postcard::to_stdvec(&b).unwrap();
        // The header alone (scope, count, key, length) is enough to refuse it.
        let mut decoder = BatchPutDecoder::new(99);
        let e = decoder.feed(&bytes[..8]).unwrap_err();
        assert_eq!(e, BatchBodyError::ValueTooLarge { key: "big".into(), len: 100, max: 99 });
        assert!(decode_in_pieces(&bytes, &[], 100).is_ok());
    }

    #[test]
    fn a_hostile_length_allocates_nothing() {
        // One entry whose value claims 2^62 bytes: refused, not allocated.
        let mut bytes = vec![1, b's', 1, 1, b'k'];
        bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        let e = decode_in_pieces(&bytes, &[], 1 << 20).unwrap_err();
        assert!(matches!(e, BatchBodyError::ValueTooLarge { len, .. } if len == 1 << 62), "{e:?}");
    }

    #[test]
    fn truncated_and_trailing_bodies_are_malformed() {
        let b = BatchPut { scope: "s".into(), entries: vec![("k".into(), vec![1, 2, 3])], ttl_ms: Some(5) };
        let bytes = postcard::to_stdvec(&b).unwrap();
        for cut in 0..bytes.len() {
            let e = decode_in_pieces(&bytes[..cut], &[], 1 << 20).unwrap_err();
            assert!(e.to_string().contains("ends after"), "{e}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = decode_in_pieces(&longer, &[], 1 << 20).unwrap_err();
        assert!(e.to_string().contains("trailing"), "{e}");
    }

    #[test]
    fn the_scope_is_known_before_the_values_arrive() {
        let b = BatchPut { scope: "wf".into(), entries: vec![("k".into(), vec![0; 1000])], ttl_ms: None };
        let bytes = postcard::to_stdvec(&b).unwrap();
        let mut decoder = BatchPutDecoder::new(1 << 20);
        decoder.feed(&bytes[..3]).unwrap();
        assert_eq!(decoder.scope(), Some("wf"));
    }
}
