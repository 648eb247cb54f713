//! Safe mapping of a request path to a file under the root, refusing anything that could leave it.
//!
//! Two independent fences: the request path is decoded and checked segment by segment (no dot
//! segments, no encoded separators, no NUL, no dotfiles), then the joined path is canonicalized
//! and must still lie under the canonical root, which catches symlinks pointing out of it.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;

/// Why a request path does not name a servable file.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path is malformed or tries to traverse: answer 400.
    #[error("malformed request path: {0}")]
    Malformed(&'static str),
    /// Nothing servable there (missing, hidden, outside the root, a directory): answer 404.
    #[error("no servable file at this path")]
    NotFound,
    /// The file exists but the streamer may not read it: answer 403.
    #[error("permission denied")]
    Forbidden,
    /// The filesystem failed: answer 500.
    #[error("filesystem error")]
    Io(#[source] io::Error),
}

impl From<io::Error> for PathError {
    /// Sorts filesystem errors into what the client may learn from them.
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => PathError::NotFound,
            io::ErrorKind::PermissionDenied => PathError::Forbidden,
            // A symlink loop or an over-long name is a path that leads nowhere, not a fault.
            _ if matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENAMETOOLONG)) => {
                PathError::NotFound
            }
            _ => PathError::Io(err),
        }
    }
}

/// Why the configured root cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// Nothing at that path.
    #[error("root {} does not exist", .0.display())]
    Missing(PathBuf),
    /// Something other than a directory at that path.
    #[error("root {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The path could not be inspected.
    #[error("root {}", path.display())]
    Io {
        /// The configured root.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
}

/// A request path that passed the syntactic checks, relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath(PathBuf);

impl RequestPath {
    /// Decodes and checks the path of a request URI (without its query).
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let rest = raw
            .strip_prefix('/')
            .ok_or(PathError::Malformed("path does not start with /"))?;
        // A trailing slash names a directory, and directories are never listed.
        if rest.is_empty() || rest.ends_with('/') {
            return Err(PathError::NotFound);
        }
        let mut relative = PathBuf::new();
        let mut hidden = false;
        // Empty segments (`a//b`) collapse, as nginx's merge_slashes does.
        for segment in rest.split('/').filter(|segment| !segment.is_empty()) {
            let segment = decode_segment(segment)?;
            // RFC 3986 §3.3: `.` and `..` are dot segments; a client must have removed them
            // (RFC 3986 §5.2.4), so one reaching us is a traversal attempt, encoded or not.
            if segment == "." || segment == ".." {
                return Err(PathError::Malformed("dot segment"));
            }
            // Keep checking after a hidden segment so traversal attempts still get their 400.
            hidden |= segment.starts_with('.');
            relative.push(segment);
        }
        // Dotfiles are private: VCS metadata, packagers' `.index.m3u8.tmp` before the rename.
        if hidden {
            return Err(PathError::NotFound);
        }
        Ok(Self(relative))
    }

    /// The path relative to the root; its extension decides the media type.
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The directory that holds it (the root for a top-level file) and its file name.
    pub fn split(&self) -> (RequestPath, String) {
        let dir = self.0.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = self
            .0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (RequestPath(dir), name)
    }
}

/// Percent-decodes one segment (RFC 3986 §2.1) and refuses bytes that would change its meaning.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    // RFC 3986 §2.1: `%` introduces exactly two hex digits; `percent_decode_str` would pass a
    // stray one through, and a path that is not a valid URI is a bad request.
    let well_formed = raw.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(PathError::Malformed("invalid percent-encoding"));
    }
    let segment = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::Malformed("path is not UTF-8"))?;
    // An encoded `/` would smuggle a separator past the split on `/`; `\` is a separator to
    // some tools and NUL truncates C strings. None belongs in a media file name.
    if segment.contains(['/', '\\', '\0']) {
        return Err(PathError::Malformed("encoded separator or NUL"));
    }
    Ok(segment.into_owned())
}

/// The directory being served, canonicalized once at startup.
#[derive(Debug, Clone)]
pub struct Root {
    canonical: PathBuf,
}

impl Root {
    /// Checks that `path` is an existing directory and remembers its canonical form.
    pub fn open(path: &Path) -> Result<Self, RootError> {
        let io_error = |source| RootError::Io {
            path: path.to_owned(),
            source,
        };
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(RootError::Missing(path.to_owned()))
            }
            Err(err) => return Err(io_error(err)),
        };
        if !metadata.is_dir() {
            return Err(RootError::NotADirectory(path.to_owned()));
        }
        let canonical = std::fs::canonicalize(path).map_err(io_error)?;
        Ok(Self { canonical })
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// Resolves a checked request path to the canonical path of what it names under the root.
    pub async fn resolve(&self, request: &RequestPath) -> Result<PathBuf, PathError> {
        let canonical = tokio::fs::canonicalize(self.canonical.join(request.as_path())).await?;
        // A symlink may point anywhere; only its target inside the root is servable.
        let inside = canonical
            .strip_prefix(&self.canonical)
            .map_err(|_| PathError::NotFound)?;
        // ... and the target must not be hidden either (`live.m3u8 -> .live.m3u8.tmp`).
        let hidden = inside.components().any(|component| {
            matches!(component, Component::Normal(name) if name.as_bytes().starts_with(b"."))
        });
        if hidden {
            return Err(PathError::NotFound);
        }
        // Between this check and the open a writer on the volume could swap a directory for a
        // symlink; such a writer can publish any content anyway, so we accept the window
        // rather than require openat2(RESOLVE_BENEATH).
        Ok(canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> PathBuf {
        match RequestPath::parse(raw) {
            Ok(path) => path.0,
            Err(err) => panic!("{raw}: {err}"),
        }
    }

    fn malformed(raw: &str) -> bool {
        matches!(RequestPath::parse(raw), Err(PathError::Malformed(_)))
    }

    fn not_found(raw: &str) -> bool {
        matches!(RequestPath::parse(raw), Err(PathError::NotFound))
    }

    #[test]
    fn decodes_segments() {
        assert_eq!(parsed("/live/index.m3u8"), Path::new("live/index.m3u8"));
        assert_eq!(parsed("/a%20b/c%C3%A9.ts"), Path::new("a b/cé.ts"));
        assert_eq!(parsed("//live//x.ts"), Path::new("live/x.ts"));
    }

    #[test]
    fn refuses_traversal_and_smuggled_bytes() {
        for raw in [
            "/../etc/passwd",
            "/a/./b",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/%2E%2e/x",
            "/..%2fsecret",
            "/a%2Fb",
            "/..%5csecret",
            "/a\\b",
            "/a%00.ts",
            "/%ff.ts",
            "/%zz.ts",
            "/%+1.ts",
            "/%2",
            "relative",
            "*",
            // A hidden segment does not hide a later traversal.
            "/.hidden/../x",
        ] {
            assert!(malformed(raw), "{raw}");
        }
    }

    #[test]
    fn hides_dotfiles_and_directories() {
        for raw in [
            "/.env",
            "/.hidden/file.ts",
            "/live/.index.m3u8.tmp",
            "/%2ehidden",
            "/",
            "/live/",
        ] {
            assert!(not_found(raw), "{raw}");
        }
    }
}
