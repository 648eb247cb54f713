//! A live channel's directory: resuming after a restart, the sliding playlist, and old segments' removal.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::playlist::{MediaPlaylist, Part, PlaylistError, PlaylistKind, Segment};

/// The playlist's file name in a channel directory.
pub const PLAYLIST: &str = "index.m3u8";
/// Segment files are `segment-<media sequence>.ts` (MPEG-TS) or `.m4s` (fMP4); the parts of a
/// low-latency segment `segment-<media sequence>.<index>.m4s`.
const PREFIX: &str = "segment-";
const SUFFIX: &str = ".ts";
const SUFFIXES: [&str; 2] = [".ts", ".m4s"];

/// A problem with the channel directory.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The directory or one of its files cannot be read, created or deleted.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Another packager is writing this channel (two writers would interleave sequences).
    #[error(
        "{dir} is already being packaged by another process (it holds {dir}/.lock): stop it \
         or pick another --channel"
    )]
    Busy {
        /// The channel directory.
        dir: PathBuf,
    },
    /// The existing playlist is unreadable, so the sequence cannot safely continue.
    #[error("{0}: fix or delete the playlist (the segment files alone are enough to continue)")]
    Unreadable(PlaylistError),
    /// The playlist cannot be rewritten (the directory vanished, the disk is full...).
    #[error("cannot update the playlist: {0}")]
    Write(PlaylistError),
}

/// The channel directory and the playlist being written into it.
#[derive(Debug)]
pub struct ChannelDir {
    dir: PathBuf,
    playlist: MediaPlaylist,
    window: usize,
    /// Every segment and part file known on disk, by the sequence number of its segment,
    /// oldest first.
    on_disk: VecDeque<(u64, PathBuf)>,
    /// fMP4 init sections on disk (`init-F.mp4`, F = the first sequence of their run), oldest first.
    inits: VecDeque<(u64, PathBuf)>,
    next_sequence: u64,
    /// Whether the next segment follows an earlier run's (a discontinuity).
    resumed: bool,
    /// Held open with an exclusive flock for as long as this run writes the channel.
    _lock: fs::File,
}

