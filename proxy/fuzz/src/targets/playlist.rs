//! The packager's HLS media playlist: the parser it resumes a channel with, and the writer.
//!
//! Properties: what the writer makes of a parsed playlist parses back to the same playlist,
//! and writing that again gives the same text (the first write may round durations to the
//! millisecond and raise the target duration); the segments' sequence numbers count up by one
//! from the media sequence, and none of their URIs is empty, a tag, or spans lines (a lone CR
//! is not a line end, RFC 8216 §4.1).

use std::path::Path;

use dime_packager::playlist::MediaPlaylist;

pub fn check(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let path = Path::new("index.m3u8");
    let Ok(first) = MediaPlaylist::parse(path, text) else {
        return;
    };
    for (i, s) in first.segments.iter().enumerate() {
        assert_eq!(s.sequence, first.media_sequence() + i as u64, "{s:?}");
        assert!(
            !s.uri.is_empty() && !s.uri.starts_with('#') && !s.uri.contains('\n'),
            "segment URI {:?}",
            s.uri
        );
    }
    let written = first.render();
    let second = match MediaPlaylist::parse(path, &written) {
        Ok(p) => p,
        Err(e) => panic!("the writer's playlist does not parse: {e}\n{written}"),
    };
    assert_eq!(second.segments.len(), first.segments.len(), "{written}");
    for (a, b) in first.segments.iter().zip(&second.segments) {
        assert_eq!(
            (&a.uri, a.sequence, a.discontinuity, &a.map),
            (&b.uri, b.sequence, b.discontinuity, &b.map),
            "{written}"
        );
    }
    assert_eq!(first.kind, second.kind);
    let rewritten = second.render();
    assert_eq!(rewritten, written, "writing a read playlist changes it");
    let third = MediaPlaylist::parse(path, &rewritten).expect("parsed once already");
    assert_eq!(third, second);
}
