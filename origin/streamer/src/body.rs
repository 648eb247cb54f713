//! Response bodies: a file region streamed in bounded chunks, or a short fixed text.

use std::io::{self, SeekFrom};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// The body type of every streamer response.
pub type Body = BoxBody<Bytes, io::Error>;

/// Bytes read from disk per chunk. hyper pulls the next chunk only once the socket has taken
/// the previous one, so a connection holds about one chunk however large the file.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// An empty body, for HEAD, 304 and the like.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A short fixed body, for health checks and error pages.
pub fn text(text: &'static str) -> Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

/// A short body made at run time, for error pages that say what was wrong.
pub fn owned_text(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// Streams `length` bytes of `file` starting at `start`.
pub async fn file_region(mut file: File, start: u64, length: u64) -> io::Result<Body> {
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    // `take` stops at the promised Content-Length even if the file grows while we read; if it
    // shrinks, the stream ends short and hyper aborts the connection rather than lie.
    let chunks = ReaderStream::with_capacity(file.take(length), CHUNK_SIZE);
    Ok(StreamBody::new(chunks.map_ok(Frame::data)).boxed())
}