impl ChannelDir {
    /// Opens (creating it if needed) `dir` for a live window of `window` segments of about
    /// `segment` each, resuming after whatever an earlier run left there.
    ///
    /// A restart continues the media sequence after the highest number found in the playlist
    /// or among the segment files, and marks its first segment as a discontinuity: a segment
    /// URL is never reused for different bytes, which caches would otherwise keep serving.
    ///
    /// Only old segments with this run's `extension` (`.ts` or `.m4s`) stay listed: a
    /// playlist never mixes containers. With `part`, the playlist is a low-latency one whose
    /// segments come part by part ([`ChannelDir::add_part`]); the parts of an earlier run's
    /// unfinished segment count as that segment, so its number is not reused.
    pub fn open(
        dir: &Path,
        segment: Duration,
        window: usize,
        extension: &str,
        part: Option<Duration>,
    ) -> Result<Self, ChannelError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ChannelError::Io { path, error }
        };
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock(dir)?;
        let mut on_disk: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                Some((sequence_of(&name)?, entry.path()))
            })
            .collect();
        on_disk.sort();
        let mut inits: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                Some((init_sequence_of(&name)?, entry.path()))
            })
            .collect();
        inits.sort();

        let path = dir.join(PLAYLIST);
        let mut playlist = match part {
            Some(part) => MediaPlaylist::low_latency(segment, part),
            None => MediaPlaylist::new(PlaylistKind::Live, segment),
        };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let old = MediaPlaylist::parse(&path, &text).map_err(ChannelError::Unreadable)?;
                playlist.discontinuity_sequence = old.discontinuity_sequence;
                // Keep the old window's tail whose files are all still there, so players
                // watching through the restart keep a continuous playlist.
                let keep_from = old
                    .segments
                    .iter()
                    .rposition(|s| !s.uri.ends_with(extension) || !dir.join(&s.uri).is_file())
                    .map_or(0, |missing| missing + 1);
                let mut dropped = old.segments;
                let kept = dropped.split_off(keep_from);
                playlist.discontinuity_sequence +=
                    dropped.iter().filter(|s| s.discontinuity).count() as u64;
                if kept.is_empty() && !dropped.is_empty() {
                    // The restart's discontinuity has nothing listed before it: count it here.
                    playlist.discontinuity_sequence += 1;
                }
                playlist.segments = kept;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ChannelError::Io {
                    path,
                    error: source,
                })
            }
        }
        let last_listed = playlist.segments.last().map(|s| s.sequence);
        let last_file = on_disk.last().map(|(sequence, _)| *sequence);
        let next_sequence = last_listed.max(last_file).map_or(0, |last| last + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            resumed: !playlist.segments.is_empty(),
            playlist,
            window: window.max(1),
            on_disk: on_disk.into(),
            inits: inits.into(),
            next_sequence,
            _lock: lock,
        })
    }

    /// The channel directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The media sequence number the next segment file will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The current playlist.
    pub fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }

    /// Records a part of the segment in progress: lists it, with `next` (the URI of the part
    /// written after it) as the preload hint, and rewrites the playlist atomically. The part
    /// leaves the disk with its segment.
    pub fn add_part(
        &mut self,
        file: &Path,
        duration: Duration,
        independent: bool,
        next: String,
    ) -> Result<(), ChannelError> {
        let (uri, _) = self.keep(file);
        let part = Part {
            uri,
            duration,
            independent,
        };
        self.playlist.push_part(part, next);
        self.write_playlist()
    }

    /// `file`'s name and the sequence number of its segment (the next one for a name without
    /// one), recorded as on disk.
    fn keep(&mut self, file: &Path) -> (String, u64) {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let sequence = sequence_of(&name).unwrap_or(self.next_sequence);
        self.on_disk.push_back((sequence, file.to_path_buf()));
        (name, sequence)
    }

    /// Rewrites the playlist atomically.
    fn write_playlist(&self) -> Result<(), ChannelError> {
        self.playlist
            .write_atomic(&self.dir.join(PLAYLIST))
            .map_err(ChannelError::Write)
    }

    /// The stream has stopped, its last segment complete: a low-latency playlist's preload
    /// hint now names the first part a restart writes (a restart continues the sequence).
    pub fn hint_the_next_run(&mut self) -> Result<(), ChannelError> {
        let Some(ll) = &mut self.playlist.low_latency else {
            return Ok(());
        };
        ll.next_part = Some(format!("{PREFIX}{}.0.m4s", self.next_sequence));
        self.write_playlist()
    }

    /// Records a finished segment file: lists it, rewrites the playlist atomically, and
    /// deletes the files that left the window a window ago (about twice the playlist length
    /// stays on disk, for players a little behind and for caches still filling).
    pub fn add(
        &mut self,
        file: &Path,
        duration: Duration,
        program_date_time: SystemTime,
        map: Option<String>,
    ) -> Result<Segment, ChannelError> {
        let (name, sequence) = self.keep(file);
        let segment = Segment {
            sequence,
            uri: name,
            duration,
            program_date_time: Some(program_date_time),
            discontinuity: std::mem::take(&mut self.resumed),
            map,
        };
        self.next_sequence = sequence + 1;
        if let Some(map) = &segment.map {
            let first = init_sequence_of(map).unwrap_or(sequence);
            if !self.inits.iter().any(|(f, _)| *f == first) {
                self.inits.push_back((first, self.dir.join(map)));
            }
        }
        self.playlist.push(segment.clone(), self.window);
        self.write_playlist()?;
        let keep_from = self
            .playlist
            .media_sequence()
            .saturating_sub(self.window as u64);
        while let Some((sequence, path)) = self.on_disk.front() {
            if *sequence >= keep_from {
                break;
            }
            remove(path)?;
            self.on_disk.pop_front();
        }
        // An init section goes once no segment on disk needs it: the oldest segment needs
        // the newest init section that is not newer than itself.
        if let Some(&(oldest, _)) = self.on_disk.front() {
            while self.inits.len() > 1 && self.inits[1].0 <= oldest {
                if let Some((_, path)) = self.inits.pop_front() {
                    remove(&path)?;
                }
            }
        }
        Ok(segment)
    }
}

/// Deletes a file that may already be gone.
fn remove(path: &Path) -> Result<(), ChannelError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ChannelError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// The first sequence number in an init section's name (`init-F.mp4`), if it is one.
fn init_sequence_of(name: &str) -> Option<u64> {
    name.strip_prefix("init-")?
        .strip_suffix(".mp4")?
        .parse()
        .ok()
}

/// Takes the channel's lock file (`.lock`, hidden from the streamer), without waiting.
fn lock(dir: &Path) -> Result<fs::File, ChannelError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| ChannelError::Io {
            path: path.clone(),
            error,
        })?;
    // flock, not a PID file: the kernel releases it when the process dies, however it dies.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(ChannelError::Busy {
                dir: dir.to_path_buf(),
            });
        }
        return Err(ChannelError::Io { path, error });
    }
    Ok(file)
}

/// The splitmuxsink location for segments in `dir`: a printf pattern whose `%d` is the
/// fragment index (the media sequence number, with `start-index`); a `%` in `dir` is escaped.
pub(crate) fn segment_pattern(dir: &Path) -> String {
    let dir = dir.to_string_lossy().replace('%', "%%");
    format!("{dir}/{PREFIX}%d{SUFFIX}")
}

/// The media sequence number in a segment or part file name, if it is one.
fn sequence_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(PREFIX)?;
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))?;
    let number = match number.split_once('.') {
        // A part: `<sequence>.<index>`.
        Some((sequence, index)) if index.parse::<u32>().is_ok() => sequence,
        Some(_) => return None,
        None => number,
    };
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort_by_key(|n| (n.len(), n.clone()));
        names
    }

    /// Pretends the muxer wrote the next segment, and records it.
    fn write_next(channel: &mut ChannelDir) -> Segment {
        let file = channel
            .dir()
            .join(format!("segment-{}.ts", channel.next_sequence()));
        fs::write(&file, format!("bytes of {}", file.display())).unwrap();
        channel
            .add(&file, Duration::from_millis(1000), SystemTime::now(), None)
            .unwrap()
    }

    #[test]
    fn a_new_channel_starts_at_zero_and_keeps_two_windows_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut channel =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        assert_eq!(channel.next_sequence(), 0);
        for _ in 0..10 {
            write_next(&mut channel);
        }
        assert_eq!(channel.playlist().media_sequence(), 7);
        assert_eq!(
            names(dir.path()),
            [
                "index.m3u8",
                "segment-4.ts",
                "segment-5.ts",
                "segment-6.ts",
                "segment-7.ts",
                "segment-8.ts",
                "segment-9.ts"
            ]
        );
    }

    #[test]
    fn a_restart_continues_the_sequence_after_a_discontinuity() {
        let dir = tempfile::tempdir().unwrap();
        let mut first =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        for _ in 0..4 {
            write_next(&mut first);
        }
        drop(first);
        let mut second =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        assert_eq!(second.next_sequence(), 4);
        let segment = write_next(&mut second);
        assert_eq!(segment.sequence, 4);
        assert!(segment.discontinuity);
        assert!(!write_next(&mut second).discontinuity);
        let text = fs::read_to_string(dir.path().join(PLAYLIST)).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{text}");
        assert!(
            text.contains("segment-3.ts\n#EXT-X-DISCONTINUITY\n"),
            "{text}"
        );
        // Two more segments push the discontinuity out of the window: it is counted.
        write_next(&mut second);
        write_next(&mut second);
        let text = fs::read_to_string(dir.path().join(PLAYLIST)).unwrap();
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    }

    #[test]
    fn a_lost_playlist_still_never_reuses_a_segment_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("segment-41.ts"), "old").unwrap();
        fs::write(dir.path().join("segment-40.ts"), "old").unwrap();
        let mut channel =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        assert_eq!(channel.next_sequence(), 42);
        let segment = write_next(&mut channel);
        assert_eq!((segment.sequence, segment.discontinuity), (42, false));
    }

    #[test]
    fn listed_segments_whose_files_vanished_are_not_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut first =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 5, ".ts", None).unwrap();
        for _ in 0..4 {
            write_next(&mut first);
        }
        fs::remove_file(dir.path().join("segment-1.ts")).unwrap();
        drop(first);
        let mut second =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 5, ".ts", None).unwrap();
        write_next(&mut second);
        let listed: Vec<u64> = second
            .playlist()
            .segments
            .iter()
            .map(|s| s.sequence)
            .collect();
        assert_eq!(listed, [2, 3, 4]);
    }

    #[test]
    fn switching_containers_starts_a_fresh_window_but_keeps_counting() {
        let dir = tempfile::tempdir().unwrap();
        let mut first =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        for _ in 0..2 {
            write_next(&mut first);
        }
        drop(first);
        let second = ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".m4s", None).unwrap();
        assert_eq!(second.next_sequence(), 2);
        assert!(second.playlist().segments.is_empty());
        assert_eq!(second.playlist().discontinuity_sequence, 1);
    }

    #[test]
    fn an_init_section_goes_when_no_segment_on_disk_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |channel: &mut ChannelDir, init: &str| {
            let name = format!("segment-{}.m4s", channel.next_sequence());
            let file = channel.dir().join(&name);
            fs::write(&file, "moof").unwrap();
            fs::write(channel.dir().join(init), "moov").unwrap();
            let (d, now) = (Duration::from_secs(1), SystemTime::now());
            channel.add(&file, d, now, Some(init.into())).unwrap();
        };
        let mut first =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 2, ".m4s", None).unwrap();
        write(&mut first, "init-0.mp4");
        write(&mut first, "init-0.mp4");
        drop(first);
        let mut second =
            ChannelDir::open(dir.path(), Duration::from_secs(1), 2, ".m4s", None).unwrap();
        for _ in 0..3 {
            write(&mut second, "init-2.mp4");
            assert!(
                dir.path().join("init-0.mp4").exists(),
                "segment 0 or 1 is still on disk"
            );
        }
        // Segment 1 goes once 5 is written (window 2 listed, 2 more kept), init-0 with it.
        write(&mut second, "init-2.mp4");
        assert!(!dir.path().join("segment-1.m4s").exists());
        assert!(!dir.path().join("init-0.mp4").exists());
        assert!(dir.path().join("init-2.mp4").exists());
    }

    #[test]
    fn the_parts_of_an_unfinished_segment_keep_its_number_and_leave_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let (second, part) = (Duration::from_secs(1), Some(Duration::from_millis(500)));
        let mut first = ChannelDir::open(dir.path(), second, 2, ".m4s", part).unwrap();
        let write_part = |channel: &mut ChannelDir, sequence: u64, index: u32| {
            let file = channel
                .dir()
                .join(format!("segment-{sequence}.{index}.m4s"));
            fs::write(&file, "moof").unwrap();
            let next = format!("segment-{sequence}.{}.m4s", index + 1);
            let d = Duration::from_millis(500);
            channel.add_part(&file, d, index == 0, next).unwrap();
        };
        let write_segment = |channel: &mut ChannelDir, sequence: u64| {
            let file = channel.dir().join(format!("segment-{sequence}.m4s"));
            fs::write(&file, "moofmoof").unwrap();
            let (d, now) = (Duration::from_secs(1), SystemTime::now());
            channel
                .add(&file, d, now, Some("init-0.mp4".into()))
                .unwrap();
        };
        write_part(&mut first, 0, 0);
        write_part(&mut first, 0, 1);
        write_segment(&mut first, 0);
        // Stopped mid-segment: segment 1 has a part on disk and no file.
        write_part(&mut first, 1, 0);
        let text = fs::read_to_string(dir.path().join(PLAYLIST)).unwrap();
        assert!(text.ends_with("#EXT-X-PART:DURATION=0.50000,URI=\"segment-1.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-1.1.m4s\"\n"), "{text}");
        drop(first);

        let mut again = ChannelDir::open(dir.path(), second, 2, ".m4s", part).unwrap();
        assert_eq!(again.next_sequence(), 2, "segment-1.0.m4s keeps number 1");
        again.hint_the_next_run().unwrap();
        let text = fs::read_to_string(dir.path().join(PLAYLIST)).unwrap();
        assert!(
            text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"segment-2.0.m4s\"\n"),
            "{text}"
        );
        for sequence in 2..7 {
            write_part(&mut again, sequence, 0);
            write_segment(&mut again, sequence);
        }
        // Window 2 listed (5, 6) and 2 more kept (3, 4): segment 0 and the parts of 0 and 1 went.
        assert_eq!(
            names(dir.path()),
            [
                "index.m3u8",
                "segment-3.m4s",
                "segment-4.m4s",
                "segment-5.m4s",
                "segment-6.m4s",
                "segment-3.0.m4s",
                "segment-4.0.m4s",
                "segment-5.0.m4s",
                "segment-6.0.m4s",
            ]
        );
    }

    #[test]
    fn a_second_writer_for_the_same_channel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
        let err = ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap_err();
        assert!(matches!(err, ChannelError::Busy { .. }), "{err}");
        drop(first);
        ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap();
    }

    #[test]
    fn an_unreadable_playlist_stops_the_start_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(PLAYLIST),
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n",
        )
        .unwrap();
        let err = ChannelDir::open(dir.path(), Duration::from_secs(1), 3, ".ts", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: bad media sequence \"x\": fix or delete the playlist (the segment files \
                 alone are enough to continue)",
                dir.path().join(PLAYLIST).display()
            )
        );
    }
}
